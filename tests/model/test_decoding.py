"""flanx.model.decoding on a toy history-dependent Markov model, against brute force and against numpy
references written here from t5x's documented algorithms (t5x/decoding.py: beam_search, temperature_sample)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import decoding

EOS = 1
MOD = 5  # the toy's logits depend on (sum of fed tokens) % MOD: beams must carry their own cache


class Toy:
  """logits(step i, previous token p, history sum s, row r) = T[i, p] + U[s % MOD] + bias[r]."""

  def __init__(self, vocab, max_len, batch, seed, scale=2.0, eos_shift=0.0):
    rng = np.random.default_rng(seed)
    self.table = scale * rng.standard_normal((max_len, vocab, vocab)).astype(np.float32)
    self.table[..., EOS] += eos_shift
    self.history = scale * rng.standard_normal((MOD, vocab)).astype(np.float32)
    self.bias = rng.standard_normal((batch, vocab)).astype(np.float32)

  def cache(self):
    batch = self.bias.shape[0]
    return {'index': jnp.zeros((), jnp.int32), 'sum': jnp.zeros((batch,), jnp.int32),
            'bias': jnp.asarray(self.bias)}

  def step_fn(self, tokens, cache):
    total = cache['sum'] + tokens[:, 0]
    logits = (jnp.asarray(self.table)[cache['index'], tokens[:, 0]] + jnp.asarray(self.history)[total % MOD]
              + cache['bias'])
    return logits, {'index': cache['index'] + 1, 'sum': total, 'bias': cache['bias']}

  def logits32(self, row, prefix):
    """The float32 logits step_fn computes after feeding start + prefix (same additions, same order)."""
    fed = [0] + list(prefix)
    return (self.table[len(prefix), fed[-1]] + self.history[sum(fed) % MOD]) + self.bias[row]

  def log_probs(self, row, prefix):
    """Next-token log-probs (float64) after generating `prefix` (start token 0 is fed first)."""
    x = self.logits32(row, prefix).astype(np.float64)
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def numpy_greedy(toy, row, max_len, prompt=()):
  seq, score = list(prompt), 0.0
  while len(seq) < max_len and (len(seq) == len(prompt) or seq[-1] != EOS):
    lp = toy.log_probs(row, seq)
    seq.append(int(np.argmax(lp)))
    score += lp[seq[-1]]
  return seq, score


def brute_force_finished(toy, row, max_len, alpha):
  """Every sequence that ends with its first EOS within max_len, with its length-penalized score."""
  vocab = toy.table.shape[-1]
  out = []
  for n in range(1, max_len + 1):
    for body in itertools.product([t for t in range(vocab) if t != EOS], repeat=n - 1):
      seq = list(body) + [EOS]
      logp = sum(toy.log_probs(row, seq[:j])[seq[j]] for j in range(n))
      out.append((logp / ((5 + n) / 6) ** alpha, seq))
  return sorted(out, key=lambda x: -x[0])


def numpy_beam_search(toy, row, beam, max_len, alpha, rule='t5x', prompt=(), max_steps=None):
  """t5x's beam search, written plainly for one row: (score, tokens) best first.

  Per step, every live beam is extended by every token and the 2*beam best candidates (by summed log-prob)
  are kept. EOS-ending ones join the finished pool with log-prob / ((5 + length) / 6)^alpha ('t5x': any of
  the 2*beam; 'hf': only those ranked < beam); the best `beam` others stay live. The pool keeps the best
  `beam`. The answer is the pool, or the live beams (raw log-probs) if nothing finished. A prompt is a given
  prefix with log-prob 0 that counts towards the length; max_steps caps the tokens after it.
  """
  vocab = toy.table.shape[-1]
  live, finished = [(0.0, list(prompt))], []
  limit = max_len if max_steps is None else min(max_len, len(prompt) + max_steps)
  for length in range(len(prompt) + 1, limit + 1):
    candidates = []
    for log_prob, seq in live:
      step = toy.log_probs(row, seq)
      candidates += [(log_prob + step[t], seq + [t]) for t in range(vocab)]
    candidates = sorted(candidates, key=lambda c: -c[0])[:2 * beam]
    for rank, (log_prob, seq) in enumerate(candidates):
      if seq[-1] == EOS and (rule == 't5x' or rank < beam):
        finished.append((log_prob / ((5 + length) / 6) ** alpha, seq))
    live = [c for c in candidates if c[1][-1] != EOS][:beam]
    finished = sorted(finished, key=lambda c: -c[0])[:beam]
  return finished or live


def _pad(seq, n):
  return list(seq) + [0] * (n - len(seq))


def test_greedy_matches_numpy_argmax():
  batch, vocab, max_len = 6, 7, 6
  toy = Toy(vocab, max_len, batch, seed=0, eos_shift=1.5)
  out = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  lengths = []
  for r in range(batch):
    seq, score = numpy_greedy(toy, r, max_len)
    lengths.append(len(seq))
    assert out.tokens[r].tolist() == _pad(seq, max_len)
    np.testing.assert_allclose(out.scores[r], score, rtol=1e-5)
  assert out.lengths.tolist() == lengths
  assert min(lengths) < max_len and max(lengths) == max_len  # both early EOS and running out of length


def test_greedy_continues_a_decoder_prompt_and_stops_after_max_decode_steps():
  batch, vocab, max_len = 4, 7, 8
  toy = Toy(vocab, max_len, batch, seed=6, eos_shift=-0.5)
  prompts = [[3], [], [4, 2, 5], [6, 6]]
  prompt = np.array([_pad(p, 3) for p in prompts], np.int32)
  out = jax.jit(lambda c, p: decoding.greedy(toy.step_fn, c, batch, max_len, prompt=p))(toy.cache(), prompt)
  for r in range(batch):
    seq, score = numpy_greedy(toy, r, max_len, prompts[r])
    assert out.tokens[r].tolist() == _pad(seq, max_len)  # the prompt stays in front of the continuation
    np.testing.assert_allclose(out.scores[r], score, rtol=1e-5)  # prompt tokens score nothing
  capped = jax.jit(lambda c, p: decoding.greedy(toy.step_fn, c, batch, max_len, prompt=p, max_decode_steps=2))(
      toy.cache(), prompt)
  for r in range(batch):
    seq, _ = numpy_greedy(toy, r, len(prompts[r]) + 2, prompts[r])
    assert capped.tokens[r].tolist() == _pad(seq, max_len)


@pytest.mark.parametrize('alpha', [0.6, 0.0])
def test_exhaustive_beam_search_equals_brute_force(alpha):
  batch, vocab, max_len = 2, 3, 3
  toy = Toy(vocab, max_len, batch, seed=1)
  beam = vocab ** max_len
  out = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, beam, max_len, alpha=alpha))(toy.cache())
  for r in range(batch):
    ranked = brute_force_finished(toy, r, max_len, alpha)  # 1 + 2 + 4 = 7 finished sequences
    assert out.tokens[r].tolist() == _pad(ranked[0][1], max_len)
    np.testing.assert_allclose(out.scores[r], ranked[0][0], rtol=1e-5)
    np.testing.assert_allclose(out.all_scores[r, :len(ranked)], [s for s, _ in ranked], rtol=1e-5)
    assert [out.all_tokens[r, j].tolist() for j in range(len(ranked))] == [_pad(s, max_len) for _, s in ranked]


def test_beam_search_larger_vocab_matches_brute_force_with_a_moderate_beam():
  """V=5, length 4: beam 64 >= the 4^3 live prefixes, so the search is still exact; the early stop is exercised."""
  batch, vocab, max_len = 2, 5, 4
  toy = Toy(vocab, max_len, batch, seed=2, eos_shift=1.0)
  out = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, 64, max_len))(toy.cache())
  for r in range(batch):
    best_score, best = brute_force_finished(toy, r, max_len, 0.6)[0]
    assert out.tokens[r].tolist() == _pad(best, max_len)
    np.testing.assert_allclose(out.scores[r], best_score, rtol=1e-5)


def _check_against_reference(out, toy, batch, beam, max_len, alpha, rule, prompts=None, max_steps=None):
  """Tokens and scores of every real beam equal the numpy reference; the remaining slots are t5x's fillers."""
  for r in range(batch):
    want = numpy_beam_search(toy, r, beam, max_len, alpha, rule, prompts[r] if prompts else (), max_steps)
    got_tokens = [out.all_tokens[r, j].tolist() for j in range(len(want))]
    assert got_tokens == [_pad(seq, max_len) for _, seq in want], (r, rule)
    np.testing.assert_allclose(out.all_scores[r, :len(want)], [s for s, _ in want], rtol=2e-5)
    assert np.all(np.asarray(out.all_scores[r, len(want):]) < -1e6)


