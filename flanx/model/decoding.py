"""Model-agnostic batched decoding (greedy, sampling, beam search) in lax.while_loop, jit-able, t5x semantics.

Contract with the model: `step_fn(tokens int32[b, 1], cache) -> (logits float[b, vocab], cache)` returns the
next-token logits after feeding `tokens` at the cache's current position. Cache leaves with ndim == 0 (e.g. a
shared decode index) are shared by all sequences and passed through untouched; every other leaf has the batch
axis first (several decodes per input tile it; beam search reorders it). Decoding starts by feeding `start_id`
(T5: pad 0).

Outputs are `max_decode_len` wide: an optional decoder prompt (a given target prefix) first, then the generated
tokens, EOS included, 0 after it. Every function returns a DecodeResult whose `all_tokens` / `all_scores` hold
the `num_decodes` decodes per input BEST FIRST (t5x returns them in increasing score, best last); `tokens` /
`scores` are the best one. Sizes (batch, beam, max_decode_len, top_k, num_decodes) are Python ints; wrap calls
in jax.jit with step_fn closed over.

Prompts follow t5x's teacher forcing: prompt tokens are fed one step at a time, contribute nothing to the
score, and count towards the length (and so towards beam search's brevity penalty), exactly as t5x's
`temperature_sample` / `beam_search` do when the model cannot prefill its cache (t5x's T5 example network).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any
StepFn = Callable[[Array, PyTree], tuple[Array, PyTree]]

NEG_INF = -1.0e7  # t5x's finite "impossible" log-prob: sums and differences never produce NaN
MIN_TEMPERATURE = 1e-4  # at or below this, sampling is argmax (as in t5x)
FINISH_RULES = ('t5x', 'hf')


class DecodeResult(NamedTuple):
  tokens: Array      # int32 [b, max_decode_len]: the best decode (prompt included)
  scores: Array      # float32 [b]: its score
  lengths: Array     # int32 [b]: its tokens up to and including EOS (prompt included)
  all_tokens: Array  # int32 [b, num_decodes, max_decode_len], best first
  all_scores: Array  # float32 [b, num_decodes], best first (descending)


BeamResult = DecodeResult  # the name earlier flanx versions used for beam search results


def _map_batched(fn: Callable[[Array], Array], cache: PyTree) -> PyTree:
  """Applies fn to every cache leaf with a batch axis; scalars (shared state) pass through."""
  return jax.tree.map(lambda x: fn(x) if jnp.ndim(x) > 0 else x, cache)


def _expand(x: Array, n: int) -> Array:
  """[b, ...] -> [b * n, ...], each row repeated n times in place (t5x's flat_batch_beam_expand)."""
  return jnp.repeat(x, n, axis=0)


def _take_log_prob(log_probs: Array, tokens: Array) -> Array:
  return jnp.take_along_axis(log_probs, tokens[:, None], axis=-1)[:, 0]


def _check_prompt(prompt: Optional[Array], batch_size: int, max_decode_len: int) -> Array:
  """The prompt as int32 [b, max_decode_len] (0 = no forced token); zeros when there is none."""
  if prompt is None:
    return jnp.zeros((batch_size, max_decode_len), jnp.int32)
  if prompt.ndim != 2 or prompt.shape[0] != batch_size or prompt.shape[1] > max_decode_len:
    raise ValueError(f'decoder prompt: expected int [batch={batch_size}, <= max_decode_len={max_decode_len}], '
                     f'got shape {prompt.shape}')
  return jnp.pad(prompt.astype(jnp.int32), ((0, 0), (0, max_decode_len - prompt.shape[1])))


def _row_limits(prompt: Array, max_decode_len: int, max_decode_steps: Optional[int]) -> Array:
  """Per row, how many output positions may be filled: prompt length + max_decode_steps, capped (t5x)."""
  if max_decode_steps is None:
    return jnp.full((prompt.shape[0],), max_decode_len, jnp.int32)
  if not isinstance(max_decode_steps, jax.Array) and not 0 < max_decode_steps <= max_decode_len:
    raise ValueError(f'max_decode_steps={max_decode_steps}: expected 1..max_decode_len={max_decode_len}')
  return jnp.minimum(max_decode_len, jnp.sum(prompt != 0, axis=1) + max_decode_steps).astype(jnp.int32)


def _lengths(tokens: Array, eos_id: int) -> Array:
  """Tokens up to and including the first EOS; without EOS, up to the last non-pad token."""
  width = tokens.shape[-1]
  positions = jnp.arange(width)
  first_eos = jnp.min(jnp.where(tokens == eos_id, positions, width), axis=-1)
  last_token = jnp.max(jnp.where(tokens != 0, positions + 1, 0), axis=-1)
  return jnp.where(first_eos < width, first_eos + 1, last_token).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------------------
# Greedy decoding and temperature sampling (t5x's temperature_sample).

def topk_mask(logits: Array, k: int) -> Array:
  """Keeps the k largest logits per row (ties with the k-th kept, as t5x), the rest NEG_INF."""
  if k >= logits.shape[-1]:
    return logits
  # The k-th largest is the smallest of the top k (taking [..., -1:] instead makes XLA sort the whole row).
  kth = jnp.min(jax.lax.top_k(logits, k)[0], axis=-1, keepdims=True)
  return jnp.where(logits >= kth, logits, NEG_INF)


def topp_mask(logits: Array, p: Union[float, Array]) -> Array:
  """Keeps the smallest most-likely set whose probability reaches p (ties kept, as t5x), the rest NEG_INF.

  p <= 0 keeps everything (t5x with a traced topp of 0); so does a p no prefix reaches through rounding.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  ordered = -jnp.sort(-probs, axis=-1)
  mass = jnp.cumsum(ordered, axis=-1)
  reached = mass >= p
  first = jnp.argmax(reached, axis=-1)[..., None]
  threshold = jnp.take_along_axis(ordered, first, axis=-1)
  threshold = jnp.where(jnp.any(reached, axis=-1, keepdims=True) & (p > 0), threshold, -1.0)
  return jnp.where(probs >= threshold, logits, NEG_INF)


def _is_static_zero_temperature(temperature: Union[float, Array]) -> bool:
  return not isinstance(temperature, jax.Array) and float(temperature) <= MIN_TEMPERATURE


def _make_chooser(temperature, top_k: int, top_p, rescale_log_probs: bool):
  """(logits [n, V], key) -> (token [n], log-prob [n]): one sampling step as t5x's temperature_sample."""
  static_top_p = not isinstance(top_p, jax.Array)

  def greedy_choice(logits):
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if rescale_log_probs:  # t5x: the sampling distribution at temperature 0 is a point mass
      return token, jnp.zeros(token.shape, jnp.float32)
    return token, _take_log_prob(jax.nn.log_softmax(logits), token)

  def sampled_choice(logits, key):
    t = jnp.asarray(temperature, jnp.float32)
    scaled = logits / jnp.maximum(t, MIN_TEMPERATURE)
    if top_k:
      scaled = topk_mask(scaled, top_k)
    if not static_top_p or top_p:
      scaled = topp_mask(scaled, top_p)
    token = jax.random.categorical(key, scaled).astype(jnp.int32)
    return token, _take_log_prob(jax.nn.log_softmax(scaled if rescale_log_probs else logits), token)

  def choose(logits, key):
    if _is_static_zero_temperature(temperature):
      return greedy_choice(logits)
    if not isinstance(temperature, jax.Array):
      return sampled_choice(logits, key)
    return jax.lax.cond(jnp.asarray(temperature) > MIN_TEMPERATURE, sampled_choice,
                        lambda logits, _: greedy_choice(logits), logits, key)

  return choose


def _sampling_loop(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, choose,
                   rng: Array, num_decodes: int, start_id: int, eos_id: int, prompt: Optional[Array],
                   max_decode_steps: Optional[int]) -> DecodeResult:
  """One token per sequence per step until every sequence ended (EOS or its length limit).

  Rng use is t5x's: the key is split once per loop step (`key, next = split(key)`), `key` samples every row
  of the step, `next` carries on; rows are batch-major with each input's num_decodes copies adjacent.
  """
  prompt = _check_prompt(prompt, batch_size, max_decode_len)
  limits = _row_limits(prompt, max_decode_len, max_decode_steps)
  n = batch_size * num_decodes
  if num_decodes > 1:
    cache = _map_batched(lambda x: _expand(x, num_decodes), cache)
    prompt, limits = _expand(prompt, num_decodes), _expand(limits, num_decodes)

  def cond(state):
    i, _, _, _, ended, _, _, _ = state
    return (i < max_decode_len) & ~jnp.all(ended)

  def body(state):
    i, tokens, current, cache, ended, scores, lengths, key = state
    sample_key, key = jax.random.split(key)
    logits, cache = step_fn(current[:, None], cache)
    token, log_prob = choose(logits.astype(jnp.float32), sample_key)
    forced = jax.lax.dynamic_index_in_dim(prompt, i, axis=1, keepdims=False)
    out_of_prompt = forced == 0
    token = jnp.where(out_of_prompt, token, forced)
    scores = scores + jnp.where(out_of_prompt & ~ended, log_prob, 0.0)
    token = jnp.where(ended, 0, token)
    lengths = lengths + (~ended).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, i))
    ended = ended | ((token == eos_id) & out_of_prompt) | (i >= limits - 1)
    return i + 1, tokens, token, cache, ended, scores, lengths, key

  init = (jnp.zeros((), jnp.int32), jnp.zeros((n, max_decode_len), jnp.int32), jnp.full((n,), start_id, jnp.int32),
          cache, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32), rng)
  _, tokens, _, _, _, scores, lengths, _ = jax.lax.while_loop(cond, body, init)
  tokens = tokens.reshape(batch_size, num_decodes, max_decode_len)
  scores, lengths = scores.reshape(batch_size, num_decodes), lengths.reshape(batch_size, num_decodes)
  order = jnp.flip(jnp.argsort(scores, axis=-1), axis=-1)  # t5x's increasing order, reversed: best first
  tokens = jnp.take_along_axis(tokens, order[:, :, None], axis=1)
  scores, lengths = jnp.take_along_axis(scores, order, axis=1), jnp.take_along_axis(lengths, order, axis=1)
  return DecodeResult(tokens[:, 0], scores[:, 0], lengths[:, 0], tokens, scores)


