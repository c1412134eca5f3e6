"""Adafactor (Shazeer & Stern 2018) with t5x's choices, as an optax GradientTransformation.

Per parameter, with g the fp32 gradient and t the number of updates already applied (minus step_offset):
  rho   = 1 - (t + 1)^-decay_rate                 (rho = 0 on the first step: v starts at g^2)
  g2    = g^2 + epsilon1
  factored:   v_row = rho v_row + (1-rho) mean_col(g2);  v_col = rho v_col + (1-rho) mean_row(g2)
              y = g / sqrt(v_row v_col / mean_row(v_row))
  unfactored: v = rho v + (1-rho) g2;  y = g / sqrt(v)
  y    /= max(1, rms(y) / clipping_threshold)
  step  = lr(t) * max(rms(param), epsilon2) * y    (param scale only with multiply_by_parameter_scale)
  step  = m = beta1 m + (1-beta1) step             (only with beta1)
  update = -step - weight_decay_rate * param       (weight decay is not scaled by lr, as in t5x)
rms/mean run over every axis except 'batch' axes ('layers' of scanned params): each layer is its own block.

Which axes are factored (t5x's rules, documented choice for scanned params):
  * Axes whose logical name maps to 'batch' are set aside; the rest is the param "proper".
  * Proper rank <= 2 (every T5 param): t5x's heuristic: factor the two largest axes (row = the smaller, col =
    the larger, ties keep axis order) when the smaller has >= min_dim_size_to_factor entries. t5x also ignores
    logical rules for such params. A scanned param therefore gets exactly the per-layer state of its unscanned
    layers, stacked (t5x instead applies its logical rules to scanned params, which only renames row/col and
    skips the size test); optimizer state moves between layouts with flanx.model.network's stack/unstack functions.
  * Proper rank > 2: the logical rules (FACTOR_RULES: 'embed' row; 'vocab', 'mlp', 'heads', 'kv', 'joined_kv'
    column); without axis names, the heuristic on the two largest axes.

State (AdafactorState) is a NamedTuple of arrays, like t5x's param_states: v_row / v_col / v / m trees mirror
the params, unused slots hold a float32 zeros((1,)) placeholder, so a t5x checkpoint's optimizer state maps
leaf for leaf. `count` drives rho: restoring a pretrained state (count ~1.1M) keeps second moments nearly
frozen, a fresh init (count 0) starts from rho = 0; `step_offset` resets the schedule without losing state.
Shard the state with `optimizer.state_logical_axes(params, param_axes)` (the Optimizer contract): logical names per state leaf
(v_row = param axes minus the col axes, v_col = minus the row axes, v and m = param axes, placeholders and
count replicated) to be mapped to a mesh by the same rules as the params.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Optional, Union

import gin
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from flanx.training.optimizer import Optimizer

PyTree = Any

# Logical axis name -> role in factoring (t5x's standard rules). None: never factored.
FACTOR_RULES: Mapping[str, Optional[str]] = {
    'vocab': 'column',
    'embed': 'row',
    'mlp': 'column',
    'heads': 'column',
    'kv': 'column',
    'joined_kv': 'column',
    'relpos_buckets': None,
    'layers': 'batch',
    'stack': 'batch',
}
_ROLES = ('row', 'column', 'batch', None)


class AdafactorState(NamedTuple):
  """Optimizer state: update count plus per-param second moments (and momentum) mirroring the params."""
  count: jax.Array  # int32 scalar: number of updates applied so far.
  v_row: PyTree
  v_col: PyTree
  v: PyTree
  m: PyTree


@dataclasses.dataclass(frozen=True)
class _Plan:
  """How one param is treated: which axes are rows / columns / batch, and which are averaged."""
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


def _plan(shape: tuple[int, ...], axes: Any, path: str, factored: bool, min_dim_size_to_factor: int,
          rules: Mapping[str, Optional[str]]) -> _Plan:
  ndim = len(shape)
  names = _axis_names(axes, ndim, path)
  roles = [None] * ndim
  if names is not None:
    for i, name in enumerate(names):
      if name is None:
        continue
      if not isinstance(name, str) or name not in rules:
        raise ValueError(f'adafactor: param {path} axis {i} has logical name {name!r} with no factor rule; '
                         f'known: {sorted(rules)}')
      roles[i] = rules[name]
      if roles[i] not in _ROLES:
        raise ValueError(f'adafactor: factor rule for {name!r} is {roles[i]!r}, expected one of {_ROLES}')
  proper = tuple(i for i in range(ndim) if roles[i] != 'batch')
  unfactored = _Plan((), (), proper)
  if not factored or len(proper) < 2:
    return unfactored
  if names is None or len(proper) <= 2:
    by_size = sorted(proper, key=lambda i: shape[i])  # stable: ties keep axis order, like t5x
    if shape[by_size[-2]] < min_dim_size_to_factor:
      return unfactored
    return _Plan((by_size[-2],), (by_size[-1],), proper)
  row = tuple(i for i in proper if roles[i] == 'row')
  col = tuple(i for i in proper if roles[i] == 'column')
  if row and col and any(roles[i] is None for i in proper):
    raise ValueError(f'adafactor: param {path} with axes {names} mixes factored and unfactored axes')
  if not row or not col:
    return unfactored
  return _Plan(row, col, proper)


def _without(seq: tuple, drop: tuple[int, ...]) -> tuple:
  return tuple(x for i, x in enumerate(seq) if i not in drop)


def _placeholder() -> jax.Array:
  return jnp.zeros((1,), jnp.float32)


def _rms(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return jnp.sqrt(jnp.mean(x * x, axis=axes, keepdims=True))


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
              factor_rules: Mapping[str, Optional[str]] = FACTOR_RULES) -> Optimizer:
  """Adafactor with t5x defaults; `update(grads, state, params)` returns additive updates (optax style).

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
    factor_rules: logical axis name -> 'row' | 'column' | 'batch' | None.
  """
  schedule = learning_rate if callable(learning_rate) else (lambda count: learning_rate)

  def plans(params):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    axes = treedef.flatten_up_to(param_axes) if param_axes is not None else [None] * len(leaves)
    return [_plan(tuple(p.shape), ax, jax.tree_util.keystr(path), factored, min_dim_size_to_factor,
                  factor_rules) for (path, p), ax in zip(leaves, axes)], treedef

  def init(params):
    plan_list, treedef = plans(params)
    v_row, v_col, v, m = [], [], [], []
    for plan, p in zip(plan_list, jax.tree.leaves(params)):
      shape = tuple(p.shape)
      if plan.factored:
        v_row.append(jnp.zeros(_without(shape, plan.col), jnp.float32))
        v_col.append(jnp.zeros(_without(shape, plan.row), jnp.float32))
        v.append(_placeholder())
      else:
        v_row.append(_placeholder())
        v_col.append(_placeholder())
        v.append(jnp.zeros(shape, jnp.float32))
      m.append(jnp.zeros(shape, jnp.float32) if beta1 is not None else _placeholder())
    trees = [jax.tree.unflatten(treedef, x) for x in (v_row, v_col, v, m)]
    return AdafactorState(jnp.zeros((), jnp.int32), *trees)

  def update(grads, state, params=None):
    if params is None and (multiply_by_parameter_scale or weight_decay_rate):
      raise ValueError('adafactor: update() needs params (parameter scale / weight decay)')
    plan_list, treedef = plans(grads)
    t = jnp.maximum(state.count - step_offset, 0).astype(jnp.float32) + 1.0
    rho = 1.0 - t ** (-decay_rate)
    lr = jnp.asarray(schedule(state.count), jnp.float32)
    param_leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(plan_list)
    outs = []
    for plan, g, p, v_row, v_col, v, m in zip(
        plan_list, treedef.flatten_up_to(grads), param_leaves, treedef.flatten_up_to(state.v_row),
        treedef.flatten_up_to(state.v_col), treedef.flatten_up_to(state.v), treedef.flatten_up_to(state.m)):
      g = g.astype(jnp.float32)
      g2 = g * g + epsilon1
      if plan.factored:
        v_row = rho * v_row + (1 - rho) * jnp.mean(g2, axis=plan.col)
        v_col = rho * v_col + (1 - rho) * jnp.mean(g2, axis=plan.row)
        row_in_v_row = tuple(i - sum(c < i for c in plan.col) for i in plan.row)
        row_norm = v_row / jnp.mean(v_row, axis=row_in_v_row, keepdims=True)
        y = (g * jnp.expand_dims(jax.lax.rsqrt(row_norm), plan.col)
             * jnp.expand_dims(jax.lax.rsqrt(v_col), plan.row))
      else:
        v = rho * v + (1 - rho) * g2
        y = g * jax.lax.rsqrt(v)
      if clipping_threshold is not None:
        y = y / jnp.maximum(1.0, _rms(y, plan.averaged) / clipping_threshold)
      step = lr * y
      if multiply_by_parameter_scale:
        step = step * jnp.maximum(_rms(p.astype(jnp.float32), plan.averaged), epsilon2)
      if beta1 is not None:
        m = beta1 * m + (1 - beta1) * step
        step = m
      new_update = -step
      if weight_decay_rate:
        new_update = new_update - weight_decay_rate * p.astype(jnp.float32)
      outs.append((new_update, v_row, v_col, v, m))
    trees = [jax.tree.unflatten(treedef, list(x)) for x in zip(*outs)] if outs else [grads] * 5
    new_state = AdafactorState(optax.safe_increment(state.count), *trees[1:])
    return trees[0], new_state

  def state_axes(params, axes_tree):
    axes_tree = param_axes if axes_tree is None else axes_tree
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    axes = treedef.flatten_up_to(axes_tree) if axes_tree is not None else [None] * len(leaves)
    v_row, v_col, v, m = [], [], [], []
    for (path, p), ax in zip(leaves, axes):
      shape = tuple(p.shape)
      plan = _plan(shape, ax, jax.tree_util.keystr(path), factored, min_dim_size_to_factor, factor_rules)
      names = _axis_names(ax, len(shape), jax.tree_util.keystr(path)) or (None,) * len(shape)
      full = PartitionSpec(*names)
      if plan.factored:
        v_row.append(PartitionSpec(*_without(names, plan.col)))
        v_col.append(PartitionSpec(*_without(names, plan.row)))
        v.append(PartitionSpec())
      else:
        v_row.append(PartitionSpec())
        v_col.append(PartitionSpec())
        v.append(full)
      m.append(full if beta1 is not None else PartitionSpec())
    trees = [jax.tree.unflatten(treedef, x) for x in (v_row, v_col, v, m)]
    return AdafactorState(PartitionSpec(), *trees)

  return Optimizer(optax.GradientTransformation(init, update), state_axes)