@pytest.mark.slow
@pytest.mark.parametrize('seed', [10, 11, 12])
def test_beam_search_reproduces_t5x_rule_and_scores_on_random_tables(seed):
  """Random tables where sequences end at different steps: the t5x rule (EOS candidates ranked up to
  2*beam - 1 finish) and the HF rule (top beam only) each match the reference, and they really differ."""
  batch, vocab, max_len, beam = 16, 9, 7, 4
  toy = Toy(vocab, max_len, batch, seed=seed, scale=1.5, eos_shift=0.0)
  run = jax.jit(lambda c, rule: decoding.beam_search(toy.step_fn, c, batch, beam, max_len, alpha=0.6,
                                                     finish_rule=rule), static_argnums=1)
  t5x, hf = run(toy.cache(), 't5x'), run(toy.cache(), 'hf')
  _check_against_reference(t5x, toy, batch, beam, max_len, 0.6, 't5x')
  _check_against_reference(hf, toy, batch, beam, max_len, 0.6, 'hf')
  assert np.all(np.diff(np.asarray(t5x.all_scores), axis=1) <= 0)  # best first
  assert np.any(np.asarray(t5x.tokens) != np.asarray(hf.tokens))  # the rules differ on these tables


@pytest.mark.slow
def test_beam_search_with_prompts_and_max_decode_steps_matches_reference():
  batch, vocab, max_len, beam = 4, 10, 7, 3
  toy = Toy(vocab, max_len, batch, seed=13, scale=1.5)
  prompts = [[4], [], [2, 7, 3], [5, 5]]
  prompt = jnp.asarray(np.array([_pad(p, 3) for p in prompts], np.int32))
  for steps in (None, 2):
    out = jax.jit(lambda c, p: decoding.beam_search(toy.step_fn, c, batch, beam, max_len, prompt=p,
                                                    max_decode_steps=steps))(toy.cache(), prompt)
    _check_against_reference(out, toy, batch, beam, max_len, 0.6, 't5x', prompts, steps)


