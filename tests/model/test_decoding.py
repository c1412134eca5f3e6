"""flanx.model.decoding on a toy history-dependent Markov model, against brute force in numpy."""

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

  def log_probs(self, row, prefix):
    """Next-token log-probs (float64) after generating `prefix` (start token 0 is fed first)."""
    fed = [0] + list(prefix)
    x = (self.table[len(prefix), fed[-1]].astype(np.float64) + self.history[sum(fed) % MOD] + self.bias[row])
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def numpy_greedy(toy, row, max_len):
  seq, score = [], 0.0
  while len(seq) < max_len and (not seq or seq[-1] != EOS):
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


def test_beam_one_equals_greedy_when_no_sequence_ends():
  batch, vocab, max_len = 4, 6, 5
  toy = Toy(vocab, max_len, batch, seed=3, eos_shift=-1e4)  # EOS never wins: beams never finish
  beam = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, 1, max_len))(toy.cache())
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)
  np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)  # unfinished: raw log-probs


def test_beam_one_without_length_penalty_is_greedy_even_past_a_runner_up_eos():
  """Step 1: token 2 p=.6 beats EOS p=.4, then EOS p=.5: greedy gives '2 EOS' (.3); the runner-up EOS (.4,
  rank 2 of 2 candidates) is not admitted, so beam 1 agrees (t5x's rule would return 'EOS')."""
  vocab = 3
  first = np.log(np.array([1e-9, 0.4, 0.6]))
  second = np.log(np.array([0.25, 0.5, 0.25]))

  def step_fn(tokens, cache):
    logits = jnp.where(cache['i'] == 0, jnp.asarray(first), jnp.asarray(second))
    return jnp.broadcast_to(logits, (tokens.shape[0], vocab)).astype(jnp.float32), {'i': cache['i'] + 1}

  greedy = decoding.greedy(step_fn, {'i': jnp.zeros((), jnp.int32)}, 1, 4)
  beam = decoding.beam_search(step_fn, {'i': jnp.zeros((), jnp.int32)}, 1, 1, 4, alpha=0.0)
  assert greedy.tokens[0].tolist() == [2, EOS, 0, 0]
  assert beam.tokens[0].tolist() == greedy.tokens[0].tolist()
  np.testing.assert_allclose(beam.scores[0], np.log(0.3), rtol=1e-5)


@pytest.mark.parametrize('seed', [4, 5])
def test_beam_one_without_length_penalty_equals_greedy_when_sequences_end(seed):
  batch, vocab, max_len = 6, 5, 6
  toy = Toy(vocab, max_len, batch, seed=seed, eos_shift=1.0)
  beam = jax.jit(lambda c: decoding.beam_search(toy.step_fn, c, batch, 1, max_len, alpha=0.0))(toy.cache())
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(toy.cache())
  assert (greedy.lengths < max_len).any()  # some rows really end early
  np.testing.assert_array_equal(beam.tokens, greedy.tokens)


def test_sampling_reproducible_and_degenerate_filters_are_greedy():
  batch, vocab, max_len = 8, 7, 6
  toy = Toy(vocab, max_len, batch, seed=4, scale=1.0, eos_shift=0.5)
  cache = toy.cache()

  # temperature and top_p traced: one compilation per top_k serves every setting below.
  @jax.jit
  def run_traced(cache, key, temperature, top_p):
    return decoding.sample(toy.step_fn, cache, batch, max_len, key, temperature=temperature, top_p=top_p)

  def run(key, temperature=1.0, top_p=0.0):
    return run_traced(cache, key, jnp.float32(temperature), jnp.float32(top_p))

  a, b = run(jax.random.key(7)), run(jax.random.key(7))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, run(jax.random.key(8)).tokens)
  greedy = jax.jit(lambda c: decoding.greedy(toy.step_fn, c, batch, max_len))(cache)
  key = jax.random.key(0)
  np.testing.assert_array_equal(run(key, top_p=1e-6).tokens, greedy.tokens)
  np.testing.assert_array_equal(run(key, temperature=0.0).tokens, greedy.tokens)
  # top_k=1 with model log-probs as scores: exactly greedy decoding, scores included.
  top1 = jax.jit(lambda c, key: decoding.sample(toy.step_fn, c, batch, max_len, key, top_k=1,
                                                rescale_log_probs=False))(cache, key)
  np.testing.assert_array_equal(top1.tokens, greedy.tokens)
  np.testing.assert_allclose(top1.scores, greedy.scores, rtol=1e-5)
  # A Python temperature of 0 is plain greedy decoding.
  cold = decoding.sample(toy.step_fn, cache, batch, max_len, key, 0.0)
  np.testing.assert_array_equal(cold.tokens, greedy.tokens)
  # Default scores: log-probs under the sampling distribution (softmax of logits / temperature).
  temperature = 0.5
  out = run(key, temperature=temperature)
  for r in range(batch):
    seq = out.tokens[r].tolist()[:int(out.lengths[r])]
    want = 0.0
    for j, token in enumerate(seq):
      x = toy.log_probs(r, seq[:j]) / temperature
      want += x[token] - np.log(np.sum(np.exp(x)))
    np.testing.assert_allclose(out.scores[r], want, rtol=1e-5)


def test_sampled_frequencies_match_the_filtered_softmax():
  n = 20000
  logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)

  cache = {'logits': jnp.broadcast_to(jnp.asarray(logits), (n, logits.shape[0]))}  # an input: no constant folding

  def step_fn(tokens, cache):
    return cache['logits'], cache

  @jax.jit
  def first_tokens(cache, key, temperature, top_p):
    return decoding.sample(step_fn, cache, n, 1, key, temperature=temperature, top_p=top_p).tokens[:, 0]

  def check(tokens, probs):
    freq = np.bincount(np.asarray(tokens), minlength=logits.shape[0]) / n
    sigma = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)

  p = np.exp(logits) / np.exp(logits).sum()
  check(decoding.sample(step_fn, cache, n, 1, jax.random.key(11)).tokens[:, 0], p)  # unfiltered path
  check(first_tokens(cache, jax.random.key(12), 2.0, 0.0), np.exp(logits / 2) / np.exp(logits / 2).sum())
  # Nucleus 0.8: p = [.57, .21, .13, ...]: the smallest prefix reaching 0.8 is the first three tokens.
  assert p[:2].sum() < 0.8 <= p[:3].sum()
  check(first_tokens(cache, jax.random.key(14), 1.0, 0.8), np.where(np.arange(6) < 3, p, 0) / p[:3].sum())
  top2 = decoding.sample(step_fn, cache, n, 1, jax.random.key(13), top_k=2).tokens[:, 0]
  check(top2, np.where(np.arange(6) < 2, p, 0) / p[:2].sum())
