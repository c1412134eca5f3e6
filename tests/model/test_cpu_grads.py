"""The network's hand-written gradients (matmul, attention dots) equal autodiff's, and on CPU run in YNNPACK."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import hlo_dots
from flanx.model import network


def _random(shape, seed, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(dtype)


def _grads(fn, *args):
  return jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * _random(fn(*args).shape, 9)),
                  argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize('x_shape', [(3, 5, 16), (7, 16)])
def test_matmul_gradient_equals_autodiff(x_shape):
  x, kernel = _random(x_shape, 0), _random((16, 12), 1)
  plain = lambda x, k: jnp.einsum('...d,df->...f', x, k)
  np.testing.assert_allclose(network.matmul(x, kernel), plain(x, kernel), rtol=1e-6)
  for got, want in zip(_grads(network.matmul, x, kernel), _grads(plain, x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_attention_dot_gradients_equal_autodiff():
  q, k, v = _random((2, 3, 5, 8), 0), _random((2, 3, 7, 8), 1), _random((2, 3, 7, 8), 2)
  weights = jax.nn.softmax(_random((2, 3, 5, 7), 3))
  scores = lambda q, k: jnp.einsum('bhqd,bhkd->bhqk', q, k)
  values = lambda w, v: jnp.einsum('bhqk,bhkd->bhqd', w, v)
  for custom, plain, args in ((network.attention_scores, scores, (q, k)), (network.attention_values, values,
                                                                             (weights, v))):
    np.testing.assert_allclose(custom(*args), plain(*args), rtol=1e-6)
    for got, want in zip(_grads(custom, *args), _grads(plain, *args)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_gradients_keep_their_dtypes():
  x, kernel = _random((4, 6, 16), 0, jnp.bfloat16), _random((16, 8), 1, jnp.bfloat16)
  dx, dk = _grads(network.matmul, x, kernel)
  assert dx.dtype == jnp.bfloat16 and dk.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dk, np.float32),
                             np.asarray(_grads(lambda a, b: jnp.einsum('...d,df->...f', a, b), x, kernel)[1],
                                        np.float32), rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='YNNPACK is XLA:CPU')
def test_weight_gradient_dots_run_in_ynnpack_on_cpu():
  """Autodiff's Xᵀ·dY dot falls back to Eigen on XLA:CPU; the custom gradient's dots all go to YNNPACK."""
  x, kernel = _random((512, 256), 0), _random((256, 384), 1)
  backends = {}
  for name, fn in (('plain', lambda x, k: jnp.einsum('td,df->tf', x, k)), ('custom', network.matmul)):
    grad = jax.jit(jax.grad(lambda x, k, fn=fn: jnp.sum(jnp.tanh(fn(x, k))), argnums=(0, 1)))
    found = hlo_dots.dots(grad.lower(x, kernel).compile().as_text())
    backends[name] = sorted(d['backend'] for d in found)
  if 'eigen' not in backends['plain']:
    pytest.skip(f'this XLA:CPU runs the plain weight-gradient dot in YNNPACK already: {backends["plain"]}')
  assert backends['custom'] == ['ynnpack'] * 3, backends


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='YNNPACK is XLA:CPU')
def test_attention_gradient_dots_run_in_ynnpack_on_cpu():
  q, k, v = _random((2, 3, 32, 16), 0), _random((2, 3, 48, 16), 1), _random((2, 3, 48, 16), 2)

  def f(q, k, v):
    return jnp.sum(jnp.tanh(network.attention_values(jax.nn.softmax(network.attention_scores(q, k)), v)))

  found = hlo_dots.dots(jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(q, k, v).compile().as_text())
  assert [d['backend'] for d in found] == ['ynnpack'] * 6, [(d['lhs_shape'], d['backend']) for d in found]


def test_bfloat16_matmul_accumulates_in_float32_and_rounds_once():
  # Reference: numpy's float32 product of the bf16 values, rounded to bf16 once.
  x, kernel = _random((64, 96), 0, jnp.bfloat16), _random((96, 32), 1, jnp.bfloat16)
  want = (np.asarray(x, np.float32) @ np.asarray(kernel, np.float32)).astype(jnp.bfloat16)
  got = jax.jit(network.matmul)(x, kernel)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-2, atol=1e-2)


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the bf16 rewrite is XLA:CPU')
def test_bfloat16_projections_and_their_gradients_stay_bf16_dots_on_cpu(tiny_config):
  """XLA:CPU turns a bf16-output dot into a float32 dot (converts around it, float32 speed); every projection of
  a bf16 model (forward, input and weight gradients) reads bf16 operands and accumulates into float32."""
  config = tiny_config(dtype='bfloat16', vocab_size=256, d_model=64, d_kv=16, d_ff=128)
  params = network.init_params(config, jax.random.key(0))
  enc, dec = jnp.ones((2, 32), jnp.int32), jnp.ones((2, 16), jnp.int32)

  def loss(p):
    logits = network.Transformer(config).apply({'params': p}, enc, dec)
    return jnp.sum(jax.nn.log_softmax(logits.astype(jnp.float32))[..., 3])

  found = hlo_dots.dots(jax.jit(jax.grad(loss)).lower(params).compile().as_text())
  projections = [(d['lhs_dtype'], d['rhs_dtype']) for d in found
                 if re.search(r'/(query|key|value|out|wi_0|wi_1|wo)/', d['op_name'])]
  layers = config.num_encoder_layers * 7 + config.num_decoder_layers * 11  # Dense layers of the gated-gelu model
  assert projections == [('bf16', 'bf16')] * (3 * layers), projections
