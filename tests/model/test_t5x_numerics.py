"""Model numerics a t5x user's training depends on, checked against formulas (t5x's examples/t5 network choices):
attention-probability dropout shared by all queries, element-wise dropout of the encoder output, float32 logits
in a bfloat16 model, t5x's initialisers, and `gelu` as the tanh approximation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import network


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def test_plain_gelu_is_the_tanh_approximation(tiny_config):
  config = tiny_config(activation='gelu')
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, config.d_model)).astype(np.float32) * 3
  wi = rng.standard_normal((config.d_model, config.d_ff)).astype(np.float32) * 0.3
  wo = rng.standard_normal((config.d_ff, config.d_model)).astype(np.float32) * 0.1
  params = {'wi': {'kernel': wi}, 'wo': {'kernel': wo}}
  out = network.MlpBlock(config, deterministic=True).apply({'params': params}, x)
  expected = _gelu_tanh(x.astype(np.float64) @ wi) @ wo
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  erf = 0.5 * (x.astype(np.float64) @ wi) * (1 + np.vectorize(math.erf)((x.astype(np.float64) @ wi) / math.sqrt(2)))
  assert np.abs(erf @ wo - expected).max() > 1e-4  # the two forms are distinguishable here


def test_attention_dropout_is_shared_by_all_queries(tiny_config):
  """t5x drops attention probabilities with one mask per (batch, head, key), broadcast over queries."""
  config = tiny_config(dropout_rate=0.5)
  rng = np.random.default_rng(1)
  batch, length = 2, 16
  query = np.broadcast_to(rng.standard_normal((batch, 1, config.d_model)), (batch, length, config.d_model))
  keys = rng.standard_normal((batch, length, config.d_model))
  mask = np.ones((batch, 1, length, length), bool)
  attention = network.Attention(config, deterministic=False)
  params = attention.init(jax.random.key(0), query, keys, mask, None)
  out = attention.apply(params, jnp.asarray(query, jnp.float32), jnp.asarray(keys, jnp.float32), mask, None,
                        rngs={'dropout': jax.random.key(3)})
  deterministic = network.Attention(config, deterministic=True).apply(params, query, keys, mask, None)
  # Identical queries see identical (dropped-out) probabilities, so every query position gets the same output…
  np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), rtol=1e-5, atol=1e-6)
  # …which differs from the deterministic one (dropout really applied) in every batch row.
  assert all(np.abs(out[b] - deterministic[b]).max() > 1e-3 for b in range(batch))


@pytest.mark.slow
def test_encoder_output_dropout_is_elementwise(tiny_config, random_params):
  """t5x's network drops the final encoder output element-wise (the other dropouts broadcast over length)."""
  config = tiny_config(dropout_rate=0.5)
  params = random_params(config, 0)
  tokens = np.random.default_rng(2).integers(2, config.vocab_size, (2, 24)).astype(np.int32)
  encoded, state = network.Transformer(config).apply(
      {'params': params}, tokens, deterministic=False, method=network.Transformer.encode,
      rngs={'dropout': jax.random.key(5)}, capture_intermediates=True, mutable=['intermediates'])
  normed = np.asarray(state['intermediates']['encoder']['encoder_norm']['__call__'][0])
  encoded = np.asarray(encoded)
  live = np.abs(normed).min(axis=1) > 0  # [batch, feature]: columns the earlier broadcast dropouts left nonzero
  assert live.mean() > 0.5
  kept = encoded != 0
  # Inverted dropout: kept entries are scaled by 1 / (1 - rate).
  np.testing.assert_allclose(encoded[kept], 2 * normed[kept], rtol=1e-6)
  assert 0.4 < 1 - kept[np.broadcast_to(live[:, None], kept.shape)].mean() < 0.6
  # Element-wise: in every live column some positions are dropped and some kept (broadcast: all or none).
  per_column = kept.mean(axis=1)[live]
  assert ((per_column > 0) & (per_column < 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize('tied', [False, True])
def test_bfloat16_model_computes_logits_in_float32(tiny_config, random_params, tied):
  """t5x: logits_dense runs in float32; the tied head attends in float32 (then scales by d_model**-0.5)."""
  config = tiny_config(dtype='bfloat16', tie_embeddings=tied)
  params = random_params(config, 4)
  rng = np.random.default_rng(4)
  enc = rng.integers(2, config.vocab_size, (2, 7)).astype(np.int32)
  dec = rng.integers(2, config.vocab_size, (2, 5)).astype(np.int32)
  logits, state = network.Transformer(config).apply({'params': params}, enc, dec, capture_intermediates=True,
                                                    mutable=['intermediates'])
  normed = state['intermediates']['decoder']['decoder_norm']['__call__'][0]
  assert normed.dtype == jnp.bfloat16
  y = np.asarray(normed.astype(jnp.float32), np.float64)
  if tied:
    expected = y @ params['token_embedder']['embedding'].astype(np.float64).T / math.sqrt(config.d_model)
  else:
    expected = y @ params['decoder']['logits_dense']['kernel'].astype(np.float64)
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


def _truncated_normal_std_factor():
  """Standard deviation of a unit normal truncated to [-2, 2] (jax's truncated_normal), from the closed form."""
  phi = math.exp(-2.0) / math.sqrt(2 * math.pi)  # density at 2
  mass = math.erf(2 / math.sqrt(2))  # P(|z| < 2)
  return math.sqrt(1 - 2 * 2 * phi / mass)


@pytest.mark.slow
def test_initialisation_follows_t5x(tiny_config):
  """t5x's examples/t5 network: embedding N(0, 1); attention variance-scaling normal (fan_in, query /sqrt(d_kv));
  MLP and logits variance-scaling truncated normal (fan_in); relative-position table uniform (fan_avg)."""
  config = tiny_config(vocab_size=512, d_model=256, d_kv=64, num_heads=4, d_ff=512, num_encoder_layers=1,
                       num_decoder_layers=1)
  params = jax.tree.map(np.asarray, network.init_params(config, jax.random.key(0)))
  d, inner, d_ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
  layer = params['encoder']['layers_0']
  truncation = _truncated_normal_std_factor()
  assert abs(truncation - 0.8796256610342398) < 1e-9  # the constant jax divides by

  def check_normal(x, std, truncated):
    assert abs(x.std() / std - 1) < 0.04, (x.std(), std)
    bound = 2 * std / truncation
    if truncated:
      assert np.abs(x).max() <= bound * (1 + 1e-6)
    else:
      assert np.abs(x).max() > bound * 1.2  # tails beyond the truncation point exist

  check_normal(params['token_embedder']['embedding'], 1.0, truncated=False)
  check_normal(layer['attention']['query']['kernel'], (d * config.d_kv) ** -0.5, truncated=False)
  check_normal(layer['attention']['key']['kernel'], d ** -0.5, truncated=False)
  check_normal(layer['attention']['value']['kernel'], d ** -0.5, truncated=False)
  check_normal(layer['attention']['out']['kernel'], inner ** -0.5, truncated=False)
  check_normal(layer['mlp']['wi_0']['kernel'], d ** -0.5, truncated=True)
  check_normal(layer['mlp']['wi_1']['kernel'], d ** -0.5, truncated=True)
  check_normal(layer['mlp']['wo']['kernel'], d_ff ** -0.5, truncated=True)
  check_normal(params['decoder']['logits_dense']['kernel'], d ** -0.5, truncated=True)
  table = params['encoder']['relpos_bias']['rel_embedding']  # [heads, buckets]: fan_in heads, fan_out buckets
  limit = math.sqrt(3.0 / ((config.num_heads + config.relpos_buckets) / 2))
  assert np.abs(table).max() <= limit and np.abs(table).max() > 0.8 * limit
  assert abs(table.mean()) < 0.2 * limit
  np.testing.assert_array_equal(layer['pre_attention_layer_norm']['scale'], 1.0)
