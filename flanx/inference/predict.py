"""Batched generation with a trained model: greedy, sampling or beam search, jitted with the KV cache.

Options (gin `decode_options.*`) follow t5x's decoders (flanx.model.decoding): beam search admits finished beams
by t5x's rule, sampling uses t5x's top_k / top_p rules and defaults, several decodes per input
(`num_decodes` samples, or all `beam_size` beams) come back best first with their scores when
`return_all_decodes` is set, and a decoder prompt (a given target prefix) can be continued.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import gin
import jax
import numpy as np

from flanx.model import decoding, network as model_lib
from flanx.model.config import EOS_ID, PAD_ID, T5Config

PyTree = Any
MODES = ('greedy', 'sample', 'beam')


@gin.configurable
def decode_options(mode: str = 'greedy', max_decode_length: int = 128, temperature: float = 1.0,
                   top_k: Optional[int] = None, top_p: float = 0.0, beam_size: int = 4, alpha: float = 0.6,
                   seed: int = 0, num_decodes: int = 1, max_decode_steps: Optional[int] = None,
                   beam_finish_rule: str = 't5x', rescale_log_probs: bool = True,
                   return_all_decodes: bool = False) -> dict:
  """Decoding settings, bindable from gin (e.g. decode_options.mode = 'beam').

  mode: 'greedy' (argmax; scores are model log-probs), 'sample' (t5x's temperature_sample) or 'beam'
    (t5x's beam_search with beam_size beams and brevity penalty alpha).
  top_k / top_p (sampling): at most one may be non-zero, as in t5x. top_k=None means t5x's default, 1 (which
    is greedy), unless top_p is set, then 0.
  num_decodes: samples per input (sampling). Beam search returns its beam_size beams (t5x's num_decodes).
  max_decode_steps: at most this many tokens after the decoder prompt (t5x's max_decode_steps).
  beam_finish_rule: 't5x' (EOS-ending candidates among the top 2 * beam_size finish) or 'hf' (top beam_size).
  rescale_log_probs: sampling scores under the sampling distribution (t5x's default) or the model.
  return_all_decodes: predict returns every decode [b, n, length] and score [b, n], best first.
  """
  if mode not in MODES:
    raise ValueError(f'decode_options.mode={mode!r}: expected one of {MODES}')
  if top_k is None:
    top_k = 0 if top_p else 1
  if top_k and top_p:
    raise ValueError(f'decode_options: top_k={top_k} and top_p={top_p}: at most one may be non-zero (as in t5x); '
                     'set decode_options.top_k = 0 to sample from the top_p nucleus')
  if num_decodes < 1 or (mode != 'sample' and num_decodes != 1):
    raise ValueError(f'decode_options.num_decodes={num_decodes}: must be >= 1, and 1 unless mode is "sample" '
                     '(beam search returns its beam_size beams)')
  if beam_finish_rule not in decoding.FINISH_RULES:
    raise ValueError(f'decode_options.beam_finish_rule={beam_finish_rule!r}: expected one of '
                     f'{decoding.FINISH_RULES}')
  if max_decode_steps is not None and not 0 < max_decode_steps <= max_decode_length:
    raise ValueError(f'decode_options.max_decode_steps={max_decode_steps}: expected 1..max_decode_length '
                     f'({max_decode_length}) or None')
  return dict(mode=mode, max_decode_length=max_decode_length, temperature=temperature, top_k=top_k, top_p=top_p,
              beam_size=beam_size, alpha=alpha, seed=seed, num_decodes=num_decodes,
              max_decode_steps=max_decode_steps, beam_finish_rule=beam_finish_rule,
              rescale_log_probs=rescale_log_probs, return_all_decodes=return_all_decodes)


def decodes_per_input(opts: dict) -> int:
  """How many decodes per input `return_all_decodes` returns under these options."""
  return {'greedy': 1, 'sample': opts['num_decodes'], 'beam': opts['beam_size']}[opts['mode']]


def make_predict_fn(config: T5Config, out_sharding: Any = None, **options) -> Callable:
  """`predict(params, encoder_input_tokens, step, prompt=None) -> (tokens, scores)`, jitted.

  tokens [b, max_decode_length] and scores [b] are the best decode; with return_all_decodes, every decode
  [b, n, max_decode_length] and [b, n], best first. `prompt` (int [b, <= max_decode_length], 0-padded) is a
  target prefix to continue: it leads the output and scores nothing. `step` (an int) is folded into the
  sampling key (key = fold_in(key(seed), step)) so successive batches draw differently but reproducibly; t5x
  instead splits one running key per batch, so flanx's samples are not t5x's bit for bit.
  """
  opts = decode_options(**options)
  model = model_lib.Transformer(config)
  max_len = opts['max_decode_length']

  def predict(params: PyTree, tokens: jax.Array, step: jax.Array,
              prompt: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    encoded = model.apply({'params': params}, tokens, method=model_lib.Transformer.encode)
    cache = model_lib.init_cache(config, params, encoded, tokens, max_len)
    step_fn = model_lib.make_step_fn(config, params)
    batch = tokens.shape[0]
    common = dict(prompt=prompt, max_decode_steps=opts['max_decode_steps'])
    if opts['mode'] == 'greedy':
      result = decoding.greedy(step_fn, cache, batch, max_len, PAD_ID, EOS_ID, **common)
    elif opts['mode'] == 'sample':
      key = jax.random.fold_in(jax.random.key(opts['seed']), step)
      result = decoding.sample(step_fn, cache, batch, max_len, key, temperature=opts['temperature'],
                               top_k=opts['top_k'], top_p=opts['top_p'], start_id=PAD_ID, eos_id=EOS_ID,
                               rescale_log_probs=opts['rescale_log_probs'], num_decodes=opts['num_decodes'],
                               **common)
    else:
      result = decoding.beam_search(step_fn, cache, batch, opts['beam_size'], max_len, alpha=opts['alpha'],
                                    eos_id=EOS_ID, start_id=PAD_ID, finish_rule=opts['beam_finish_rule'],
                                    **common)
    if opts['return_all_decodes']:
      return result.all_tokens, result.all_scores
    return result.tokens, result.scores

  return jax.jit(predict, out_shardings=out_sharding)


def trim_at_eos(tokens: np.ndarray, eos_id: int = EOS_ID) -> list[list[int]]:
  """Token lists cut before the first EOS (and without padding); works on [b, len] or [b, n, len] (nested)."""
  tokens = np.asarray(tokens)
  if tokens.ndim == 3:
    return [trim_at_eos(row, eos_id) for row in tokens]
  out = []
  for row in tokens.tolist():
    row = row[:row.index(eos_id)] if eos_id in row else row
    out.append([t for t in row if t != PAD_ID])
  return out