def greedy(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, start_id: int = 0,
           eos_id: int = 1, *, prompt: Optional[Array] = None,
           max_decode_steps: Optional[int] = None) -> DecodeResult:
  """Argmax decoding; scores are the model's log-probs of the generated tokens.

  Same as t5x's temperature_sample(temperature=0, rescale_log_probs=False); with t5x's default
  rescale_log_probs=True the scores would be 0 (see `sample`).
  """
  choose = _make_chooser(0.0, 0, 0.0, rescale_log_probs=False)
  return _sampling_loop(step_fn, cache, batch_size, max_decode_len, choose, jax.random.key(0), 1, start_id,
                        eos_id, prompt, max_decode_steps)


def sample(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, rng: Array,
           temperature: Union[float, Array] = 1.0, top_k: int = 1, top_p: Union[float, Array] = 0.0,
           start_id: int = 0, eos_id: int = 1, rescale_log_probs: bool = True, *, num_decodes: int = 1,
           prompt: Optional[Array] = None, max_decode_steps: Optional[int] = None) -> DecodeResult:
  """t5x's temperature_sample: num_decodes samples per input, returned best first with their scores.

  logits / temperature, then either the top_k most likely tokens (t5x's default top_k=1 is greedy) or the
  smallest most-likely set whose probability reaches top_p; both at once is refused, as in t5x (use top_k=0
  with top_p). A temperature <= 1e-4 is argmax whatever the filters. temperature and top_p may be traced
  scalars (one compilation serves all values); top_k is a Python int. Scores: log-probs under the sampling
  distribution (rescale_log_probs, t5x's default: 0 per token at temperature 0 or top_k=1) or under the model.
  Given the same `rng`, the draws are t5x's (same key splitting and categorical draws, see _sampling_loop).
  """
  if top_k < 0 or (not isinstance(top_p, jax.Array) and not 0.0 <= top_p <= 1.0):
    raise ValueError(f'sample: need top_k >= 0 and 0 <= top_p <= 1, got top_k={top_k}, top_p={top_p}')
  if top_k and not isinstance(top_p, jax.Array) and top_p:
    raise ValueError(f'sample: at most one of top_k ({top_k}) and top_p ({top_p}) may be non-zero (as in t5x); '
                     'set top_k=0 to sample from the top_p nucleus')
  if num_decodes < 1:
    raise ValueError(f'sample: num_decodes must be >= 1, got {num_decodes}')
  choose = _make_chooser(temperature, top_k, top_p, rescale_log_probs)
  return _sampling_loop(step_fn, cache, batch_size, max_decode_len, choose, rng, num_decodes, start_id, eos_id,
                        prompt, max_decode_steps)


