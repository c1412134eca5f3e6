"""flanx's Adafactor against a numpy re-statement of t5x's Adafactor (t5x/adafactor.py semantics, written here).

Covers what t5x users set: logical-axis factor rules for stacked/scanned params (not sizes), the options
global_norm_clip_threshold, max_parameter_scale, skip_nan_updates, weight_decay_rate_lr_exponent, and the
state's one-to-one mapping to t5x's `param_states`, for every option.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import network
from flanx.training import adafactor as adafactor_lib
from flanx.training.adafactor import adafactor

# t5x's standard_logical_factor_rules (the subset these tests use), as plain strings.
T5X_RULES = {'vocab': 'col', 'embed': 'row', 'mlp': 'col', 'heads': 'col', 'kv': 'col', 'joined_kv': 'col',
             'relpos_buckets': None, 'layers': 'batch'}


def t5x_heuristic(shape, min_dim):
  if len(shape) < 2:
    return None
  order = np.argsort(shape, kind='stable')
  if shape[order[-2]] < min_dim:
    return None
  return (int(order[-2]),), (int(order[-1]),)


def t5x_rule(shape, names, factored=True, min_dim=128, rules=T5X_RULES):
  """(axes averaged for rms, (row axes, col axes) or None) the way t5x's set_param_axes + _parse_rule decide."""
  n = len(shape)
  if not factored:
    return tuple(range(n)), None
  if names is None or rules is None:
    return tuple(range(n)), t5x_heuristic(shape, min_dim)
  roles = [rules[x] for x in names]
  if 'row' not in roles or 'col' not in roles:
    roles = [None if r in ('row', 'col') else r for r in roles]
  batch = [i for i, r in enumerate(roles) if r == 'batch']
  if n <= 2 and not batch:
    return tuple(range(n)), t5x_heuristic(shape, min_dim)
  rows = tuple(i for i, r in enumerate(roles) if r == 'row')
  cols = tuple(i for i, r in enumerate(roles) if r == 'col')
  return tuple(i for i in range(n) if i not in batch), ((rows, cols) if rows else None)


def t5x_init(shape, rule, beta1):
  """t5x's init_param_state: v_row drops the column axes, v_col the row axes; (1,) placeholders."""
  _, fd = rule
  state = {k: np.zeros((1,)) for k in ('v_row', 'v_col', 'v', 'm')}
  if fd:
    state['v_row'] = np.zeros(np.delete(shape, fd[1]))
    state['v_col'] = np.zeros(np.delete(shape, fd[0]))
  else:
    state['v'] = np.zeros(shape)
  if beta1 is not None:
    state['m'] = np.zeros(shape)
  return state


def _rms(x, axes):
  return np.sqrt(np.mean(x * x, axis=axes, keepdims=True))


