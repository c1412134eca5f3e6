"""Checks that an exported Hugging Face folder is the flanx model: tokenization, logits and greedy generation.

The flanx side runs on CPU in float32 (whatever the training dtype was), before the folder is loaded, so host
memory never holds the flanx params and the torch model at once. Tolerances (max |logit difference|):
- same weights on both sides (fp32 export; or a bf16 export against flanx running the bf16-rounded weights read
  back from the folder): 1e-4 + 1e-5 · max|logit| — only float32 arithmetic order differs;
- bf16 export against the original float32 params: 5e-2 · max|logit| (bf16 keeps ~3 significant digits).
Greedy tokens must agree; a divergence is accepted only where the two candidates' logits are within the
tolerance (a tie that rounding may break either way), and is reported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np

from flanx.model.config import T5Config

PyTree = Any

STRICT_ATOL = 1e-4
STRICT_RTOL = 1e-5  # times max |logit|
BF16_RTOL = 5e-2  # times max |logit|
MAX_INPUT_TOKENS = 48
MAX_TARGET_TOKENS = 24
DECODE_TOKENS = 12
NUM_PROMPTS = 4


class VerificationError(RuntimeError):
  """The exported folder does not reproduce the flanx model (every problem is listed)."""


@dataclasses.dataclass
class Reference:
  """Probe batch and flanx's outputs on it."""
  encoder_tokens: np.ndarray  # int32 [b, input_length], EOS then 0s
  decoder_tokens: np.ndarray  # int32 [b, target_length], 0 then targets (teacher forcing)
  logits: np.ndarray  # float32 [b, target_length, vocab]
  greedy: np.ndarray  # int32 [b, DECODE_TOKENS]


def _pad_rows(rows: Sequence[Sequence[int]]) -> np.ndarray:
  out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def probe_batch(vocabulary: Any, config: T5Config) -> tuple[np.ndarray, np.ndarray]:
  """Encoder inputs (probe strings + EOS) and teacher-forced decoder inputs of different lengths (padding)."""
  from flanx.interop import hf_tokenizer  # pylint: disable=g-import-not-at-top
  texts = hf_tokenizer.probe_strings(vocabulary)
  eos = vocabulary.eos_id
  inputs = [list(vocabulary.encode(t))[:MAX_INPUT_TOKENS - 1] + [eos] for t in texts[:NUM_PROMPTS]]
  targets = [list(vocabulary.encode(t))[:MAX_TARGET_TOKENS - 1] + [eos] for t in texts[::-1][:NUM_PROMPTS]]
  too_big = [i for row in inputs + targets for i in row if i >= config.vocab_size]
  if too_big:
    raise VerificationError(f'the vocabulary produces ids up to {max(too_big)}, the model has only '
                            f'{config.vocab_size} rows')
  decoder = [[0] + row[:-1] for row in targets]
  return _pad_rows(inputs), _pad_rows(decoder)


@functools.lru_cache(maxsize=8)
def _compiled(config: T5Config):
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network as model_lib  # pylint: disable=g-import-not-at-top
  from flanx.inference import predict
  forward = jax.jit(lambda params, enc, dec: model_lib.Transformer(config).apply({'params': params}, enc, dec))
  greedy = predict.make_predict_fn(config, None, mode='greedy', max_decode_length=DECODE_TOKENS)
  return forward, greedy


def inference_config(config: T5Config) -> T5Config:
  """The config flanx verifies with: float32 compute, no dropout or remat (same parameters)."""
  return config.replace(dtype='float32', dropout_rate=0.0, remat='none')


def flanx_reference(params: PyTree, config: T5Config, encoder_tokens: np.ndarray,
                    decoder_tokens: np.ndarray) -> Reference:
  """flanx's float32 CPU logits and greedy tokens for the probe batch (params in `config`'s layout)."""
  import jax  # pylint: disable=g-import-not-at-top
  cpu = jax.devices('cpu')[0]
  forward, greedy = _compiled(inference_config(config))
  with jax.default_device(cpu), jax.default_matmul_precision('float32'):
    params = jax.device_put(params, cpu)
    logits = np.asarray(forward(params, encoder_tokens, decoder_tokens), np.float32)
    tokens, _ = greedy(params, encoder_tokens, 0)
  return Reference(encoder_tokens, decoder_tokens, logits, np.asarray(tokens, np.int32))


def _tolerance(reference_logits: np.ndarray) -> float:
  return STRICT_ATOL + STRICT_RTOL * float(np.abs(reference_logits).max())


def _until_eos(row: Sequence[int], eos: int = 1) -> list[int]:
  row = [int(t) for t in row]
  return row[:row.index(eos) + 1] if eos in row else row