def test_beam_one_equals_greedy_when_no_sequence_ends():
  batch, vocab, max_len = 4, 6, 5
  toy = Toy(vocab, max_len, batch, seed=3, eos_shift=-1e4)  # EOS never wins: beams never finish
  beam = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, 1, max_len))(toy.cache())
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)  # unfinished: raw log-probs


def test_runner_up_eos_finishes_under_t5x_rule_but_not_hf_rule():
  """Step 1: token 2 p=.6 beats EOS p=.4, then EOS p=.5. Greedy: '2 EOS' (.3). Beam 1, alpha 0: t5x admits the
  runner-up EOS (rank 2 of 2 candidates) and returns 'EOS' (.4); the HF rule does not and agrees with greedy."""
  vocab = 3
  first = np.log(np.array([1e-9, 0.4, 0.6]))
  second = np.log(np.array([0.25, 0.5, 0.25]))

  def step_fn(tokens, cache):
    logits = jnp.where(cache['i'] == 0, jnp.asarray(first), jnp.asarray(second))
    return jnp.broadcast_to(logits, (tokens.shape[0], vocab)).astype(jnp.float32), {'i': cache['i'] + 1}

  cache = {'i': jnp.zeros((), jnp.int32)}
  greedy = jax.jit(lambda c: decoding.greedy(step_fn, c, 1, 4))(cache)
  t5x = jax.jit(lambda c: decoding.beam_search(step_fn, c, 1, 1, 4, alpha=0.0))(cache)
  hf = jax.jit(lambda c: decoding.beam_search(step_fn, c, 1, 1, 4, alpha=0.0, finish_rule='hf'))(cache)
  assert greedy.tokens[0].tolist() == [2, EOS, 0, 0]
  assert t5x.tokens[0].tolist() == [EOS, 0, 0, 0]
  np.testing.assert_allclose(t5x.scores[0], np.log(0.4), rtol=1e-5)
  assert hf.tokens[0].tolist() == greedy.tokens[0].tolist()
  np.testing.assert_allclose(hf.scores[0], np.log(0.3), rtol=1e-5)
  with pytest.raises(ValueError, match='finish_rule'):
    decoding.beam_search(step_fn, cache, 1, 1, 4, finish_rule='huggingface')


