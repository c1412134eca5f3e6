"""The callables the interleaved A/B harness (benchmarks/ab.py) times: flanx and transformers' T5, same shapes.

Every builder returns blocking zero-argument callables. A callable may return a float: the seconds of the part
it measures (e.g. decode steps without the cache set-up), which the harness then uses instead of wall time.

Train step, flanx: `flanx.training.steps.make_train_step` (forward, backward, t5x Adafactor, z-loss 1e-4, summed
loss) on seqio-packed rows. HF: `T5ForConditionalGeneration` + `transformers.optimization.Adafactor` (as close
to t5x as it goes) on padded unpacked rows of the same shape; bf16 = torch.autocast over fp32 params, the
counterpart of flanx's fp32 params with bf16 activations. torch flushes denormals to zero, as XLA:CPU does
(common.flush_denormals_like_xla): unflushed, the HF train step runs 2-4x slower on some Intel Xeons.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np

LEARNING_RATE = 1e-3


# ---------------------------------------------------------------------------------------------------------------
# flanx

def flanx_train_state(config, seed: int = 0):
  """(tx, shardings, state) of a fresh flanx train state on a mesh over every local device."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor, partitioning, steps  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh()
  tx = adafactor.adafactor(learning_rate=LEARNING_RATE, param_axes=network.logical_axes(config))
  shardings = steps.make_shardings(config, tx, mesh, partitioning.axis_rules())
  params = steps.init_params(config, seed, shardings)
  state = steps.new_state(params, tx, shardings)
  return tx, shardings, state


