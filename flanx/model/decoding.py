"""Model-agnostic batched decoding (greedy, sampling, beam search) in lax.while_loop, jit-able.

Contract with the model: `step_fn(tokens int32[b, 1], cache) -> (logits float[b, vocab], cache)` returns the
next-token logits after feeding `tokens` at the cache's current position. Cache leaves with ndim == 0 (e.g. a
shared decode index) are shared by all sequences and passed through untouched; every other leaf has the batch
axis first (beam search tiles and reorders those). Decoding starts by feeding `start_id` (T5: pad 0).

Outputs hold the generated tokens only (no start token), EOS included, 0 after it. Scores are summed log-probs
(beam search: divided by t5x's brevity penalty ((5 + length) / 6)^alpha for sequences that ended with EOS).
Sizes (batch, beam, max_decode_len, top_k) are Python ints; wrap calls in jax.jit with step_fn closed over.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any
StepFn = Callable[[Array, PyTree], tuple[Array, PyTree]]

NEG_INF = -1.0e7  # finite "impossible" log-prob, so sums and differences never produce NaN
MIN_TEMPERATURE = 1e-4  # at or below this, sampling is argmax (as in t5x)


class DecodeResult(NamedTuple):
  tokens: Array   # int32 [b, max_decode_len]
  scores: Array   # float32 [b]: summed log-probs of the emitted tokens (EOS included)
  lengths: Array  # int32 [b]: emitted tokens, EOS included


class BeamResult(NamedTuple):
  tokens: Array      # int32 [b, max_decode_len]: the best beam
  scores: Array      # float32 [b]
  all_tokens: Array  # int32 [b, beam, max_decode_len], best first
  all_scores: Array  # float32 [b, beam], descending


def _map_batched(fn: Callable[[Array], Array], cache: PyTree) -> PyTree:
  """Applies fn to every cache leaf with a batch axis; scalars (shared state) pass through."""
  return jax.tree.map(lambda x: fn(x) if jnp.ndim(x) > 0 else x, cache)


def _token_log_prob(logits: Array, tokens: Array) -> Array:
  return jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, None], axis=-1)[:, 0]


def _decode_loop(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, start_id: int,
                 eos_id: int, choose: Callable[[Array, Array], tuple[Array, Array]],
                 rng: Optional[Array]) -> DecodeResult:
  """One token per sequence per step until every sequence emitted EOS or max_decode_len is reached."""
  rng = jax.random.key(0) if rng is None else rng  # unused by deterministic `choose`

  def cond(state):
    i, _, _, _, ended, _, _ = state
    return (i < max_decode_len) & ~jnp.all(ended)

  def body(state):
    i, tokens, current, cache, ended, scores, lengths = state
    logits, cache = step_fn(current[:, None], cache)
    token, log_prob = choose(logits.astype(jnp.float32), jax.random.fold_in(rng, i))
    token = jnp.where(ended, 0, token.astype(jnp.int32))
    scores = scores + jnp.where(ended, 0.0, log_prob)
    lengths = lengths + (~ended).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, i))
    ended = ended | (token == eos_id)
    return i + 1, tokens, token, cache, ended, scores, lengths

  init = (jnp.zeros((), jnp.int32), jnp.zeros((batch_size, max_decode_len), jnp.int32),
          jnp.full((batch_size,), start_id, jnp.int32), cache, jnp.zeros((batch_size,), bool),
          jnp.zeros((batch_size,), jnp.float32), jnp.zeros((batch_size,), jnp.int32))
  _, tokens, _, _, _, scores, lengths = jax.lax.while_loop(cond, body, init)
  return DecodeResult(tokens, scores, lengths)


def greedy(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, start_id: int = 0,
           eos_id: int = 1) -> DecodeResult:
  """Argmax decoding; scores are the model's log-probs of the chosen tokens."""

  def choose(logits, _):
    token = jnp.argmax(logits, axis=-1)
    return token, _token_log_prob(logits, token)

  return _decode_loop(step_fn, cache, batch_size, max_decode_len, start_id, eos_id, choose, None)


