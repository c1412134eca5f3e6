"""Device mesh and logical-axis rules: how model axis names land on ('data', 'model') mesh axes."""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import gin
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any

# t5x's defaults: batch over 'data'; vocab, mlp, heads over 'model'; embed/kv replicated.
BASE_RULES = (
    ('batch', 'data'),
    ('vocab', 'model'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('joined_kv', 'model'),
    ('kv', None),
    ('length', None),
    ('relpos_buckets', None),
    ('layers', None),
)


@gin.configurable
def axis_rules(fsdp: bool = False, extra_rules: Sequence[tuple[str, Any]] = ()) -> tuple[tuple[str, Any], ...]:
  """Logical → mesh axis rules; fsdp=True also shards params' 'embed' axis over 'data' (t5x 2-D partitioning)."""
  embed = (('embed', 'data'),) if fsdp else (('embed', None),)
  return tuple(extra_rules) + BASE_RULES + embed


@gin.configurable
def make_mesh(data: int = -1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh; -1 means 'all remaining devices'. Explicit sizes may use a subset of devices."""
  devices = list(devices if devices is not None else jax.devices())
  if data == -1:
    if len(devices) % model:
      raise ValueError(f'mesh model={model} does not divide the {len(devices)} devices')
    data = len(devices) // model
  if data * model > len(devices) or (jax.process_count() > 1 and data * model != len(devices)):
    raise ValueError(f'mesh data={data} x model={model} does not fit the {len(devices)} devices')
  devices = devices[:data * model]
  try:  # topology-aware order on TPU/GPU pods
    grid = mesh_utils.create_device_mesh((data, model), devices)
  except Exception:  # CPU or unusual topologies
    grid = np.asarray(devices).reshape(data, model)
  return Mesh(grid, ('data', 'model'))


def logical_to_sharding(axes_tree: PyTree, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> PyTree:
  """PartitionSpecs of logical names → NamedShardings on the mesh."""
  specs = nn.logical_to_mesh(axes_tree, rules)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P))


def fit_sharding(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
  """Drops mesh axes that do not divide a dimension (e.g. a 6-head model on model=4): replicate that dim."""
  spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
  for i, axis in enumerate(spec):
    if axis is None:
      continue
    names = axis if isinstance(axis, tuple) else (axis,)
    if shape[i] % math.prod(sharding.mesh.shape[n] for n in names):
      spec[i] = None
  return NamedSharding(sharding.mesh, P(*spec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch dimension over 'data', everything else replicated."""
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated."""
  return NamedSharding(mesh, P())
