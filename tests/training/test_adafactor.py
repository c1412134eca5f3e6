"""flanx.training.adafactor against an independent numpy Adafactor (paper's Algorithms 4/5) and optax.adafactor."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from flanx.training import schedules
from flanx.training.adafactor import adafactor


def paper_matrix_step(x, g, r, c, t, lr, eps1=1e-30, eps2=1e-3, d=1.0, decay=0.8):
  """Shazeer & Stern Alg. 4 (matrix, factored): row/column *sums* R, C; V = R C / (1^T R). float64."""
  beta2 = 1.0 - t ** (-decay)  # t counts from 1
  g2 = g * g + eps1
  r = beta2 * r + (1 - beta2) * g2.sum(axis=1)
  c = beta2 * c + (1 - beta2) * g2.sum(axis=0)
  v = np.outer(r, c) / r.sum()
  u = g / np.sqrt(v)
  u = u / max(1.0, np.sqrt(np.mean(u * u)) / d)
  alpha = max(eps2, np.sqrt(np.mean(x * x))) * lr
  return x - alpha * u, r, c


def paper_vector_step(x, g, v, t, lr, eps1=1e-30, eps2=1e-3, d=1.0, decay=0.8):
  """Shazeer & Stern Alg. 5 (unfactored second moment). float64."""
  beta2 = 1.0 - t ** (-decay)
  v = beta2 * v + (1 - beta2) * (g * g + eps1)
  u = g / np.sqrt(v)
  u = u / max(1.0, np.sqrt(np.mean(u * u)) / d)
  alpha = max(eps2, np.sqrt(np.mean(x * x))) * lr
  return x - alpha * u, v


def _random_tree(rng, shapes, scale=1.0):
  return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


SHAPES = {
    'w': (6, 10),      # factored: rows = axis 0 (6), cols = axis 1 (10)
    'w_t': (12, 5),    # factored the other way round: rows = axis 1 (5), cols = axis 0 (12)
    'small': (2, 3),   # below min_dim_size_to_factor: unfactored
    'b': (7,),         # vector: unfactored
    'tiny': (),        # scalar
}


def _run_reference(params, grads_per_step, lrs):
  """Runs the paper algorithms with the factoring t5x's heuristic picks (min_dim_size_to_factor=4)."""
  x = {k: v.astype(np.float64) for k, v in params.items()}
  state = {'w': (np.zeros(6), np.zeros(10)), 'w_t': (np.zeros(5), np.zeros(12)),
           'small': np.zeros((2, 3)), 'b': np.zeros(7), 'tiny': np.zeros(())}
  history = []
  for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
    g = {k: v.astype(np.float64) for k, v in grads.items()}
    x['w'], *state['w'] = paper_matrix_step(x['w'], g['w'], *state['w'], t, lr)
    xt, *state['w_t'] = paper_matrix_step(x['w_t'].T, g['w_t'].T, *state['w_t'], t, lr)
    x['w_t'] = xt.T
    for k in ('small', 'b', 'tiny'):
      x[k], state[k] = paper_vector_step(x[k], g[k], state[k], t, lr)
    history.append({k: v.copy() for k, v in x.items()})
  return history, state