@pytest.mark.parametrize('seed', [4, 5])
def test_beam_one_hf_rule_without_length_penalty_equals_greedy_when_sequences_end(seed):
  batch, vocab, max_len = 6, 5, 6
  toy = Toy(vocab, max_len, batch, seed=seed, eos_shift=1.0)
  beam = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, 1, max_len, alpha=0.0,
                                                finish_rule='hf'))(toy.cache())
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  assert (greedy.lengths < max_len).any()  # some rows really end early
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)


def reference_sample(toy, key, batch, num_decodes, max_len, temperature, top_k=0, top_p=0.0):
  """t5x's temperature_sample loop written plainly: per step `key, next = split(key)`, one categorical draw
  over all batch * num_decodes rows (each input's copies adjacent) of the filtered logits / temperature."""
  n = batch * num_decodes
  seqs, scores, done = [[] for _ in range(n)], np.zeros(n), np.zeros(n, bool)
  for _ in range(max_len):
    draw_key, key = jax.random.split(key)
    logits = np.stack([toy.logits32(r // num_decodes, seqs[r]) for r in range(n)]) / np.float32(temperature)
    if top_k:
      kth = np.sort(logits, axis=1)[:, -top_k][:, None]
      logits = np.where(logits >= kth, logits, np.float32(-1e7))
    if top_p:
      probs = np.exp(logits - logits.max(1, keepdims=True))
      probs /= probs.sum(1, keepdims=True)
      ordered = -np.sort(-probs, axis=1)
      threshold = ordered[np.arange(n), np.argmax(np.cumsum(ordered, axis=1) >= top_p, axis=1)][:, None]
      logits = np.where(probs >= threshold, logits, np.float32(-1e7))
    tokens = np.asarray(jax.random.categorical(draw_key, jnp.asarray(logits)))
    for r in range(n):
      if not done[r]:
        x = logits[r].astype(np.float64)
        scores[r] += x[tokens[r]] - x.max() - np.log(np.sum(np.exp(x - x.max())))
        seqs[r].append(int(tokens[r]))
        done[r] = tokens[r] == EOS
  return seqs, scores


@pytest.mark.parametrize('top_k,top_p', [(0, 0.0), (3, 0.0), (0, 0.7)])
def test_sampling_draws_and_scores_follow_t5x_rng_scheme(top_k, top_p):
  batch, num_decodes, vocab, max_len = 3, 4, 8, 6
  toy = Toy(vocab, max_len, batch, seed=21, scale=1.0, eos_shift=0.5)
  key = jax.random.key(5)
  out = jax.jit(lambda c, key: decoding.sample(toy.step_fn, c, batch, max_len, key, temperature=0.7,
                                               top_k=top_k, top_p=top_p, num_decodes=num_decodes))(
      toy.cache(), key)
  seqs, scores = reference_sample(toy, key, batch, num_decodes, max_len, 0.7, top_k, top_p)
  for b in range(batch):
    rows = range(b * num_decodes, (b + 1) * num_decodes)
    want = sorted(((scores[r], _pad(seqs[r], max_len)) for r in rows), key=lambda x: -x[0])
    assert [out.all_tokens[b, j].tolist() for j in range(num_decodes)] == [t for _, t in want]
    np.testing.assert_allclose(out.all_scores[b], [s for s, _ in want], rtol=1e-5, atol=1e-6)
  assert len({tuple(t) for t in np.asarray(out.all_tokens).reshape(-1, max_len).tolist()}) > batch  # varied


@pytest.mark.slow
def test_zero_temperature_python_float_and_traced_agree_with_t5x_zero_scores():
  batch, vocab, max_len = 5, 7, 6
  toy = Toy(vocab, max_len, batch, seed=8, scale=1.0, eos_shift=0.5)
  key = jax.random.key(1)
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  cold = jax.jit(lambda c: decoding.sample(toy.step_fn, c, batch, max_len, key, temperature=0.0, top_k=0))(
      toy.cache())
  traced = jax.jit(lambda c, t: decoding.sample(toy.step_fn, c, batch, max_len, key, temperature=t, top_k=0))(
      toy.cache(), jnp.float32(0.0))
  np.testing.assert_array_equal(cold.tokens, greedy.tokens)
  np.testing.assert_array_equal(traced.tokens, greedy.tokens)
  np.testing.assert_array_equal(cold.scores, np.zeros(batch))  # t5x: log-prob under a point mass
  np.testing.assert_array_equal(traced.scores, cold.scores)
  model_scores = jax.jit(lambda c: decoding.sample(toy.step_fn, c, batch, max_len, key, temperature=0.0,
                                                   rescale_log_probs=False))(toy.cache())
  np.testing.assert_allclose(model_scores.scores, greedy.scores, rtol=1e-6)


def test_sampling_defaults_and_refusals_follow_t5x():
  batch, vocab, max_len = 4, 7, 5
  toy = Toy(vocab, max_len, batch, seed=9, scale=1.0)
  key = jax.random.key(2)
  default = jax.jit(lambda c: decoding.sample(toy.step_fn, c, batch, max_len, key))(toy.cache())  # t5x's topk=1
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  np.testing.assert_array_equal(default.tokens, greedy.tokens)
  np.testing.assert_array_equal(default.scores, np.zeros(batch))
  with pytest.raises(ValueError, match='at most one of top_k'):
    decoding.sample(toy.step_fn, toy.cache(), batch, max_len, key, top_k=5, top_p=0.9)


def test_masks_follow_their_definitions():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 11)).astype(np.float32)
  logits[0, 3] = logits[0, 4] = logits[0].max() + 1  # a tie at the top
  top = np.asarray(decoding.topk_mask(jnp.asarray(logits), 1))
  assert (top[0] > -1e6).sum() == 2  # ties with the k-th value are kept, as t5x
  assert all((top[r] > -1e6).sum() == 1 for r in range(1, 6))
  for p in (0.3, 0.9):
    kept = np.asarray(decoding.topp_mask(jnp.asarray(logits), p)) > -1e6
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for r in range(6):
      order = np.argsort(-probs[r])
      need = int(np.argmax(np.cumsum(probs[r][order]) >= p)) + 1  # smallest most-likely prefix reaching p
      want = probs[r] >= probs[r][order][need - 1]
      np.testing.assert_array_equal(kept[r], want)
  np.testing.assert_array_equal(np.asarray(decoding.topp_mask(jnp.asarray(logits), jnp.float32(0.0))), logits)


@pytest.mark.slow
def test_sampled_frequencies_match_the_filtered_softmax():
  n = 20000
  logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)

  cache = {'logits': jnp.broadcast_to(jnp.asarray(logits), (n, logits.shape[0]))}  # an input: no constant folding

  def step_fn(tokens, cache):
    return cache['logits'], cache

  @jax.jit
  def first_tokens(cache, key, temperature, top_p):
    return decoding.sample(step_fn, cache, n, 1, key, temperature=temperature, top_k=0, top_p=top_p).tokens[:, 0]

  def check(tokens, probs):
    freq = np.bincount(np.asarray(tokens), minlength=logits.shape[0]) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)

  p = np.exp(logits) / np.exp(logits).sum()
  check(decoding.sample(step_fn, cache, n, 1, jax.random.key(11), top_k=0).tokens[:, 0], p)  # unfiltered path
  check(first_tokens(cache, jax.random.key(12), 2.0, 0.0), np.exp(logits / 2) / np.exp(logits / 2).sum())
  # Nucleus 0.8: p = [.57, .21, .13, ...]: the smallest prefix reaching 0.8 is the first three tokens.
  assert p[:2].sum() < 0.8 <= p[:3].sum()
  check(first_tokens(cache, jax.random.key(14), 1.0, 0.8), np.where(np.arange(6) < 3, p, 0) / p[:3].sum())
  top2 = decoding.sample(step_fn, cache, n, 1, jax.random.key(13), top_k=2).tokens[:, 0]
  check(top2, np.where(np.arange(6) < 2, p, 0) / p[:2].sum())


