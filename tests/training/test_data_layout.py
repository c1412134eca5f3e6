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


def test_interleaved_rows_are_fine_uneven_ones_refused():
  mesh = fake_mesh(2, data=4, model=1)  # hosts alternate along the data axis, as TPU meshes may lay them out
  mesh.devices = np.array([[types.SimpleNamespace(process_index=p)] for p in (0, 1, 0, 1)], dtype=object)
  assert [(l.shard_id, l.num_shards, l.host_batch_size) for l in layouts(mesh, 8, 2)] == [(0, 2, 4), (1, 2, 4)]
  mesh = fake_mesh(3, data=3, model=2)
  mesh.devices = np.array([[types.SimpleNamespace(process_index=p) for p in row] for row in ((0, 1), (0, 1), (2, 2))],
                          dtype=object)  # hosts 0 and 1 hold rows 0-1, host 2 row 2 only
  with pytest.raises(ValueError, match=r'uneven or overlapping rows of the batch \(\[\(0, 1\), \(2,\)\]\)'):
    data_layout.data_layout(mesh, 6, 0)


@pytest.mark.parametrize('model, per_host, shards', [(2, 16, 8), (4, 32, 4), (8, 32, 4), (16, 128, 1)])
def test_v4_64_meshes_with_a_model_axis_across_hosts_are_fed(model, per_host, shards):
  # The compile check's view (8 hosts, 32 devices as libtpu lays them out): model=8 spans 2 hosts, which then load
  # the same 32 rows; before the data layout the check refused every model axis wider than a host.
  pytest.importorskip('libtpu', reason='libtpu lays out the compile-only TPU devices')
  from flanx.training import aot, partitioning, tpu_topology  # pylint: disable=g-import-not-at-top
  tpu = tpu_topology.parse('v4-64')
  mesh = partitioning.make_mesh(data=-1, model=model, devices=tpu_topology.compile_only_devices(tpu))
  assert aot.check_host_batches(128, partitioning.batch_sharding(mesh), tpu.hosts) == per_host
  assert len({data_layout.data_layout(mesh, 128, p).shard_id for p in range(tpu.hosts)}) == shards