def test_matches_paper_algorithm_over_several_steps():
  rng = np.random.default_rng(0)
  params = _random_tree(rng, SHAPES)
  params['b'] *= 1e-4  # rms below epsilon2: exercises the parameter-scale floor
  steps = 5
  grads = [_random_tree(rng, SHAPES, scale=10.0 ** -k) for k in range(steps)]
  schedule = schedules.rsqrt_decay(learning_rate=0.1, warmup_steps=2)
  lrs = [0.1 / np.sqrt(max(i, 2)) for i in range(steps)]  # lr at the count *before* each update
  expected, ref_state = _run_reference(params, grads, lrs)

  tx = adafactor(schedule, min_dim_size_to_factor=4)
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  update = jax.jit(tx.update)
  for i in range(steps):
    u, state = update(grads[i], state, p)
    p = optax.apply_updates(p, u)
    for k in SHAPES:
      np.testing.assert_allclose(p[k], expected[i][k], rtol=1e-5, atol=1e-7, err_msg=f'step {i} {k}')
  assert int(state.count) == steps
  # Our state keeps means, the paper sums: v_row = R / n_cols, v_col = C / n_rows.
  np.testing.assert_allclose(state.v_row['w'], ref_state['w'][0] / 10, rtol=1e-5)
  np.testing.assert_allclose(state.v_col['w'], ref_state['w'][1] / 6, rtol=1e-5)
  np.testing.assert_allclose(state.v_row['w_t'], ref_state['w_t'][0] / 12, rtol=1e-5)
  np.testing.assert_allclose(state.v['b'], ref_state['b'], rtol=1e-5)
  assert state.v['w'].shape == (1,) and state.v_row['b'].shape == (1,)  # t5x-style placeholders


@pytest.mark.slow
def test_default_min_dim_factors_large_matrix():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((128, 160)).astype(np.float32)
  g = rng.standard_normal((128, 160)).astype(np.float32)
  tx = adafactor(0.01)
  state = tx.init({'k': x})
  assert state.v_row['k'].shape == (128,) and state.v_col['k'].shape == (160,)
  u, _ = tx.update({'k': g}, state, {'k': x})
  want, _, _ = paper_matrix_step(x.astype(np.float64), g.astype(np.float64), np.zeros(128), np.zeros(160), 1, 0.01)
  np.testing.assert_allclose(u['k'], want - x, rtol=1e-5)  # compare updates: x + u cancels in float32


@pytest.mark.parametrize('shape', [(128, 9000), (9000, 128)])
def test_wide_matrices_match_the_paper(shape):
  """On CPU the means over a leading axis of a wide g² are summed slice by slice (adafactor._mean): same update."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal(shape).astype(np.float32)
  g = rng.standard_normal(shape).astype(np.float32)
  tx = adafactor(0.01)
  state = tx.init({'k': x})
  u, state = jax.jit(tx.update)({'k': g}, state, {'k': x})
  r, c = np.zeros(shape[0]), np.zeros(shape[1])
  want, want_r, want_c = paper_matrix_step(x.astype(np.float64), g.astype(np.float64), r, c, 1, 0.01)
  np.testing.assert_allclose(u['k'], want - x, rtol=1e-5, atol=1e-7)
  small, wide = (0, 1) if shape[0] < shape[1] else (1, 0)
  np.testing.assert_allclose(state.v_row['k'], (want_r, want_c)[small] / shape[wide], rtol=1e-5)
  np.testing.assert_allclose(state.v_col['k'], (want_r, want_c)[wide] / shape[small], rtol=1e-5)


@pytest.mark.slow
def test_scanned_layers_are_independent_blocks():
  """A 'layers' axis is a batch axis: each layer is updated exactly like its own unscanned matrix."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((3, 6, 10)).astype(np.float32) * np.array([1.0, 10.0, 0.1])[:, None, None]
  g = [rng.standard_normal((3, 6, 10)).astype(np.float32) * 10.0 ** -k for k in range(3)]
  tx = adafactor(0.05, min_dim_size_to_factor=4, param_axes={'k': P('layers', 'embed', 'mlp')})
  state = tx.init({'k': x})
  assert state.v_row['k'].shape == (3, 6) and state.v_col['k'].shape == (3, 10)
  p = {'k': jnp.asarray(x)}
  ref = [(x[i].astype(np.float64), np.zeros(6), np.zeros(10)) for i in range(3)]
  for t in range(3):
    u, state = tx.update({'k': g[t]}, state, p)
    p = optax.apply_updates(p, u)
    ref = [paper_matrix_step(xi, g[t][i].astype(np.float64), r, c, t + 1, 0.05)
           for i, (xi, r, c) in enumerate(ref)]
    np.testing.assert_allclose(p['k'], np.stack([r[0] for r in ref]), rtol=1e-5, atol=1e-7)
  axes = tx.state_logical_axes({'k': x})
  assert axes.v_row['k'] == P('layers', 'embed') and axes.v_col['k'] == P('layers', 'mlp')
  assert axes.v['k'] == P() and axes.count == P()


