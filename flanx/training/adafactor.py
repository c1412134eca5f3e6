"""Adafactor (Shazeer & Stern 2018) with t5x's choices and options, as a flanx Optimizer (optax-style update).

Per parameter, with g the fp32 gradient and t the number of updates already applied (minus step_offset):
  g     *= min(1, global_norm_clip_threshold / ||all grads||)   (only with global_norm_clip_threshold)
  rho   = 1 - (t + 1)^-decay_rate                 (rho = 0 on the first step: v starts at g^2)
  g2    = g^2 + epsilon1
  factored:   v_row = rho v_row + (1-rho) mean_col(g2);  v_col = rho v_col + (1-rho) mean_row(g2)
              y = g / sqrt(v_row v_col / mean_row(v_row))
  unfactored: v = rho v + (1-rho) g2;  y = g / sqrt(v)
  y    /= max(1, rms(y) / clipping_threshold)
  scale = min(max(rms(param), epsilon2), max_parameter_scale)   (only with multiply_by_parameter_scale)
  step  = lr(t) * scale * y
  step  = m = beta1 m + (1-beta1) step             (only with beta1)
  wd    = weight_decay_rate, times lr(t)^weight_decay_rate_lr_exponent when that is set (rate 1 if unset)
  update = -step - wd * param                     (decoupled; as t5x's new_param = (1 - wd) param - step)
  skip_nan_updates: a NaN in a new state entry or updated param keeps the old value (t5x's option).
rms/mean run over every axis except 'batch' axes ('layers' of scanned params): each layer is its own block.

Which axes are factored: t5x's rules, exactly (t5x/adafactor.py, `logical_factor_rules` set as in its gins):
  * With logical axis names (param_axes) and factor_rules, each axis gets a role: 'row', 'column', 'batch' or
    None. A param with row, column and None axes is an error; with only rows or only columns, unfactored.
  * Rank <= 2 without a batch axis (every unscanned T5 param): t5x ignores the names and uses its heuristic:
    factor the two largest axes (row = the smaller, col = the larger, ties keep axis order) when the smaller
    has >= min_dim_size_to_factor entries.
  * Otherwise (scanned params, rank > 2): the roles decide, whatever the sizes: a scanned [layers, 64, 96]
    ('layers', 'embed', 'mlp') kernel is factored (row embed, column mlp) where its unscanned [64, 96] layers
    are not, and a square scanned out kernel ('layers', 'joined_kv', 'embed') has v_row along 'embed', where
    the heuristic puts it along 'joined_kv'. `convert_state` moves state between the two layouts.
  * Without names or with factor_rules=None: the heuristic for every param (rank > 2 is an error, as in t5x).
  * factored=False: nothing is factored and, as in t5x, rms/mean run over all axes, 'layers' included.

State (AdafactorState) is a NamedTuple of arrays, like t5x's param_states: v_row / v_col / v / m trees mirror
the params, unused slots hold a float32 zeros((1,)) placeholder, so a t5x checkpoint's optimizer state maps
leaf for leaf (`to_t5x_state` / `from_t5x_state`), for every option. `count` drives rho: restoring a
pretrained state (count ~1.1M) keeps second moments nearly frozen, a fresh init (count 0) starts from
rho = 0; `step_offset` resets the schedule without losing state.
Shard the state with `optimizer.state_logical_axes(params, param_axes)` (the Optimizer contract): logical names
per state leaf (v_row = param axes minus the col axes, v_col = minus the row axes, v and m = param axes,
placeholders and count replicated) to be mapped to a mesh by the same rules as the params.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from flanx.training.optimizer import Optimizer

PyTree = Any
SLOTS = ('v_row', 'v_col', 'v', 'm')

# Logical axis name -> role in factoring (t5x's standard_logical_factor_rules). None: never factored.
FACTOR_RULES: Mapping[str, Optional[str]] = {
    'vocab': 'column',
    'embed': 'row',
    'mlp': 'column',
    'heads': 'column',
    'kv': 'column',
    'joined_kv': 'column',
    'relpos_buckets': None,
    'layers': 'batch',  # scanned layers
    'stack': 'batch',  # stacked params
    'q_wi_fused': 'column',
    'o_wo_fused': 'column',
    'multiquery_heads': 'column',
    'kv_fused': 'column',
    'layer_norm_scale': None,
    'mlp_activations': 'column',
}
_ROLES = ('row', 'column', 'batch', None)


class AdafactorState(NamedTuple):
  """Optimizer state: update count plus per-param second moments (and momentum) mirroring the params."""
  count: jax.Array  # int32 scalar: number of updates applied so far (t5x's optimizer `step`).
  v_row: PyTree
  v_col: PyTree
  v: PyTree
  m: PyTree


@dataclasses.dataclass(frozen=True)
class Plan:
  """How one param is treated: which axes are rows / columns, and which are averaged (rms, clipping)."""
  row: tuple[int, ...]
  col: tuple[int, ...]
  averaged: tuple[int, ...]

  @property
  def factored(self) -> bool:
    return bool(self.row)


def _axis_names(axes: Any, ndim: int, path: str) -> Optional[tuple[Any, ...]]:
  if axes is None:
    return None
  names = tuple(axes)
  if len(names) != ndim:
    raise ValueError(f'adafactor: param {path} has rank {ndim} but logical axes {names}')
  return names


def _heuristic(shape: tuple[int, ...], path: str, min_dim_size_to_factor: int) -> Plan:
  """t5x's size heuristic for params of rank <= 2 (rms over all axes)."""
  everything = tuple(range(len(shape)))
  if len(shape) > 2:
    raise ValueError(f'adafactor: param {path} {shape} has rank > 2 and needs logical axis names (param_axes) '
                     'to be factored, as in t5x')
  if len(shape) < 2:
    return Plan((), (), everything)
  by_size = sorted(everything, key=lambda i: shape[i])  # stable: ties keep axis order, like t5x's argsort
  if shape[by_size[-2]] < min_dim_size_to_factor:
    return Plan((), (), everything)
  return Plan((by_size[-2],), (by_size[-1],), everything)


