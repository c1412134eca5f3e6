"""Which rows of the global batch each host feeds (t5x's data layout, re-implemented from its semantics).

The global batch is split over the mesh's 'data' axis: data index i holds rows [i*B/D, (i+1)*B/D). A host holds
the rows of the data indices its devices sit at. Hosts whose devices sit at the same data indices (a model axis
that spans hosts) must feed identical rows: they form one replica set, read the same input shard and build the
same per-host batch (its rows in the order of their data indices, which need not be contiguous: TPU meshes
interleave hosts); hosts of different replica sets read disjoint shards. So the input is split into as many
shards as there are replica sets, not as many as there are hosts.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataLayout:
  """This host's input shard: `shard_id` of `num_shards` (seqio ShardInfo), `host_batch_size` rows of it per step."""
  batch_size: int
  shard_id: int
  num_shards: int
  first_in_replica_set: bool  # the one host of its replica set that e.g. writes per-shard outputs

  @property
  def host_batch_size(self) -> int:
    return self.batch_size // self.num_shards


def data_layout(mesh: jax.sharding.Mesh, batch_size: int, process_index: int | None = None) -> DataLayout:
  """The layout of `process_index` (default: this process) for a global `batch_size` on `mesh`."""
  process_index = jax.process_index() if process_index is None else process_index
  data_axis = mesh.axis_names.index('data')
  rows: dict[int, set[int]] = {}  # process -> the data indices its devices sit at
  for position, device in np.ndenumerate(mesh.devices):
    rows.setdefault(device.process_index, set()).add(position[data_axis])
  replica_sets = sorted({tuple(sorted(r)) for r in rows.values()})
  sizes = {len(a) for a in replica_sets}
  if len(sizes) > 1 or len({i for a in replica_sets for i in a}) != sum(len(a) for a in replica_sets):
    raise ValueError(f'the mesh gives hosts uneven or overlapping rows of the batch ({replica_sets}): each host '
                     "must hold the same number of the batch's data indices, and two hosts the same or none")
  num_shards = len(replica_sets)
  if batch_size % mesh.shape['data']:
    raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by the mesh data axis ({mesh.shape["data"]})')
  mine = tuple(sorted(rows[process_index]))
  first = min(p for p, r in rows.items() if tuple(sorted(r)) == mine)
  return DataLayout(batch_size, replica_sets.index(mine), num_shards, first == process_index)