def _t5x_decoding():
  """t5x's own decoding module from a t5x checkout named by FLANX_T5X_DIR (t5x is not installable here).

  Only t5x/decoding.py and t5x/binary_search.py are loaded (they need jax, flax, numpy); t5x/__init__.py,
  which imports the rest of t5x, is bypassed with a bare package object.
  """
  import os
  import sys
  import types
  root = os.environ.get('FLANX_T5X_DIR')
  if not root or not os.path.isfile(os.path.join(root, 't5x', 'decoding.py')):
    pytest.skip('set FLANX_T5X_DIR to a t5x checkout (with t5x/decoding.py) to compare against t5x itself')
  if 't5x' not in sys.modules:
    package = types.ModuleType('t5x')
    package.__path__ = [os.path.join(root, 't5x')]
    sys.modules['t5x'] = package
  import importlib
  return importlib.import_module('t5x.decoding')


class T5xToy(Toy):
  """The toy with t5x's cache naming (`cache_index` is not tiled per beam) and tokens_to_logits signature."""

  def cache(self):
    cache = super().cache()
    cache['cache_index'] = cache.pop('index')
    return cache

  def step_fn(self, tokens, cache):
    cache = dict(cache, index=cache['cache_index'])
    del cache['cache_index']
    logits, new = super().step_fn(tokens, cache)
    new['cache_index'] = new.pop('index')
    return logits, new

  def tokens_to_logits(self, state):
    return self.step_fn(state.cur_token, state.cache)