@pytest.mark.slow
def test_rank3_uses_logical_rules():
  """'embed' rows x ('heads', 'kv') columns factor like the [embed, heads*kv] matrix."""
  rng = np.random.default_rng(3)
  x = rng.standard_normal((4, 3, 5)).astype(np.float32)
  g = rng.standard_normal((4, 3, 5)).astype(np.float32)
  axes = {'k': ('embed', 'heads', 'kv')}
  tx = adafactor(0.05, param_axes=axes)  # explicit rules: no min_dim_size test (as t5x)
  state = tx.init({'k': x})
  assert state.v_row['k'].shape == (4,) and state.v_col['k'].shape == (3, 5)
  u, _ = tx.update({'k': g}, state, {'k': x})
  want, _, _ = paper_matrix_step(x.reshape(4, 15).astype(np.float64), g.reshape(4, 15).astype(np.float64),
                                 np.zeros(4), np.zeros(15), 1, 0.05)
  np.testing.assert_allclose(np.asarray(u['k']).reshape(4, 15), want - x.reshape(4, 15), rtol=1e-5)
  spec = tx.state_logical_axes({'k': x})
  assert spec.v_row['k'] == P('embed') and spec.v_col['k'] == P('heads', 'kv')


def test_bad_axes_are_reported_with_the_param_path():
  tx = adafactor(0.1, param_axes={'enc': {'k': ('embed', 'unknown_axis', 'mlp')}})
  with pytest.raises(ValueError, match=r"\['enc'\]\['k'\].*unknown_axis"):
    tx.init({'enc': {'k': jnp.zeros((2, 3, 4))}})
  tx = adafactor(0.1, param_axes={'k': ('embed',)})
  with pytest.raises(ValueError, match='rank 2'):
    tx.init({'k': jnp.zeros((2, 3))})


@pytest.mark.parametrize('beta1,weight_decay', [(None, None), (0.9, 1e-2)])
def test_coincides_with_optax_adafactor_on_matrices_and_vectors(beta1, weight_decay):
  """optax.adafactor implements the same heuristic Adafactor; for params of rank <= 2 without logical axes the
  two agree. What remains different (not exercised here): optax has no batch ('layers') axes or logical factor
  rules (it factors the two largest axes of any rank and averages rms over all axes, layers included) and keeps
  its second moments in the param dtype (float32 here; bf16 params would get bf16 state)."""
  rng = np.random.default_rng(4)
  params = {k: jnp.asarray(v) for k, v in _random_tree(rng, SHAPES).items()}
  ours = adafactor(0.02, min_dim_size_to_factor=4, beta1=beta1, weight_decay_rate=weight_decay)
  theirs = optax.adafactor(0.02, min_dim_size_to_factor=4, momentum=beta1, weight_decay_rate=weight_decay)
  s1, s2 = ours.init(params), theirs.init(params)
  p1 = p2 = params
  update1, update2 = jax.jit(ours.update), jax.jit(theirs.update)
  for step in range(4):
    grads = {k: jnp.asarray(v) for k, v in _random_tree(rng, SHAPES, scale=3.0 ** -step).items()}
    u1, s1 = update1(grads, s1, p1)
    u2, s2 = update2(grads, s2, p2)
    for k in SHAPES:
      np.testing.assert_allclose(u1[k], u2[k], rtol=1e-5, atol=1e-9, err_msg=f'step {step} {k}')
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)