def t5x_step(params, grads, states, rules, step, lr, *, decay_rate=0.8, step_offset=0, clipping_threshold=1.0,
             beta1=None, weight_decay_rate=None, epsilon1=1e-30, epsilon2=1e-3, weight_decay_rate_lr_exponent=None,
             global_norm_clip_threshold=None, max_parameter_scale=None, skip_nan_updates=False, **_):
  """One t5x Adafactor update in float64 numpy: (new params, new states)."""
  grads = {k: np.asarray(g, np.float64) for k, g in grads.items()}
  if global_norm_clip_threshold:
    norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
    grads = {k: g * min(1.0, global_norm_clip_threshold / norm) for k, g in grads.items()}
  if weight_decay_rate_lr_exponent:
    weight_decay_rate = (weight_decay_rate or 1.0) * lr ** weight_decay_rate_lr_exponent
  rho = 1.0 - (step - step_offset + 1.0) ** -decay_rate
  new_params, new_states = {}, {}
  for k, x in params.items():
    x, g, old = np.asarray(x, np.float64), grads[k], states[k]
    averaged, fd = rules[k]
    s = dict(old)
    g2 = g * g + epsilon1
    if fd:
      rows, cols = fd
      s['v_row'] = rho * old['v_row'] + (1 - rho) * g2.mean(axis=cols)
      s['v_col'] = rho * old['v_col'] + (1 - rho) * g2.mean(axis=rows)
      rows_in_v_row = tuple(r - sum(c < r for c in cols) for r in rows)
      v_hat = (np.expand_dims(s['v_row'] / s['v_row'].mean(axis=rows_in_v_row, keepdims=True), cols)
               * np.expand_dims(s['v_col'], rows))
    else:
      s['v'] = v_hat = rho * old['v'] + (1 - rho) * g2
    y = g / np.sqrt(v_hat)
    if clipping_threshold is not None:
      y = y / np.maximum(1.0, _rms(y, averaged) / clipping_threshold)
    scale = np.maximum(_rms(x, averaged), epsilon2)
    if max_parameter_scale is not None:
      scale = np.minimum(scale, max_parameter_scale)
    sub = lr * scale * y
    if beta1 is not None:
      s['m'] = beta1 * old['m'] + (1 - beta1) * sub
      sub = s['m']
    new = (1 - weight_decay_rate) * x - sub if weight_decay_rate is not None else x - sub
    if skip_nan_updates:
      s = {n: np.where(np.isnan(s[n]), old[n], s[n]) for n in s}
      new = np.where(np.isnan(new), x, new)
    new_params[k], new_states[k] = new, s
  return new_params, new_states


# Params as a scanned T5 stack holds them, plus unscanned ones t5x factors by size.
SHAPES = {
    'wi': ((3, 64, 96), ('layers', 'embed', 'mlp')),     # t5x factors (names), the size heuristic would not
    'out': ((3, 32, 32), ('layers', 'joined_kv', 'embed')),  # square: rows along 'embed' (axis 2)
    'norm': ((3, 32), ('layers', 'embed')),               # per-layer unfactored, rms per layer
    'kernel': ((160, 256), ('joined_kv', 'embed')),       # rank 2: t5x ignores names, rows = smaller axis 0
    'rel': ((4, 32), ('heads', 'relpos_buckets')),        # small: unfactored
    'bias': ((7,), ('embed',)),
}


def _tree(rng, scale=1.0):
  return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, (s, _) in SHAPES.items()}


def _axes():
  return {k: a for k, (_, a) in SHAPES.items()}


def _run(options, steps=3, seed=0, nan_at=None, axes=True):
  """flanx and the t5x reference on the same params/grads; returns both (params, state) histories."""
  rng = np.random.default_rng(seed)
  params = _tree(rng)
  params['bias'] *= 1e-4  # below epsilon2: exercises the parameter-scale floor
  grads = [_tree(rng, 10.0 ** -k) for k in range(steps)]
  if nan_at is not None:
    grads[nan_at]['wi'][1, 2, 3] = np.nan
  lrs = [0.01 * (i + 1) for i in range(steps)]  # a schedule of the count
  ref_options = dict(options)
  factor_options = {k: ref_options.pop(k) for k in ('factored', 'factor_rules') if k in ref_options}
  rules = {k: t5x_rule(s, a if axes else None, factor_options.get('factored', True),
                       rules=T5X_RULES if factor_options.get('factor_rules', 1) is not None else None)
           for k, (s, a) in SHAPES.items()}
  ref_params = {k: v.astype(np.float64) for k, v in params.items()}
  ref_states = {k: t5x_init(SHAPES[k][0], rules[k], ref_options.get('beta1')) for k in SHAPES}
  tx = adafactor(lambda count: 0.01 * (count + 1), param_axes=_axes() if axes else None, **options)
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  update = jax.jit(tx.update)
  for i in range(steps):
    ref_params, ref_states = t5x_step(ref_params, grads[i], ref_states, rules, i, lrs[i], **ref_options)
    updates, state = update(jax.tree.map(jnp.asarray, grads[i]), state, p)
    p = jax.tree.map(lambda a, b: a + b, p, updates)
  return (p, state), (ref_params, ref_states), rules