def plan(shape: tuple[int, ...], axes: Any, path: str = '', *, factored: bool = True,
         min_dim_size_to_factor: int = 128, factor_rules: Optional[Mapping[str, Optional[str]]] = FACTOR_RULES
         ) -> Plan:
  """The factoring t5x's Adafactor picks for a param of `shape` with logical axis names `axes` (or None)."""
  ndim = len(shape)
  names = _axis_names(axes, ndim, path)
  if not factored:
    return Plan((), (), tuple(range(ndim)))
  if names is None or factor_rules is None:
    return _heuristic(shape, path, min_dim_size_to_factor)
  roles = []
  for i, name in enumerate(names):
    if name is not None and (not isinstance(name, str) or name not in factor_rules):
      raise ValueError(f'adafactor: param {path} axis {i} has logical name {name!r} with no factor rule; '
                       f'known: {sorted(factor_rules)}')
    role = factor_rules[name] if name is not None else None
    if role not in _ROLES:
      raise ValueError(f'adafactor: factor rule for {name!r} is {role!r}, expected one of {_ROLES}')
    roles.append(role)
  if 'row' in roles and 'column' in roles and None in roles:
    raise ValueError(f'adafactor: param {path} with axes {names} mixes factored and unfactored axes')
  if 'row' not in roles or 'column' not in roles:
    roles = [None if r in ('row', 'column') else r for r in roles]
  batch = tuple(i for i in range(ndim) if roles[i] == 'batch')
  if ndim <= 2 and not batch:
    return _heuristic(shape, path, min_dim_size_to_factor)  # t5x ignores rules for plain matrices
  averaged = tuple(i for i in range(ndim) if i not in batch)
  return Plan(tuple(i for i in range(ndim) if roles[i] == 'row'),
              tuple(i for i in range(ndim) if roles[i] == 'column'), averaged)


def _without(seq: tuple, drop: tuple[int, ...]) -> tuple:
  return tuple(x for i, x in enumerate(seq) if i not in drop)


