"""Batched generation with a trained model: greedy, sampling or beam search, jitted with the KV cache."""

from __future__ import annotations

from typing import Any, Callable

import gin
import jax
import numpy as np

from flanx.model import decoding, network as model_lib
from flanx.model.config import EOS_ID, PAD_ID, T5Config

PyTree = Any


@gin.configurable
def decode_options(mode: str = 'greedy', max_decode_length: int = 128, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 0.0, beam_size: int = 4, alpha: float = 0.6, seed: int = 0) -> dict:
  """Decoding settings, bindable from gin (e.g. decode_options.mode = 'beam')."""
  if mode not in ('greedy', 'sample', 'beam'):
    raise ValueError(f"decode_options.mode={mode!r}: expected 'greedy', 'sample' or 'beam'")
  return dict(mode=mode, max_decode_length=max_decode_length, temperature=temperature, top_k=top_k, top_p=top_p,
              beam_size=beam_size, alpha=alpha, seed=seed)


def make_predict_fn(config: T5Config, out_sharding: Any = None, **options) -> Callable:
  """`predict(params, encoder_input_tokens, step) -> (tokens [b, max_len], scores [b])`, jitted.

  `step` (an int) is folded into the sampling key so successive batches draw differently but reproducibly.
  """
  opts = decode_options(**options)
  model = model_lib.Transformer(config)
  max_len = opts['max_decode_length']

  def predict(params: PyTree, tokens: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    encoded = model.apply({'params': params}, tokens, method=model_lib.Transformer.encode)
    cache = model_lib.init_cache(config, params, encoded, tokens, max_len)
    step_fn = model_lib.make_step_fn(config, params)
    batch = tokens.shape[0]
    if opts['mode'] == 'greedy':
      result = decoding.greedy(step_fn, cache, batch, max_len)
    elif opts['mode'] == 'sample':
      key = jax.random.fold_in(jax.random.key(opts['seed']), step)
      result = decoding.sample(step_fn, cache, batch, max_len, key, temperature=opts['temperature'],
                               top_k=opts['top_k'], top_p=opts['top_p'])
    else:
      result = decoding.beam_search(step_fn, cache, batch, opts['beam_size'], max_len, alpha=opts['alpha'])
    return result.tokens, result.scores

  return jax.jit(predict, out_shardings=out_sharding)


def trim_at_eos(tokens: np.ndarray, eos_id: int = EOS_ID) -> list[list[int]]:
  """Token lists cut before the first EOS (and without padding)."""
  out = []
  for row in np.asarray(tokens).tolist():
    row = row[:row.index(eos_id)] if eos_id in row else row
    out.append([t for t in row if t != PAD_ID])
  return out