def _assert_matches(ours, ref, rtol=2e-5, atol=1e-7):
  (p, state), (ref_params, ref_states) = ours, ref
  for k in SHAPES:
    np.testing.assert_allclose(p[k], ref_params[k], rtol=rtol, atol=atol, err_msg=k)
    for slot in adafactor_lib.SLOTS:
      got = np.asarray(getattr(state, slot)[k])
      assert got.shape == ref_states[k][slot].shape, (k, slot)
      np.testing.assert_allclose(got, ref_states[k][slot], rtol=rtol, atol=atol, err_msg=f'{k}/{slot}')


def test_stacked_params_are_factored_by_logical_names_as_t5x():
  ours, ref, rules = _run({})
  assert rules['wi'] == ((1, 2), ((1,), (2,))) and rules['out'] == ((1, 2), ((2,), (1,)))
  _assert_matches(ours, ref)
  state = ours[1]
  assert state.v_row['wi'].shape == (3, 64) and state.v_col['wi'].shape == (3, 96)  # factored though 64 < 128
  assert state.v_row['out'].shape == (3, 32)  # along 'embed'
  assert state.v_row['kernel'].shape == (160,) and state.v_col['kernel'].shape == (256,)  # heuristic
  assert state.v['rel'].shape == (4, 32) and state.v['norm'].shape == (3, 32)


@pytest.mark.parametrize('options', [
    dict(global_norm_clip_threshold=0.05),
    dict(max_parameter_scale=0.3),
    dict(weight_decay_rate_lr_exponent=1.0),
    dict(weight_decay_rate=0.5, weight_decay_rate_lr_exponent=0.5),
    dict(weight_decay_rate=0.01),
    dict(beta1=0.9),
    dict(clipping_threshold=None, decay_rate=0.5, epsilon2=1e-2),
    dict(factored=False),
], ids=lambda o: ','.join(o))
def test_options_match_t5x(options):
  ours, ref, _ = _run(options)
  _assert_matches(ours, ref)


def test_global_norm_clipping_really_clips():
  # Step 1 alone is scale-free (rho = 0); later steps mix differently scaled second moments.
  ours, _, _ = _run(dict(global_norm_clip_threshold=1e-3))
  plain, _, _ = _run({})
  assert not np.allclose(ours[0]['wi'], plain[0]['wi'])


def test_without_logical_names_t5x_refuses_rank_3_params():
  with pytest.raises(ValueError, match='rank > 2 and needs logical axis names'):
    _run({}, axes=False)
  flat = {k: v for k, v in SHAPES.items() if len(v[0]) <= 2}
  tx = adafactor(0.1, factor_rules=None, param_axes={k: a for k, (_, a) in flat.items()})
  state = tx.init({k: np.zeros(s, np.float32) for k, (s, _) in flat.items()})
  assert state.v['norm'].shape == (3, 32)  # heuristic: [3, 32] unfactored, rms over all axes


def test_skip_nan_updates_keeps_old_values_where_t5x_does():
  ours, ref, _ = _run(dict(skip_nan_updates=True), nan_at=1)
  assert np.isfinite(np.asarray(ours[0]['wi'])).all()
  _assert_matches(ours, ref)
  plain, _, _ = _run({}, nan_at=1)
  assert np.isnan(np.asarray(plain[0]['wi'])).any()


@pytest.mark.parametrize('options', [{}, dict(beta1=0.9), dict(factored=False), dict(min_dim_size_to_factor=32)],
                         ids=['default', 'beta1', 'unfactored', 'min_dim_32'])