def _filtered_sample(logits: Array, key: Array, top_k: int, top_p: Union[float, Array]) -> tuple[Array, Array]:
  """Samples from the top_k (then top_p nucleus) of logits; returns token and its renormalized log-prob."""
  vocab = logits.shape[-1]
  dynamic_top_p = isinstance(top_p, jax.Array)
  if not top_k and not dynamic_top_p and not top_p:
    token = jax.random.categorical(key, logits)
    return token, _token_log_prob(logits, token)
  values, indices = jax.lax.top_k(logits, top_k if 0 < top_k < vocab else vocab)  # sorted, descending
  if dynamic_top_p or top_p:
    probs = jax.nn.softmax(values)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = (mass_before < top_p) | (top_p <= 0)  # the smallest prefix reaching top_p; 0 disables
    values = jnp.where(keep, values, NEG_INF)
  choice = jax.random.categorical(key, values)
  token = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]
  return token, _token_log_prob(values, choice)


def sample(step_fn: StepFn, cache: PyTree, batch_size: int, max_decode_len: int, rng: Array,
           temperature: Union[float, Array] = 1.0, top_k: int = 0, top_p: Union[float, Array] = 0.0,
           start_id: int = 0,
           eos_id: int = 1, rescale_log_probs: bool = True) -> DecodeResult:
  """Temperature sampling, optionally restricted to the top_k tokens and/or the top_p nucleus.

  Filters combine (t5x allows only one of them): logits / temperature, then the top_k most likely tokens, then
  the smallest most-likely prefix of those whose renormalized mass reaches top_p. 0 disables a filter. A
  temperature <= 1e-4 is argmax. temperature and top_p may be traced arrays (one compilation serves all
  values). Step i draws with fold_in(rng, i): the same key gives the same samples.
  Scores: log-probs under the sampling distribution (rescale_log_probs, t5x's default) or under the model.
  """
  if top_k < 0 or (not isinstance(top_p, jax.Array) and not 0.0 <= top_p <= 1.0):
    raise ValueError(f'sample: need top_k >= 0 and 0 <= top_p <= 1, got top_k={top_k}, top_p={top_p}')
  if not isinstance(temperature, jax.Array) and float(temperature) <= MIN_TEMPERATURE:
    return greedy(step_fn, cache, batch_size, max_decode_len, start_id, eos_id)

  def choose(logits, key):
    t = jnp.asarray(temperature, jnp.float32)
    token, log_prob = _filtered_sample(logits / jnp.maximum(t, MIN_TEMPERATURE), key, top_k, top_p)
    if not rescale_log_probs:
      log_prob = _token_log_prob(logits, token)
    argmax = jnp.argmax(logits, axis=-1)
    is_greedy = t <= MIN_TEMPERATURE  # only a traced temperature gets here with t ~ 0
    argmax_log_prob = jnp.zeros_like(log_prob) if rescale_log_probs else _token_log_prob(logits, argmax)
    return jnp.where(is_greedy, argmax, token), jnp.where(is_greedy, argmax_log_prob, log_prob)

  return _decode_loop(step_fn, cache, batch_size, max_decode_len, start_id, eos_id, choose, rng)


