"""One side of a decoding row: flanx's jitted KV-cache decoding, or transformers' `generate`.

Inputs: seeded random token ids filling every input position (no padding), the same on both sides. Both
sides emit exactly `new_tokens` tokens per sequence: flanx runs the same composition as
`flanx.inference.predict.make_predict_fn` (encode, `init_cache`, `make_step_fn`, `decoding.greedy` / `decoding.sample`)
with eos_id=-1, a token id that never occurs, so only the length stops it; transformers gets a
GenerationConfig with eos_token_id=None and max_new_tokens = min_new_tokens = new_tokens. Sampling is plain
temperature-1 sampling on both sides (no top-k/top-p). Each timed call includes encoding the inputs. In bf16,
flanx keeps fp32 params and computes in bf16; transformers runs the model cast to bf16 (its usual inference).
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from benchmarks import train_bench

MODES = ('greedy', 'sample')


def random_inputs(batch: int, length: int, vocab: int, seed: int) -> np.ndarray:
  """Full-length random token ids in [3, min(vocab, 32000)), no padding, no EOS."""
  return np.random.default_rng(seed).integers(3, min(vocab, 32000), (batch, length)).astype(np.int32)


def run_flanx(spec: dict) -> dict:
  """Times flanx decoding for every (mode, batch) of the spec; one compilation per pair."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import decoding, network as model_lib  # pylint: disable=g-import-not-at-top
  config = common.load_config(spec['model'], spec['dtype'])
  model = model_lib.Transformer(config)
  params = jax.jit(model_lib.init_params, static_argnums=0)(config, jax.random.key(spec.get('seed', 0)))
  new_tokens = spec['new_tokens']

  def make(mode, batch):
    def predict(params, tokens, key):
      encoded = model.apply({'params': params}, tokens, method=model_lib.Transformer.encode)
      cache = model_lib.init_cache(config, params, encoded, tokens, new_tokens)
      step_fn = model_lib.make_step_fn(config, params)
      if mode == 'greedy':
        return decoding.greedy(step_fn, cache, batch, new_tokens, eos_id=-1)
      return decoding.sample(step_fn, cache, batch, new_tokens, key, temperature=1.0, top_k=0, eos_id=-1)
    return jax.jit(predict)

  results = []
  for mode in spec['modes']:
    for batch in spec['batches']:
      predict = make(mode, batch)
      tokens = jax.device_put(random_inputs(batch, spec['inputs'], config.vocab_size, spec.get('seed', 0)))
      lengths = []

      def call(i, predict=predict, tokens=tokens, lengths=lengths):
        out = predict(params, tokens, jax.random.key(i))
        lengths.append(np.asarray(out.lengths))  # blocks

      timing = common.time_calls(call, spec['warmup'], spec['steps'])
      if not all((n == new_tokens).all() for n in lengths):
        raise AssertionError(f'flanx emitted {sorted({int(x) for n in lengths for x in n})} tokens, '
                             f'expected {new_tokens}')
      results.append({'mode': mode, 'batch': batch, **timing})
  return {'cases': results, **train_bench.jax_memory(), 'params': model_lib.param_count(config),
          'device': train_bench.jax_device()}


def run_hf(spec: dict) -> dict:
  """Times transformers' `generate` for every (mode, batch) of the spec."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(spec.get('seed', 0))
  config = common.load_config(spec['model'], spec['dtype'])
  device = train_bench.torch_device()
  dtype = torch.bfloat16 if config.dtype == 'bfloat16' else torch.float32
  model = train_bench.hf_model(config, device, dtype).eval()
  new_tokens = spec['new_tokens']
  results = []
  for mode in spec['modes']:
    generation = transformers.GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=mode == 'sample', num_beams=1,
        temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=0, decoder_start_token_id=0,
        use_cache=True)
    for batch in spec['batches']:
      inputs = torch.from_numpy(random_inputs(batch, spec['inputs'], config.vocab_size,
                                              spec.get('seed', 0))).long().to(device)
      lengths = []

      def call(i, inputs=inputs, lengths=lengths, generation=generation):
        torch.manual_seed(i)
        with torch.inference_mode():
          out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                               generation_config=generation)
        lengths.append(out.shape[1] - 1)  # minus the decoder start token
        if device == 'cuda':
          torch.cuda.synchronize()

      timing = common.time_calls(call, spec['warmup'], spec['steps'])
      if set(lengths) != {new_tokens}:
        raise AssertionError(f'HF generate emitted {sorted(set(lengths))} tokens, expected {new_tokens}')
      results.append({'mode': mode, 'batch': batch, **timing})
  return {'cases': results, **train_bench.torch_memory(device),
          'params': sum(p.numel() for p in model.parameters()), 'device': train_bench.torch_device_facts(device)}