def test_state_maps_to_and_from_t5x_param_states(options):
  params = {k: np.zeros(s, np.float32) for k, (s, _) in SHAPES.items()}
  tx = adafactor(0.1, param_axes=_axes(), **options)
  state = tx.init(params)
  t5x_state = adafactor_lib.to_t5x_state(state)
  for k, (shape, names) in SHAPES.items():
    rule = t5x_rule(shape, names, options.get('factored', True), options.get('min_dim_size_to_factor', 128))
    want = t5x_init(shape, rule, options.get('beta1'))
    assert set(t5x_state['param_states'][k]) == {'v_row', 'v_col', 'v', 'm'}
    for slot, value in want.items():
      assert t5x_state['param_states'][k][slot].shape == value.shape, (k, slot)
  back = adafactor_lib.from_t5x_state(jax.tree.map(np.asarray, t5x_state))
  assert jax.tree.structure(back) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, back, state)


def _stack(tree):
  return network.stack_layers(tree)


@pytest.mark.slow
def test_canonical_state_converts_exactly_to_the_scanned_layout():
  """t5x checkpoints hold per-layer state (size heuristic); a scanned flanx model keeps t5x's rule-based one."""
  layer_shapes = {'wi': ((64, 96), ('embed', 'mlp')), 'out': ((128, 128), ('joined_kv', 'embed')),
                  'norm': ((32,), ('embed',))}
  layers = 3
  rng = np.random.default_rng(3)
  canonical = {'encoder': {f'layers_{i}': {k: rng.standard_normal(s).astype(np.float32)
                                           for k, (s, _) in layer_shapes.items()} for i in range(layers)}}
  canonical_axes = {'encoder': {f'layers_{i}': {k: a for k, (_, a) in layer_shapes.items()}
                                for i in range(layers)}}
  scanned = network.stack_layers(canonical)
  scanned_axes = {'encoder': {'layers': {k: ('layers',) + a for k, (_, a) in layer_shapes.items()}}}
  flat_tx = adafactor(0.01, param_axes=canonical_axes)
  scan_tx = adafactor(0.01, param_axes=scanned_axes)
  flat_state, scan_state = flat_tx.init(canonical), scan_tx.init(scanned)
  assert flat_state.v['encoder']['layers_0']['wi'].shape == (64, 96)  # heuristic: unfactored
  assert scan_state.v_row['encoder']['layers']['wi'].shape == (3, 64)  # rules: factored
  assert flat_state.v_row['encoder']['layers_0']['out'].shape == (128,)  # rows along joined_kv
  p_flat, p_scan = canonical, scanned
  for _ in range(3):
    grads = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), canonical)
    u, flat_state = flat_tx.update(grads, flat_state, p_flat)
    p_flat = jax.tree.map(lambda a, b: a + b, p_flat, u)
    u, scan_state = scan_tx.update(network.stack_layers(grads), scan_state, p_scan)
    p_scan = jax.tree.map(lambda a, b: a + b, p_scan, u)
  converted = scan_tx.convert_state(jax.tree.map(np.asarray, flat_state), canonical, canonical_axes, scanned,
                                    scanned_axes, restack=_stack)
  assert jax.tree.structure(converted) == jax.tree.structure(scan_state)
  for slot in adafactor_lib.SLOTS:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-12),
                 getattr(converted, slot), jax.tree.map(np.asarray, getattr(scan_state, slot)))
  assert int(converted.count) == 3


def test_convert_state_lists_every_mismatch():
  params = {'a': np.zeros((4, 4), np.float32), 'b': np.zeros((3,), np.float32)}
  tx = adafactor(0.1)
  state = tx.init(params)
  broken = state._replace(v={'a': np.zeros((4, 5), np.float32), 'b': state.v['b']}, v_row={'a': state.v_row['a']})
  with pytest.raises(ValueError) as err:
    tx.convert_state(broken, params, None, params, None)
  assert "v['a']: shape (4, 5), flanx expects (4, 4)" in str(err.value)
  assert "v_row: missing ['b']" in str(err.value)