def brevity_penalty(alpha: float, length: Union[int, Array]) -> Array:
  """t5x / GNMT length normalizer ((5 + length) / 6)^alpha; a finished beam's score is log-prob / this."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def _gather(x: Array, indices: Array) -> Array:
  """x [b, n, ...] indexed along axis 1 by indices [b, m] -> [b, m, ...]."""
  return jax.vmap(lambda row, idx: row[idx])(x, indices)


def beam_search(step_fn: StepFn, cache: PyTree, batch_size: int, beam_size: int, max_decode_len: int,
                alpha: float = 0.6, eos_id: int = 1, start_id: int = 0) -> BeamResult:
  """t5x-style beam search: keeps beam_size live beams and the beam_size best finished ones.

  Each step extends every live beam by every token and takes the 2 * beam_size best candidates (so beam_size
  non-EOS ones survive even if many end). An EOS-ended candidate enters the finished set, scored
  log-prob / brevity_penalty(alpha, length), only if it ranks among the beam_size best candidates of its step
  (as in Hugging Face's beam search; t5x also admits ranks beam_size..2*beam_size-1). With that rule and
  alpha = 0, beam_size 1 is exactly greedy decoding. The search stops once no live beam can beat the worst
  finished one; rows where nothing finished return their live beams with raw log-probs.
  """
  k = beam_size
  flat = batch_size * k
  cache = _map_batched(lambda x: jnp.repeat(x, k, axis=0), cache)
  bp_max = brevity_penalty(alpha, max_decode_len)
  # Column 0 holds the start token; column i + 1 the token generated at step i.
  seqs0 = jnp.zeros((batch_size, k, max_decode_len + 1), jnp.int32).at[:, :, 0].set(start_id)
  live_log_probs0 = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch_size, 1))
  init = (jnp.zeros((), jnp.int32), seqs0, live_log_probs0, cache, seqs0,
          jnp.full((batch_size, k), NEG_INF, jnp.float32), jnp.zeros((batch_size, k), bool))

  def cond(state):
    i, _, live_log_probs, _, _, finished_scores, finished = state
    best_possible = live_log_probs[:, 0] / bp_max  # log-probs only fall and the penalty is largest at the end
    worst_finished = jnp.where(jnp.all(finished, axis=1), finished_scores[:, -1], NEG_INF * 10)
    return (i < max_decode_len) & ~jnp.all(worst_finished > best_possible)

  def body(state):
    i, live_seqs, live_log_probs, cache, finished_seqs, finished_scores, finished = state
    current = jax.lax.dynamic_slice_in_dim(live_seqs, i, 1, axis=2).reshape(flat, 1)
    logits, cache = step_fn(current, cache)
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch_size, k, vocab)
    log_probs = log_probs + live_log_probs[:, :, None]
    cand_log_probs, cand_index = jax.lax.top_k(log_probs.reshape(batch_size, k * vocab), 2 * k)
    cand_beam, cand_token = cand_index // vocab, cand_index % vocab
    cand_seqs = _gather(live_seqs, cand_beam)
    cand_seqs = jax.lax.dynamic_update_slice_in_dim(cand_seqs, cand_token[:, :, None], i + 1, axis=2)
    ended = cand_token == eos_id
    admitted = ended & (jnp.arange(2 * k) < k)[None, :]  # candidates come sorted: rank = column

    # Live set: the k best candidates that did not end; their caches follow their parent beams.
    live_log_probs, pick = jax.lax.top_k(jnp.where(ended, NEG_INF, cand_log_probs), k)
    live_seqs = _gather(cand_seqs, pick)
    parent = jnp.take_along_axis(cand_beam, pick, axis=1) + jnp.arange(batch_size)[:, None] * k
    cache = _map_batched(lambda x: jnp.take(x, parent.reshape(flat), axis=0), cache)

    # Finished set: merge the newly ended candidates (length-normalized) with the previous finished ones.
    new_scores = jnp.where(admitted, cand_log_probs / brevity_penalty(alpha, i + 1), NEG_INF)
    all_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
    all_flags = jnp.concatenate([finished, admitted], axis=1)
    all_seqs = jnp.concatenate([finished_seqs, cand_seqs], axis=1)
    finished_scores, pick = jax.lax.top_k(jnp.where(all_flags, all_scores, NEG_INF * 10), k)
    finished_scores = jnp.take_along_axis(all_scores, pick, axis=1)
    finished = jnp.take_along_axis(all_flags, pick, axis=1)
    finished_seqs = _gather(all_seqs, pick)
    return i + 1, live_seqs, live_log_probs, cache, finished_seqs, finished_scores, finished

  _, live_seqs, live_log_probs, _, finished_seqs, finished_scores, finished = jax.lax.while_loop(
      cond, body, init)
  any_finished = jnp.any(finished, axis=1)
  all_tokens = jnp.where(any_finished[:, None, None], finished_seqs, live_seqs)[:, :, 1:]
  all_scores = jnp.where(any_finished[:, None], jnp.where(finished, finished_scores, NEG_INF), live_log_probs)
  return BeamResult(all_tokens[:, 0], all_scores[:, 0], all_tokens, all_scores)
