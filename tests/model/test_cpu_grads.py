"""The network's hand-written gradients (matmul, attention dots) equal autodiff's, and on CPU run in YNNPACK."""

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