def _hf_outputs(model: Any, ref: Reference) -> tuple[np.ndarray, np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top
  enc = torch.from_numpy(ref.encoder_tokens).long()
  mask = (enc != 0).long()
  with torch.no_grad():
    logits = model(input_ids=enc, attention_mask=mask,
                   decoder_input_ids=torch.from_numpy(ref.decoder_tokens).long()).logits.float().numpy()
    generated = model.generate(input_ids=enc, attention_mask=mask, max_new_tokens=DECODE_TOKENS, do_sample=False,
                               num_beams=1, **generate_cache_kwargs(model.config)).numpy()
  return logits, generated[:, 1:]  # drop the decoder start token


def generate_cache_kwargs(hf_config: Any) -> dict[str, Any]:
  """transformers 5.x sizes generate()'s default cache by the encoder depth: deeper decoders need their own."""
  if hf_config.num_decoder_layers == hf_config.num_layers:
    return {}
  from transformers.cache_utils import DynamicCache, EncoderDecoderCache  # pylint: disable=g-import-not-at-top
  return {'past_key_values': EncoderDecoderCache(DynamicCache(), DynamicCache())}


def _step_logits(model: Any, encoder_row: np.ndarray, prefix: Sequence[int]) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  enc = torch.from_numpy(encoder_row[None]).long()
  with torch.no_grad():
    out = model(input_ids=enc, attention_mask=(enc != 0).long(),
                decoder_input_ids=torch.tensor([[0] + list(prefix)]).long())
  return out.logits[0, -1].float().numpy()


def compare_generation(model: Any, ref: Reference, hf_tokens: np.ndarray, tol: float) -> tuple[list[str], list[str]]:
  """(problems, accepted ties) between flanx's and HF's greedy tokens."""
  problems, ties = [], []
  for i, (mine, theirs) in enumerate(zip(ref.greedy, hf_tokens)):
    a, b = _until_eos(mine), _until_eos(theirs)
    if a == b:
      continue
    p = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    if p >= min(len(a), len(b)):
      problems.append(f'greedy row {i}: flanx {a}, HF {b}')
      continue
    step = _step_logits(model, ref.encoder_tokens[i], a[:p])
    gap = abs(float(step[a[p]] - step[b[p]]))
    if gap <= tol:
      ties.append(f'row {i} step {p}: tokens {a[p]} vs {b[p]}, logit gap {gap:.2e}')
    else:
      problems.append(f'greedy row {i} differs at step {p}: flanx {a}, HF {b} (logit gap {gap:.2e} > {tol:.1e})')
  return problems, ties


def load_hf_model(folder: str) -> Any:
  """T5ForConditionalGeneration from `folder` in float32; fails on missing/unexpected/mismatched tensors."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from flanx.interop import endpoint_handler  # pylint: disable=g-import-not-at-top
  with endpoint_handler.untied_head_advice_silenced(folder):  # the advice the config already follows
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True, local_files_only=True)
  bad = {k: v for k, v in info.items() if v}
  if bad:
    raise VerificationError(f'transformers loaded {folder} with problems: {bad}')
  return model.eval()


def verify_folder(folder: str, vocabulary: Any, config: T5Config, reference: Reference,
                  original: Reference | None = None) -> dict[str, Any]:
  """Loads `folder` with transformers and compares it with flanx; returns a summary, raises VerificationError.

  `reference` holds flanx's outputs with exactly the exported weights; `original` (bf16 exports) those with
  the float32 weights before rounding, checked with the looser bf16 tolerance.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_tokenizer  # pylint: disable=g-import-not-at-top
  problems = []
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
  problems += [f'tokenization: {p}' for p in hf_tokenizer.compare_tokenization(vocabulary, tokenizer)]
  if len(tokenizer) > config.vocab_size:
    problems.append(f'tokenizer has {len(tokenizer)} tokens, the model only {config.vocab_size} rows')

  model_problems, summary, logits = compare_model(load_hf_model(folder), reference)
  problems += model_problems
  summary['tokenization_probes'] = len(hf_tokenizer.probe_strings(vocabulary))
  if original is not None:
    loose = BF16_RTOL * float(np.abs(original.logits).max())
    drift = float(np.abs(logits - original.logits).max())
    summary.update(bf16_drift=drift, bf16_tolerance=loose)
    if not drift <= loose:
      problems.append(f'bf16 logits differ from the float32 model by up to {drift:.3e} (tolerance {loose:.1e})')
  if problems:
    raise VerificationError(f'{folder} does not reproduce the flanx model:\n  ' + '\n  '.join(problems))
  return summary


def compare_model(model: Any, reference: Reference) -> tuple[list[str], dict[str, Any], np.ndarray]:
  """(problems, summary, logits) of a loaded torch model against flanx's reference: logits and greedy tokens."""
  logits, generated = _hf_outputs(model, reference)
  tol = _tolerance(reference.logits)
  diff = float(np.abs(logits - reference.logits).max())
  problems = [] if diff <= tol else [f'logits differ by up to {diff:.3e} (tolerance {tol:.1e})']
  generation_problems, ties = compare_generation(model, reference, generated, tol)
  summary = {'max_logit_diff': diff, 'tolerance': tol, 'logit_scale': float(np.abs(reference.logits).max()),
             'probe_rows': int(reference.encoder_tokens.shape[0]), 'decode_tokens': DECODE_TOKENS,
             'greedy_ties': ties}
  return problems + generation_problems, summary, logits