def flanx_train(config, batches: list[dict], seed: int = 0) -> Callable[[], None]:
  """The full jitted flanx train step, cycling through `batches`."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.training import steps  # pylint: disable=g-import-not-at-top
  tx, shardings, state = flanx_train_state(config, seed)
  device_batches = [jax.device_put(b, shardings.batch) for b in batches]
  with shardings.mesh, steps.activation_rules(shardings):
    step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
  box = {'state': state, 'i': 0}

  def call():
    with shardings.mesh, steps.activation_rules(shardings):
      box['state'], metrics = step(box['state'], device_batches[box['i'] % len(device_batches)])
    box['i'] += 1
    loss = float(metrics['loss'])  # blocks
    if not np.isfinite(loss):
      raise FloatingPointError(f'flanx train step: loss {loss}')

  return call


def flanx_parts(config, batch: dict, seed: int = 0, network=None, losses=None) -> dict[str, Callable[[], None]]:
  """Separately jitted parts of the train step on one batch: forward+loss, forward+loss+backward, the
  Adafactor update alone, and the loss alone (logits -> loss and d loss / d logits).

  `network` / `losses` default to flanx's modules; pass other versions of them (same API) to A/B a change.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  if network is None:
    from flanx.model import network  # pylint: disable=g-import-not-at-top,redefined-outer-name
  if losses is None:
    from flanx.training import losses  # pylint: disable=g-import-not-at-top,redefined-outer-name
  from flanx.training import adafactor  # pylint: disable=g-import-not-at-top
  model = network.Transformer(config)
  params = jax.jit(network.init_params, static_argnums=0)(config, jax.random.key(seed))
  tx = adafactor.adafactor(learning_rate=LEARNING_RATE, param_axes=network.logical_axes(config))
  opt_state = jax.jit(tx.init)(params)
  features = ('encoder_input_tokens', 'decoder_input_tokens', 'encoder_segment_ids', 'decoder_segment_ids',
              'encoder_positions', 'decoder_positions')
  batch = jax.device_put(batch)

  def loss_fn(params, batch):
    logits = model.apply({'params': params}, **{k: batch[k] for k in features if k in batch})
    loss, aux = losses.token_loss(logits, batch['decoder_target_tokens'], batch.get('decoder_loss_weights'))
    return loss, aux

  forward = jax.jit(loss_fn)
  grad = jax.jit(jax.grad(loss_fn, has_aux=True))

  def update(grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  update = jax.jit(update)
  grads, _ = grad(params, batch)
  shape = batch['decoder_target_tokens'].shape + (config.vocab_size,)
  logits = jax.random.normal(jax.random.key(1), shape, jnp.float32)
  loss_only = jax.jit(jax.value_and_grad(
      lambda x, t, w: losses.token_loss(x, t, w)[0]))
  block = jax.block_until_ready
  return {
      'forward': lambda: block(forward(params, batch)),
      'forward+backward': lambda: block(grad(params, batch)),
      'optimizer': lambda: block(update(grads, opt_state, params)),
      'loss': lambda: block(loss_only(logits, batch['decoder_target_tokens'], batch.get('decoder_loss_weights'))),
  }


def flanx_decode(config, tokens: np.ndarray, new_tokens: int, mode: str, seed: int = 0, network=None):
  """Jitted encode + init_cache + greedy/sample decoding of exactly `new_tokens` tokens (eos never occurs)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import decoding  # pylint: disable=g-import-not-at-top
  if network is None:
    from flanx.model import network  # pylint: disable=g-import-not-at-top,redefined-outer-name
  model = network.Transformer(config)
  params = jax.jit(network.init_params, static_argnums=0)(config, jax.random.key(seed))
  batch = tokens.shape[0]

  def predict(params, tokens, key):
    encoded = model.apply({'params': params}, tokens, method=network.Transformer.encode)
    cache = network.init_cache(config, params, encoded, tokens, new_tokens)
    step_fn = network.make_step_fn(config, params)
    if mode == 'greedy':
      return decoding.greedy(step_fn, cache, batch, new_tokens, eos_id=-1)
    return decoding.sample(step_fn, cache, batch, new_tokens, key, temperature=1.0, top_k=0, eos_id=-1)

  predict = jax.jit(predict)
  tokens = jax.device_put(tokens)
  box = {'i': 0}

  def call():
    out = predict(params, tokens, jax.random.key(box['i']))
    box['i'] += 1
    lengths = np.asarray(out.lengths)
    if not (lengths == new_tokens).all():
      raise AssertionError(f'flanx emitted {sorted(set(lengths.tolist()))} tokens, expected {new_tokens}')

  return call


def flanx_decode_steps(config, tokens: np.ndarray, steps: int, max_len: int = 128, seed: int = 0, network=None):
  """`steps` single-token decoder calls on a fresh cache (built untimed); returns seconds per step."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  if network is None:
    from flanx.model import network  # pylint: disable=g-import-not-at-top,redefined-outer-name
  model = network.Transformer(config)
  params = jax.jit(network.init_params, static_argnums=0)(config, jax.random.key(seed))
  tokens = jax.device_put(tokens)

  @jax.jit
  def make_cache(params, tokens):
    encoded = model.apply({'params': params}, tokens, method=network.Transformer.encode)
    return network.init_cache(config, params, encoded, tokens, max_len)

  step = jax.jit(lambda params, t, cache: network.make_step_fn(config, params)(t, cache), donate_argnums=2)
  current = jnp.zeros((tokens.shape[0], 1), jnp.int32)

  def call():
    cache = jax.block_until_ready(make_cache(params, tokens))
    start = time.perf_counter()
    for _ in range(steps):
      logits, cache = step(params, current, cache)
    jax.block_until_ready(logits)
    return (time.perf_counter() - start) / steps

  return call


# ---------------------------------------------------------------------------------------------------------------
# transformers (torch)

def hf_model(config, dtype=None):
  """Random-init transformers T5 of `config` (own head weight when flanx's head is untied), on the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
  common.flush_denormals_like_xla()  # as XLA does (before torch's first op starts its threads)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_format.hf_config_dict(config)))
  if not config.tie_embeddings:  # transformers 5.x ties lm_head to shared in memory; give it its own weight
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  return model.to(dtype=dtype)


def _hf_batch(b: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).long()
  labels = t(b['decoder_target_tokens'])
  labels[t(b['decoder_loss_weights']) == 0] = -100
  return {'input_ids': t(b['encoder_input_tokens']), 'attention_mask': t(b['encoder_input_tokens'] != 0),
          'decoder_input_ids': t(b['decoder_input_tokens']), 'labels': labels}


def hf_train(config, batches: list[dict], seed: int = 0, parts: dict | None = None) -> Callable[[], None]:
  """HF forward + backward + Adafactor on `batches` (autocast bf16 when config.dtype is bfloat16).

  With `parts` (a dict), appends each call's forward / backward / optimizer seconds to parts[name].
  """
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = hf_model(config).train()
  optimizer = Adafactor(model.parameters(), lr=LEARNING_RATE, eps=(1e-30, 1e-3), clip_threshold=1.0,
                        decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True,
                        relative_step=False, warmup_init=False)
  autocast = (lambda: torch.autocast(device_type='cpu', dtype=torch.bfloat16)) if config.dtype == 'bfloat16' \
      else contextlib.nullcontext
  torch_batches = [_hf_batch(b) for b in batches]
  box = {'i': 0}

  def call():
    t0 = time.perf_counter()
    with autocast():
      loss = model(**torch_batches[box['i'] % len(torch_batches)]).loss
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    box['i'] += 1
    if parts is not None:
      for name, seconds in (('forward', t1 - t0), ('backward', t2 - t1), ('optimizer', t3 - t2)):
        parts.setdefault(name, []).append(seconds)
    if not np.isfinite(float(loss.detach())):
      raise FloatingPointError('HF train step: non-finite loss')

  return call


def hf_loss(config, batch: dict) -> Callable[[], None]:
  """HF's loss part alone: cross-entropy of fixed [b, l, V] logits and its gradient (autocast as training)."""
  import torch  # pylint: disable=g-import-not-at-top
  labels = _hf_batch(batch)['labels']
  logits = torch.randn(labels.shape + (config.vocab_size,), requires_grad=True)

  def call():
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
    loss.backward()
    logits.grad = None

  return call


def hf_generate(config, tokens: np.ndarray, new_tokens: int, mode: str) -> Callable[[], None]:
  """transformers `generate` of exactly `new_tokens` tokens (no EOS), greedy or temperature-1 sampling."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model = hf_model(config, torch.bfloat16 if config.dtype == 'bfloat16' else torch.float32).eval()
  generation = transformers.GenerationConfig(
      max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=mode == 'sample', num_beams=1,
      temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=0, decoder_start_token_id=0,
      use_cache=True)
  inputs = torch.from_numpy(tokens).long()

  def call():
    with torch.inference_mode():
      out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), generation_config=generation)
    if out.shape[1] - 1 != new_tokens:
      raise AssertionError(f'HF generate emitted {out.shape[1] - 1} tokens, expected {new_tokens}')

  return call


def hf_decode_steps(config, tokens: np.ndarray, steps: int) -> Callable[[], float]:
  """`steps` single-token decoder calls with HF's KV cache (encoder and first step untimed); s per step."""
  import torch  # pylint: disable=g-import-not-at-top
  model = hf_model(config, torch.bfloat16 if config.dtype == 'bfloat16' else torch.float32).eval()
  inputs = torch.from_numpy(tokens).long()
  current = torch.zeros((tokens.shape[0], 1), dtype=torch.long)

  def call():
    with torch.inference_mode():
      encoded = model.get_encoder()(input_ids=inputs)
      out = model(encoder_outputs=encoded, decoder_input_ids=current, use_cache=True)  # builds cross K/V
      past = out.past_key_values
      start = time.perf_counter()
      for _ in range(steps):
        out = model(encoder_outputs=encoded, decoder_input_ids=current, past_key_values=past, use_cache=True)
        past = out.past_key_values
      return (time.perf_counter() - start) / steps

  return call