def slot_shapes(shape: tuple[int, ...], p: Plan, momentum: bool) -> dict[str, tuple[int, ...]]:
  """Shapes of one param's {v_row, v_col, v, m} (placeholders are (1,)), as t5x's init_param_state makes them."""
  if p.factored:
    out = {'v_row': _without(shape, p.col), 'v_col': _without(shape, p.row), 'v': (1,)}
  else:
    out = {'v_row': (1,), 'v_col': (1,), 'v': tuple(shape)}
  out['m'] = tuple(shape) if momentum else (1,)
  return out


def _rms(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return jnp.sqrt(jnp.mean(x * x, axis=axes, keepdims=True))


# XLA:CPU reduces a leading axis of a wide array far below memory speed (60 ms for the column means of a
# [512, 32128] logits kernel's g², where adding its rows one by one takes 5 ms). Only the CPU lowering does that.
_WIDE = 8192


def _mean(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """jnp.mean(x, axes); on CPU a mean over a leading axis of a wide array sums it slice by slice."""
  if len(axes) != 1 or axes[0] == x.ndim - 1 or np.prod(x.shape[axes[0] + 1:]) < _WIDE:
    return jnp.mean(x, axis=axes)
  axis, n = axes[0], x.shape[axes[0]]

  def slice_by_slice(x):
    add_slice = lambda i, total: total + jax.lax.dynamic_index_in_dim(x, i, axis, keepdims=False)
    return jax.lax.fori_loop(0, n, add_slice, jnp.zeros(_without(x.shape, axes), x.dtype)) / n

  return jax.lax.platform_dependent(x, cpu=slice_by_slice, default=lambda x: jnp.mean(x, axis=axes))


@dataclasses.dataclass(frozen=True)
class AdafactorOptimizer(Optimizer):
  """A flanx Optimizer that also knows its factoring plans (to move state between param layouts)."""
  plans: Callable[[PyTree, PyTree], list] = None
  momentum: bool = False

  def convert_state(self, state: AdafactorState, source_params: PyTree, source_axes: PyTree,
                    target_params: PyTree, target_axes: PyTree,
                    restack: Callable[[PyTree], PyTree] = lambda tree: tree) -> AdafactorState:
    """State kept for params laid out as `source_*` (shapes) → the state this optimizer keeps for `target_*`.

    `restack` maps a params-shaped tree from the source layout to the target one, stacking layers along a new
    leading axis (e.g. flanx.model.network's stack_layers); shapes must otherwise agree. Where the factoring differs (a scanned square out kernel swaps rows and columns; a small
    stacked kernel is factored where its layers are not), the second moment is rebuilt and reduced again:
    exact from an unfactored or transposed state (means of a linear running average), the usual rank-1
    estimate otherwise. Missing momentum (state without `m`, optimizer with beta1) starts at zero. Every
    slot whose shape does not match the source layout's plan is listed in one ValueError.
    """
    source_plans, source_def = self.plans(source_params, source_axes)
    source_shapes = [tuple(x.shape) for x in jax.tree.leaves(source_params)]
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(source_params)[0]]
    problems = []
    for slot in SLOTS:
      got = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(getattr(state, slot))[0]}
      problems += [f'{slot}: missing {p}' for p in paths if p not in got]
      problems += [f'{slot}: unexpected {p}' for p in sorted(set(got) - set(paths))]
      for path, shape, p in zip(paths, source_shapes, source_plans):
        want, have = slot_shapes(shape, p, True)[slot], tuple(np.shape(got.get(path, np.zeros(0))))
        if path in got and have != want and not (slot == 'm' and have == (1,)):
          problems.append(f'{slot}{path}: shape {have}, flanx expects {want}')
    if problems:
      raise ValueError('Adafactor state does not match the params:\n  ' + '\n  '.join(problems))
    # Which source params make each target param: restack a tree of source leaf indices (a stacked target
    # leaf gets the indices of its layers, in order).
    indices = restack(jax.tree.unflatten(source_def, [np.asarray(i) for i in range(len(source_plans))]))
    target_plans, target_def = self.plans(target_params, target_axes)
    source_slots = {s: source_def.flatten_up_to(getattr(state, s)) for s in SLOTS}
    out = {s: [] for s in SLOTS}
    for index, p, x in zip(target_def.flatten_up_to(indices), target_plans, jax.tree.leaves(target_params)):
      index = np.asarray(index)
      entries = [_Entry({s: np.asarray(source_slots[s][i]) for s in SLOTS},
                        source_plans[i], source_shapes[i]) for i in index.reshape(-1)]
      entry = entries[0] if index.ndim == 0 else _stacked_entry(entries)
      for slot, value in _convert(entry, p, tuple(x.shape), self.momentum).items():
        out[slot].append(value)
    trees = [jax.tree.unflatten(target_def, out[s]) for s in SLOTS]
    return AdafactorState(np.asarray(state.count, np.int32), *trees)