# ------------------------------------------------------------------------------------------------------------
# Beam search (t5x's beam_search).

def brevity_penalty(alpha: float, length: Union[int, Array]) -> Array:
  """t5x / GNMT length normalizer ((5 + length) / 6)^alpha; a finished beam's score is log-prob / this."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def _gather(x: Array, indices: Array) -> Array:
  """x [b, n, ...] indexed along axis 1 by indices [b, m] -> [b, m, ...]."""
  return jax.vmap(lambda row, idx: row[idx])(x, indices)


def _top_ascending(scores: Array, k: int) -> Array:
  """Indices of the k largest scores per row, in increasing order (t5x keeps beams best last)."""
  return jnp.flip(jax.lax.top_k(scores, k)[1], axis=1)


def beam_search(step_fn: StepFn, cache: PyTree, batch_size: int, beam_size: int, max_decode_len: int,
                alpha: float = 0.6, eos_id: int = 1, start_id: int = 0, *, prompt: Optional[Array] = None,
                max_decode_steps: Optional[int] = None, finish_rule: str = 't5x') -> DecodeResult:
  """t5x's beam search: beam_size live beams, the beam_size best finished ones; returns finished, best first.

  Each step extends every live beam by every token and ranks the 2 * beam_size best candidates by log-prob.
  The beam_size best that do not end in EOS become the live beams. With finish_rule='t5x' (default) every
  EOS-ending candidate among those 2 * beam_size enters the finished set, scored
  log-prob / brevity_penalty(alpha, length); finish_rule='hf' admits only those ranked in the top beam_size
  (Hugging Face's rule; with alpha = 0, beam_size 1 is then exactly greedy). The finished set keeps the
  beam_size best. Rows where nothing finished return their live beams with raw log-probs. Like t5x, a row
  with fewer than beam_size finished beams fills the remaining slots with unfinished candidates scored about
  NEG_INF (-1e7 + log-prob): treat scores <= -1e6 as 'no beam'.

  max_decode_steps (t5x's max_decode_step, counted after the prompt) stops a row after that many new tokens.
  The search stops early once no live beam can beat the worst finished one (t5x's test, which cannot change
  the result).
  """
  if finish_rule not in FINISH_RULES:
    raise ValueError(f'beam_search: finish_rule={finish_rule!r}, expected one of {FINISH_RULES}')
  k = beam_size
  flat = batch_size * k
  prompt = _check_prompt(prompt, batch_size, max_decode_len)
  limits = _row_limits(prompt, max_decode_len, max_decode_steps)
  cache = _map_batched(lambda x: _expand(x, k), cache)
  bp_max = brevity_penalty(alpha, max_decode_len + 1)  # t5x's bound (its length counts the start token)
  # Internal layout is t5x's: beams in increasing score, best last. Column 0 holds the start token; column
  # i + 1 the token of step i.
  seqs0 = jnp.zeros((batch_size, k, max_decode_len + 1), jnp.int32).at[:, :, 0].set(start_id)
  live_log_probs0 = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch_size, 1))
  init = (jnp.zeros((), jnp.int32), seqs0, live_log_probs0, cache, jnp.zeros_like(seqs0),
          jnp.full((batch_size, k), NEG_INF, jnp.float32), jnp.zeros((batch_size, k), bool))

  def cond(state):
    i, _, live_log_probs, _, _, finished_scores, finished = state
    best_live = live_log_probs[:, -1:] / bp_max  # log-probs only fall and the penalty is largest at the end
    worst_finished = jnp.where(finished, jnp.min(finished_scores, axis=1, keepdims=True), NEG_INF)
    searching = ~jnp.all(worst_finished > best_live)
    return (i < max_decode_len) & searching & jnp.any(i < limits)

  def body(state):
    i, live_seqs, live_log_probs, cache, finished_seqs, finished_scores, finished = state
    current = jax.lax.dynamic_slice_in_dim(live_seqs, i, 1, axis=2).reshape(flat, 1)
    logits, new_cache = step_fn(current, cache)
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch_size, k, vocab)
    log_probs = log_probs + live_log_probs[:, :, None]
    cand_log_probs, cand_index = jax.lax.top_k(log_probs.reshape(batch_size, k * vocab), 2 * k)
    cand_beam, cand_token = cand_index // vocab, cand_index % vocab
    # Inside the prompt: the forced token, one live beam with log-prob 0 (t5x).
    forced = jax.lax.dynamic_index_in_dim(prompt, i, axis=1, keepdims=True)
    out_of_prompt = forced == 0
    in_prompt_log_probs = jnp.array([0.0] + [NEG_INF] * (2 * k - 1), jnp.float32)[None, :]
    cand_log_probs = jnp.where(out_of_prompt, cand_log_probs, in_prompt_log_probs)
    cand_token = jnp.where(out_of_prompt, cand_token, forced)
    cand_seqs = _gather(live_seqs, cand_beam)
    cand_seqs = jax.lax.dynamic_update_slice_in_dim(cand_seqs, cand_token[:, :, None], i + 1, axis=2)
    ended = cand_token == eos_id

    # Live set: the k best candidates that did not end; their caches follow their parent beams.
    masked = cand_log_probs + ended * NEG_INF
    pick = _top_ascending(masked, k)
    new_live_seqs = _gather(cand_seqs, pick)
    new_live_log_probs = jnp.take_along_axis(masked, pick, axis=1)
    parent = jnp.take_along_axis(cand_beam, pick, axis=1)

    # Finished set: the newly ended candidates (length-normalized) merged with the previous finished ones.
    admitted = ended if finish_rule == 't5x' else ended & (jnp.arange(2 * k) < k)[None, :]
    new_scores = cand_log_probs / brevity_penalty(alpha, i + 1) + (~admitted) * NEG_INF
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    all_flags = jnp.concatenate([finished, admitted], axis=1)
    all_seqs = jnp.concatenate([finished_seqs, cand_seqs], axis=1)
    pick = _top_ascending(all_scores, k)
    new_finished_scores = jnp.take_along_axis(all_scores, pick, axis=1)
    new_finished = jnp.take_along_axis(all_flags, pick, axis=1)
    new_finished_seqs = _gather(all_seqs, pick)

    # Rows past their max_decode_steps limit keep their state (their caches advance unused).
    active = i < limits
    keep = lambda new, old: jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    parent = jnp.where(active[:, None], parent, jnp.arange(k)[None, :])
    flat_parent = (parent + jnp.arange(batch_size)[:, None] * k).reshape(flat)
    cache = _map_batched(lambda x: jnp.take(x, flat_parent, axis=0), new_cache)
    return (i + 1, keep(new_live_seqs, live_seqs), keep(new_live_log_probs, live_log_probs), cache,
            keep(new_finished_seqs, finished_seqs), keep(new_finished_scores, finished_scores),
            keep(new_finished, finished))

  _, live_seqs, live_log_probs, _, finished_seqs, finished_scores, finished = jax.lax.while_loop(
      cond, body, init)
  any_finished = jnp.any(finished, axis=1)
  all_tokens = jnp.where(any_finished[:, None, None], finished_seqs, live_seqs)[:, ::-1, 1:]
  all_scores = jnp.where(any_finished[:, None], finished_scores, live_log_probs)[:, ::-1]
  return DecodeResult(all_tokens[:, 0], all_scores[:, 0], _lengths(all_tokens[:, 0], eos_id), all_tokens,
                      all_scores)
