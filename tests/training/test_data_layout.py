"""t5x's data layout (issue 23): hosts whose devices hold the same rows of the global batch (a model axis spanning
hosts) read the same input shard; the others read disjoint shards."""

import types

import numpy as np
import pytest

from flanx.training import data_layout


def fake_mesh(processes, data, model):
  """A ('data', 'model') mesh of `processes` hosts with their devices in process order, as jax.devices() lists."""
  per = data * model // processes
  devices = np.array([types.SimpleNamespace(process_index=i // per) for i in range(data * model)],
                     dtype=object).reshape(data, model)
  return types.SimpleNamespace(axis_names=('data', 'model'), devices=devices, shape={'data': data, 'model': model})


def layouts(mesh, batch, processes):
  return [data_layout.data_layout(mesh, batch, p) for p in range(processes)]


def test_model_axis_spanning_hosts_pairs_them_on_one_shard():
  got = layouts(fake_mesh(4, data=2, model=4), 16, 4)  # hosts 0,1 hold rows 0-7; hosts 2,3 rows 8-15
  assert [(l.shard_id, l.num_shards, l.host_batch_size, l.first_in_replica_set) for l in got] == [
      (0, 2, 8, True), (0, 2, 8, False), (1, 2, 8, True), (1, 2, 8, False)]


def test_model_axis_within_hosts_gives_every_host_its_shard():
  for mesh in (fake_mesh(4, data=8, model=1), fake_mesh(4, data=4, model=2)):
    got = layouts(mesh, 32, 4)
    assert [(l.shard_id, l.num_shards, l.host_batch_size) for l in got] == [(i, 4, 8) for i in range(4)]
    assert all(l.first_in_replica_set for l in got)


def test_one_host_reads_everything():
  (only,) = layouts(fake_mesh(1, data=2, model=4), 8, 1)
  assert (only.shard_id, only.num_shards, only.host_batch_size) == (0, 1, 8)


def test_scattered_rows_are_refused():
  mesh = fake_mesh(2, data=4, model=1)
  mesh.devices = np.array([[types.SimpleNamespace(process_index=p)] for p in (0, 1, 0, 1)], dtype=object)
  with pytest.raises(ValueError, match=r'uneven or scattered rows of the batch \(\[\(0, 2\), \(1, 3\)\]\)'):
    data_layout.data_layout(mesh, 8, 0)