def test_bitwise_equal_to_t5x_itself():
  """Beam search (with and without prompts) and sampling (top_k, top_p, num_decodes, prompts, max_decode_steps)
  give t5x's tokens and scores, t5x's beams reversed to best first."""
  t5x = _t5x_decoding()
  batch, vocab, max_len = 16, 12, 8
  toy = T5xToy(vocab, max_len + 1, batch, seed=30, scale=1.5)
  rng = np.random.default_rng(3)
  prompt = rng.integers(2, vocab, (batch, 3)) * (np.arange(3) < rng.integers(0, 4, (batch, 1)))
  inputs = np.zeros((batch, max_len), np.int32)
  inputs[:, 1:4] = prompt
  for with_prompt in (False, True):
    x = jnp.asarray(inputs if with_prompt else np.zeros_like(inputs))
    want_tokens, want_scores = jax.jit(lambda c, x: t5x.beam_search(x, c, toy.tokens_to_logits, eos_id=EOS,
                                                                     num_decodes=4, alpha=0.6))(toy.cache(), x)
    got = jax.jit(lambda c, p: decoding.beam_search(toy.step_fn, c, batch, 4, max_len, alpha=0.6, prompt=p))(
        toy.cache(), x[:, 1:] if with_prompt else None)
    np.testing.assert_array_equal(got.all_tokens, np.asarray(want_tokens)[:, ::-1])
    np.testing.assert_array_equal(got.all_scores, np.asarray(want_scores)[:, ::-1])
  key = jax.random.PRNGKey(7)
  for options in (dict(topk=0), dict(topk=3), dict(topk=0, topp=0.7), dict(topk=0, max_decode_steps=3)):
    x = jnp.asarray(inputs)
    want_tokens, want_scores = jax.jit(lambda c, x: t5x.temperature_sample(
        x, c, toy.tokens_to_logits, eos_id=EOS, decode_rng=key, num_decodes=3, temperature=0.8, **options))(
            toy.cache(), x)
    flanx_options = dict(top_k=options['topk'], top_p=options.get('topp', 0.0),
                         max_decode_steps=options.get('max_decode_steps'))
    got = jax.jit(lambda c, p: decoding.sample(toy.step_fn, c, batch, max_len, key, temperature=0.8, num_decodes=3,
                                               prompt=p, **flanx_options))(toy.cache(), x[:, 1:])
    np.testing.assert_array_equal(got.all_tokens, np.asarray(want_tokens)[:, ::-1])
    # Bit for bit under XLA's default optimizations; the suite's JAX_DISABLE_MOST_OPTIMIZATIONS (conftest) may
    # fuse t5x's log-softmax (inside a lax.cond) differently from flanx's: then they differ in the last bit.
    np.testing.assert_allclose(got.all_scores, np.asarray(want_scores)[:, ::-1], rtol=2e-6, atol=2e-6)
