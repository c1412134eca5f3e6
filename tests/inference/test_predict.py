"""Generation with the real model: jitted KV-cache decoding agrees with full forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import network as model_lib
from flanx.inference import predict
from flanx.model.config import T5Config

CONFIG = T5Config(vocab_size=40, d_model=24, d_kv=6, num_heads=3, d_ff=32, num_encoder_layers=2,
                  num_decoder_layers=2)


@pytest.fixture(scope='module')
def setup():
  params = model_lib.init_params(CONFIG, jax.random.key(3))
  rng = np.random.RandomState(0)
  tokens = rng.randint(2, CONFIG.vocab_size, (3, 9)).astype(np.int32)
  tokens[1, 6:] = 0  # padding in one row
  return params, jnp.asarray(tokens)


def full_forward_argmax(params, tokens, max_len):
  """Greedy decoding by re-running the whole model on the growing prefix (no cache).

  The decoder is causal, so position i of a forward pass over a zero-padded prefix buffer sees only
  tokens 0..i: one fixed shape, one compilation.
  """
  forward = jax.jit(lambda p, dec: model_lib.Transformer(CONFIG).apply({'params': p}, tokens, dec))
  out = np.zeros((tokens.shape[0], max_len), np.int32)
  done = np.zeros(tokens.shape[0], bool)
  for i in range(max_len):
    prefix = np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), out[:, :-1]], axis=1)
    step = np.asarray(jnp.argmax(forward(params, jnp.asarray(prefix))[:, i], -1))
    out[:, i] = np.where(done, 0, step)
    done |= step == 1
  return out


def test_greedy_with_cache_equals_argmax_of_full_forwards(setup):
  params, tokens = setup
  max_len = 7
  got, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=max_len)(params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(got), full_forward_argmax(params, tokens, max_len))


def test_beam_one_without_length_penalty_equals_greedy(setup):
  params, tokens = setup
  greedy, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=7)(params, tokens, 0)
  beam, _ = predict.make_predict_fn(CONFIG, mode='beam', beam_size=1, alpha=0.0, max_decode_length=7)(
      params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))


def test_sampling_is_seeded_and_top_k_one_is_greedy(setup):
  params, tokens = setup
  sample = predict.make_predict_fn(CONFIG, mode='sample', temperature=1.0, seed=5, max_decode_length=7)
  a, _ = sample(params, tokens, 0)
  b, _ = sample(params, tokens, 0)
  c, _ = sample(params, tokens, 1)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  top1, _ = predict.make_predict_fn(CONFIG, mode='sample', top_k=1, max_decode_length=7)(params, tokens, 0)
  greedy, _ = predict.make_predict_fn(CONFIG, mode='greedy', max_decode_length=7)(params, tokens, 0)
  np.testing.assert_array_equal(np.asarray(top1), np.asarray(greedy))


def test_trim_at_eos():
  assert predict.trim_at_eos(np.array([[5, 6, 1, 0], [7, 0, 0, 0], [1, 0, 0, 0]])) == [[5, 6], [7], []]