def test_step_offset_restarts_decay_and_restored_count_freezes_moments():
  x = {'b': jnp.ones(4)}
  g1, g2 = {'b': jnp.full(4, 1.0)}, {'b': jnp.full(4, 100.0)}
  tx = adafactor(0.1, step_offset=1000)
  state = tx.init(x)._replace(count=jnp.asarray(1000, jnp.int32))
  _, state = tx.update(g1, state, x)
  np.testing.assert_allclose(state.v['b'], 1.0, rtol=1e-6)  # rho = 0 at the offset: v = g^2
  # Without the offset, a restored late count barely moves v: rho = 1 - 1001^-0.8.
  tx = adafactor(0.1)
  state = tx.init(x)._replace(count=jnp.asarray(1000, jnp.int32), v={'b': jnp.ones(4)})
  _, state = tx.update(g2, state, x)
  rho = 1 - 1001.0 ** -0.8
  np.testing.assert_allclose(state.v['b'], rho + (1 - rho) * 1e4, rtol=1e-5)


def test_schedules_match_t5x_formulas():
  steps = np.array([0, 1, 5, 10, 100, 10000, 40000])
  np.testing.assert_allclose([schedules.constant(5e-4)(s) for s in steps], 5e-4)
  warm = [float(schedules.linear_warmup(1e-3, warmup_steps=10)(s)) for s in steps]
  np.testing.assert_allclose(warm, np.maximum(1e-3 * np.minimum(1.0, steps / 10), 1e-8), rtol=1e-6)
  rsqrt = [float(schedules.rsqrt_decay(1.0, warmup_steps=10000)(s)) for s in steps]
  np.testing.assert_allclose(rsqrt, 1.0 / np.sqrt(np.maximum(steps, 10000)), rtol=1e-6)
  shifted = schedules.rsqrt_decay(1.0, warmup_steps=100, step_offset=1000)
  np.testing.assert_allclose(float(shifted(1400)), 1 / 20, rtol=1e-6)


@pytest.mark.slow
def test_scanned_state_follows_logical_names_and_converts_from_unscanned():
  """[layers, embed, joined_kv] with embed > joined_kv: t5x factors by names (rows = embed) where the unscanned
  layers use the size heuristic (rows = joined_kv); the updates agree and convert_state maps one to the other."""
  rng = np.random.default_rng(5)
  x = rng.standard_normal((2, 10, 6)).astype(np.float32)
  g = rng.standard_normal((2, 10, 6)).astype(np.float32)
  scanned = adafactor(0.1, min_dim_size_to_factor=4, param_axes={'k': P('layers', 'embed', 'joined_kv')})
  u, state = scanned.update({'k': g}, scanned.init({'k': x}), {'k': x})
  flat_axes = {f'l{i}': P('embed', 'joined_kv') for i in range(2)}
  flat = adafactor(0.1, min_dim_size_to_factor=4, param_axes=flat_axes)
  params = {f'l{i}': x[i] for i in range(2)}
  u_flat, state_flat = flat.update({f'l{i}': g[i] for i in range(2)}, flat.init(params), params)
  assert state.v_row['k'].shape == (2, 10) and state_flat.v_row['l0'].shape == (6,)
  # The rank-1 estimate v_row v_col / mean(v_row) does not depend on which axis is called the row.
  np.testing.assert_allclose(u['k'], np.stack([u_flat[f'l{i}'] for i in range(2)]), rtol=1e-5)
  stack = lambda tree: {'k': np.stack([tree['l0'], tree['l1']])}
  converted = scanned.convert_state(jax.tree.map(np.asarray, state_flat), params, flat_axes, {'k': x},
                                    {'k': P('layers', 'embed', 'joined_kv')}, restack=stack)
  for field in ('v_row', 'v_col'):
    np.testing.assert_allclose(getattr(converted, field)['k'], getattr(state, field)['k'], rtol=1e-5)
  assert scanned.state_logical_axes({'k': x}).v_row['k'] == P('layers', 'embed')