class _Entry:
  """One param's slots, plan and shape."""

  def __init__(self, slots: dict, p: Plan, shape: tuple[int, ...]):
    self.slots, self.plan, self.shape = slots, p, shape


def _stacked_entry(entries: list[_Entry]) -> _Entry:
  """Entries of the layers of one param → one entry with a leading layer axis."""
  first = entries[0]
  shift = lambda axes: tuple(a + 1 for a in axes)
  p = Plan(shift(first.plan.row), shift(first.plan.col), shift(first.plan.averaged))
  slots = {s: np.stack([e.slots[s] for e in entries]) for s in SLOTS}
  return _Entry(slots, p, (len(entries),) + first.shape)


def _full_v(entry: _Entry) -> np.ndarray:
  """The second moment an entry stands for (exact when unfactored, Adafactor's estimate when factored)."""
  p, s = entry.plan, entry.slots
  if not p.factored:
    return s['v'].astype(np.float64)
  v_row, v_col = s['v_row'].astype(np.float64), s['v_col'].astype(np.float64)
  row_in_v_row = tuple(i - sum(c < i for c in p.col) for i in p.row)
  row_mean = np.mean(v_row, axis=row_in_v_row, keepdims=True)
  return np.expand_dims(v_row / row_mean, p.col) * np.expand_dims(v_col, p.row)


def _convert(source: _Entry, p: Plan, shape: tuple[int, ...], momentum: bool) -> dict[str, np.ndarray]:
  if source.shape != shape:
    raise ValueError(f'adafactor: cannot convert state of a {source.shape} param to {shape}')
  out = {s: np.zeros(t, np.float32) for s, t in slot_shapes(shape, p, momentum).items()}
  same = (source.plan.row, source.plan.col) == (p.row, p.col)
  for slot in SLOTS:  # same plan: every slot (placeholders too) as it was; otherwise m only
    if (same or slot == 'm') and np.shape(source.slots[slot]) == out[slot].shape:
      out[slot] = source.slots[slot]
  if same:
    pass
  elif p.factored:
    v = _full_v(source)
    out['v_row'], out['v_col'] = np.mean(v, axis=p.col), np.mean(v, axis=p.row)
  else:
    out['v'] = _full_v(source)
  return {k: np.asarray(x, np.float32) for k, x in out.items()}


def to_t5x_state(state: AdafactorState) -> dict[str, Any]:
  """{'step': count, 'param_states': {param path…: {'v_row', 'v_col', 'v', 'm'}}}: t5x's optimizer state."""
  def join(*slots):
    return dict(zip(SLOTS, slots))
  is_leaf = lambda x: not isinstance(x, Mapping)
  param_states = jax.tree.map(join, state.v_row, state.v_col, state.v, state.m, is_leaf=is_leaf)
  return {'step': state.count, 'param_states': param_states}


def from_t5x_state(t5x_state: Mapping[str, Any]) -> AdafactorState:
  """t5x's optimizer state ({'step', 'param_states'}) → AdafactorState (arrays as given, no shape checks)."""
  param_states = t5x_state.get('param_states')
  if not isinstance(param_states, Mapping):
    raise ValueError('t5x optimizer state has no param_states')

  def pick(tree, slot):
    if isinstance(tree, Mapping) and set(tree) == set(SLOTS):
      return tree[slot]
    if isinstance(tree, Mapping):
      return {k: pick(v, slot) for k, v in tree.items()}
    raise ValueError(f't5x param_states leaf is not {{v_row, v_col, v, m}}: {type(tree).__name__}')

  return AdafactorState(np.asarray(t5x_state.get('step', 0), np.int32),
                        *(pick(param_states, slot) for slot in SLOTS))


