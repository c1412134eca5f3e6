"""The optimizer contract: an optax transformation plus the logical axes of its state.

The trainer shards optimizer state like the params it belongs to, so it needs to know, for every state leaf,
its logical axis names. `Optimizer` carries that next to the optax transformation. Any optax transformation
plugs in through `from_optax`: state subtrees shaped like the params (Adam's mu/nu, momentum…) get the params'
axes, everything else (counts, scalars) is replicated. flanx's Adafactor supplies its own (factored) axes.

gin: `train.optimizer` is a factory `(learning_rate=schedule, param_axes=axes) -> Optimizer`, e.g.
`train.optimizer = @adafactor` (default), `@adamw_optimizer`, `@adam_optimizer` or `@lion_optimizer` (optax's).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gin
import jax
import optax
from jax.sharding import PartitionSpec

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax GradientTransformation and `state_axes(params, param_axes) -> axes tree of init(params)`."""
  transformation: optax.GradientTransformation
  state_axes: Callable[[PyTree, PyTree], PyTree]

  def init(self, params: PyTree) -> PyTree:
    """The optimizer state for `params`."""
    return self.transformation.init(params)

  def update(self, grads: PyTree, state: PyTree, params: PyTree | None = None) -> tuple[PyTree, PyTree]:
    """(additive updates, new state), as optax."""
    return self.transformation.update(grads, state, params)

  def state_logical_axes(self, params: PyTree, param_axes: PyTree | None = None) -> PyTree:
    """Logical axis names (PartitionSpecs) of every state leaf, for params (arrays or ShapeDtypeStructs)."""
    return self.state_axes(params, param_axes)


def mirror_param_axes(transformation: optax.GradientTransformation) -> Callable[[PyTree, PyTree], PyTree]:
  """state_axes for optax states: param-shaped subtrees take the params' axes, the rest is replicated."""

  def state_axes(params: PyTree, param_axes: PyTree | None) -> PyTree:
    state = jax.eval_shape(transformation.init, params)
    param_def = jax.tree.structure(params)
    replicated = lambda tree: jax.tree.map(lambda _: PartitionSpec(), tree)
    if param_axes is None:
      return replicated(state)

    def visit(node):
      if jax.tree.structure(node) == param_def and all(
          a.shape == b.shape for a, b in zip(jax.tree.leaves(node), jax.tree.leaves(params))):
        return param_axes
      children, treedef = jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)
      if treedef.num_leaves == 1 and children and children[0] is node:  # a leaf that is not param-shaped
        return PartitionSpec()
      return jax.tree_util.tree_unflatten(treedef, [visit(c) for c in children])

    return visit(state)

  return state_axes


def from_optax(transformation: optax.GradientTransformation) -> Optimizer:
  """Wraps any optax transformation; its state is sharded like the params where it mirrors them."""
  return Optimizer(transformation, mirror_param_axes(transformation))


def _clipped(transformation: optax.GradientTransformation, global_norm_clip: float | None,
             update_clip: float | None) -> optax.GradientTransformation:
  """Gradients clipped first, as t5x's `optimizers.chain([optax.clip_by_global_norm(N) / optax.clip(D), …])`."""
  clips = []
  if global_norm_clip is not None:
    clips.append(optax.clip_by_global_norm(global_norm_clip))
  if update_clip is not None:
    clips.append(optax.clip(update_clip))
  return optax.chain(*clips, transformation) if clips else transformation


@gin.configurable
def adamw_optimizer(learning_rate: float | optax.Schedule = 1e-4, *, b1: float = 0.9, b2: float = 0.999,
                    eps: float = 1e-8, eps_root: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                    global_norm_clip: float | None = None, update_clip: float | None = None,
                    param_axes: PyTree | None = None) -> Optimizer:
  """optax.adamw as a flanx Optimizer (LoRA users often expect Adam); state sharded like the params.

  weight_decay defaults to 0 here (optax.adamw's default is 1e-4; `python -m flanx.from_t5x_gin` writes the value
  a t5x gin gives, or optax's default). `global_norm_clip` / `update_clip` clip the gradients first, like
  `optax.clip_by_global_norm` / `optax.clip` ahead of the optimizer in an optax chain.
  """
  del param_axes  # axes come from the params at sharding time
  return from_optax(_clipped(optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                                         weight_decay=weight_decay, nesterov=nesterov),
                             global_norm_clip, update_clip))


@gin.configurable
def adam_optimizer(learning_rate: float | optax.Schedule = 1e-4, *, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, eps_root: float = 0.0, nesterov: bool = False,
                   global_norm_clip: float | None = None, update_clip: float | None = None,
                   param_axes: PyTree | None = None) -> Optimizer:
  """optax.adam (optax's defaults) as a flanx Optimizer; clipping as in adamw_optimizer."""
  del param_axes
  return from_optax(_clipped(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov),
                             global_norm_clip, update_clip))


@gin.configurable
def lion_optimizer(learning_rate: float | optax.Schedule = 1e-4, *, b1: float = 0.9, b2: float = 0.99,
                   weight_decay: float = 1e-3, global_norm_clip: float | None = None, update_clip: float | None = None,
                   param_axes: PyTree | None = None) -> Optimizer:
  """optax.lion (Chen et al. 2023; optax's defaults, weight decay 1e-3) as a flanx Optimizer; clipping as above."""
  del param_axes
  return from_optax(_clipped(optax.lion(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay),
                             global_norm_clip, update_clip))