@gin.configurable
def adafactor(learning_rate: Union[float, optax.Schedule] = 1e-3,
              *,
              decay_rate: float = 0.8,
              step_offset: int = 0,
              factored: bool = True,
              multiply_by_parameter_scale: bool = True,
              clipping_threshold: Optional[float] = 1.0,
              beta1: Optional[float] = None,
              weight_decay_rate: Optional[float] = None,
              min_dim_size_to_factor: int = 128,
              epsilon1: float = 1e-30,
              epsilon2: float = 1e-3,
              param_axes: Optional[PyTree] = None,
              factor_rules: Optional[Mapping[str, Optional[str]]] = FACTOR_RULES,
              weight_decay_rate_lr_exponent: Optional[float] = None,
              global_norm_clip_threshold: Optional[float] = None,
              max_parameter_scale: Optional[float] = None,
              skip_nan_updates: bool = False) -> AdafactorOptimizer:
  """Adafactor with t5x defaults and options; `update(grads, state, params)` returns additive updates.

  Args:
    learning_rate: a float or an optax schedule called with the update count (0 on the first update).
    decay_rate: exponent of the second-moment decay schedule rho_t = 1 - (t + 1)^-decay_rate.
    step_offset: subtracted from the count in rho (restart the decay schedule when fine-tuning).
    factored: use factored second moments where the plan allows (see module docstring).
    multiply_by_parameter_scale: scale steps by max(rms(param), epsilon2) (relative step size).
    clipping_threshold: clip the rms of each normalized update to this; None: no clipping.
    beta1: momentum coefficient; None (t5x default): no momentum, no momentum memory.
    weight_decay_rate: decoupled decay, update -= rate * param (not multiplied by the learning rate).
    min_dim_size_to_factor: heuristic factoring needs both factored axes at least this long.
    epsilon1: added to squared gradients.
    epsilon2: floor of the parameter scale.
    param_axes: logical axis names per param (tuples or PartitionSpecs, same tree as the params), e.g.
      flanx.model.network.logical_axes(config). Needed for scanned params ('layers' axis) and rank > 2 params.
    factor_rules: logical axis name -> 'row' | 'column' | 'batch' | None (t5x's standard rules); None: the
      size heuristic for every param (t5x without `logical_factor_rules`).
    weight_decay_rate_lr_exponent: decay rate = (weight_decay_rate or 1) * lr ** exponent, per step.
    global_norm_clip_threshold: scale all gradients by min(1, threshold / global norm) first.
    max_parameter_scale: upper bound of the parameter scale.
    skip_nan_updates: keep a param's old value (and old state entries) wherever the new one is NaN.
  """
  schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)

  def plans(params, axes_tree=None):
    axes_tree = param_axes if axes_tree is None else axes_tree
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    axes = treedef.flatten_up_to(axes_tree) if axes_tree is not None else [None] * len(leaves)
    return [plan(tuple(p.shape), ax, jax.tree_util.keystr(path), factored=factored,
                 min_dim_size_to_factor=min_dim_size_to_factor, factor_rules=factor_rules)
            for (path, p), ax in zip(leaves, axes)], treedef

  def init(params):
    plan_list, treedef = plans(params)
    slots = {s: [] for s in SLOTS}
    for p, x in zip(plan_list, jax.tree.leaves(params)):
      for slot, shape in slot_shapes(tuple(x.shape), p, beta1 is not None).items():
        slots[slot].append(jnp.zeros(shape, jnp.float32))
    trees = [jax.tree.unflatten(treedef, slots[s]) for s in SLOTS]
    return AdafactorState(jnp.zeros((), jnp.int32), *trees)

  def update(grads, state, params=None):
    if params is None and (multiply_by_parameter_scale or weight_decay_rate or weight_decay_rate_lr_exponent
                           or skip_nan_updates):
      raise ValueError('adafactor: update() needs params (parameter scale / weight decay / NaN skipping)')
    plan_list, treedef = plans(grads)
    t = jnp.maximum(state.count - step_offset, 0).astype(jnp.float32) + 1.0
    rho = 1.0 - t ** (-decay_rate)
    lr = jnp.asarray(schedule(state.count), jnp.float32)
    decay = weight_decay_rate
    if weight_decay_rate_lr_exponent:
      decay = (weight_decay_rate or 1.0) * lr ** weight_decay_rate_lr_exponent
    grad_leaves = [g.astype(jnp.float32) for g in treedef.flatten_up_to(grads)]
    if global_norm_clip_threshold:
      norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grad_leaves))
      scale = global_norm_clip_threshold * jnp.minimum(1.0 / global_norm_clip_threshold, 1.0 / norm)
      grad_leaves = [g * scale for g in grad_leaves]
    param_leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(plan_list)
    outs = []
    for pl, g, p, old in zip(plan_list, grad_leaves, param_leaves,
                             zip(*(treedef.flatten_up_to(getattr(state, s)) for s in SLOTS))):
      v_row, v_col, v, m = old
      g2 = g * g + epsilon1
      if pl.factored:
        v_row = rho * v_row + (1 - rho) * _mean(g2, pl.col)
        v_col = rho * v_col + (1 - rho) * _mean(g2, pl.row)
        row_in_v_row = tuple(i - sum(c < i for c in pl.col) for i in pl.row)
        row_norm = v_row / jnp.mean(v_row, axis=row_in_v_row, keepdims=True)
        y = (g * jnp.expand_dims(jax.lax.rsqrt(row_norm), pl.col)
             * jnp.expand_dims(jax.lax.rsqrt(v_col), pl.row))
      else:
        v = rho * v + (1 - rho) * g2
        y = g * jax.lax.rsqrt(v)
      if clipping_threshold is not None:
        y = y / jnp.maximum(1.0, _rms(y, pl.averaged) / clipping_threshold)
      step = lr * y
      if multiply_by_parameter_scale:
        scale = jnp.maximum(_rms(p.astype(jnp.float32), pl.averaged), epsilon2)
        if max_parameter_scale is not None:
          scale = jnp.minimum(scale, max_parameter_scale)
        step = step * scale
      if beta1 is not None:
        m = beta1 * m + (1 - beta1) * step
        step = m
      new_update = -step
      if decay is not None:
        new_update = new_update - decay * p.astype(jnp.float32)
      new = (v_row, v_col, v, m)
      if skip_nan_updates:
        new = tuple(jnp.where(jnp.isnan(n), o, n) for n, o in zip(new, old))
        # t5x tests the updated param: a NaN there keeps the old param (a zero update).
        new_update = jnp.where(jnp.isnan(p.astype(jnp.float32) + new_update), 0.0, new_update)
      outs.append((new_update,) + new)
    trees = [jax.tree.unflatten(treedef, list(x)) for x in zip(*outs)] if outs else [grads] * 5
    new_state = AdafactorState(optax.safe_increment(state.count), *trees[1:])
    return trees[0], new_state

  def state_axes(params, axes_tree):
    axes_tree = param_axes if axes_tree is None else axes_tree
    plan_list, treedef = plans(params, axes_tree)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    axes = treedef.flatten_up_to(axes_tree) if axes_tree is not None else [None] * len(leaves)
    slots = {s: [] for s in SLOTS}
    for (path, x), ax, pl in zip(leaves, axes, plan_list):
      names = _axis_names(ax, x.ndim, jax.tree_util.keystr(path)) or (None,) * x.ndim
      full = PartitionSpec(*names)
      if pl.factored:
        slots['v_row'].append(PartitionSpec(*_without(names, pl.col)))
        slots['v_col'].append(PartitionSpec(*_without(names, pl.row)))
        slots['v'].append(PartitionSpec())
      else:
        slots['v_row'].append(PartitionSpec())
        slots['v_col'].append(PartitionSpec())
        slots['v'].append(full)
      slots['m'].append(full if beta1 is not None else PartitionSpec())
    trees = [jax.tree.unflatten(treedef, slots[s]) for s in SLOTS]
    return AdafactorState(PartitionSpec(), *trees)

  return AdafactorOptimizer(optax.GradientTransformation(init, update), state_axes, plans, beta1 is not None)
