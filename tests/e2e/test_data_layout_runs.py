"""4 processes x 2 CPU devices with a model axis that spans processes (mesh data=2 x model=4, over gloo): the
processes of one replica set feed identical rows, the two replica sets disjoint ones, and the run equals a
single-process run over the same examples (issue 23, t5x's data layout)."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import REPO, assert_trees_equal, read_metrics, saved_params, subprocess_env, train_command  # noqa: E402

STEPS = 3
# Runs flanx.train, saving every host batch the process feeds as batches/p<process>_<n>.npz.
RECORDING = '''
import runpy, sys
import jax, numpy as np
from flanx.training import data
folder, argv = sys.argv[1], sys.argv[2:]
read = data.CheckpointableIterator.__next__
def recording_next(self):
  batch = read(self)
  np.savez(f'{folder}/p{jax.process_index()}_{self.batches_read}.npz', **batch)
  return batch
data.CheckpointableIterator.__next__ = recording_next
sys.argv = ['flanx.train'] + argv
runpy.run_module('flanx.train', run_name='__main__')
'''


def start(command: list[str], devices: int, batches: pathlib.Path) -> subprocess.Popen:
  batches.mkdir(parents=True, exist_ok=True)
  return subprocess.Popen([sys.executable, '-c', RECORDING, str(batches)] + command[3:], cwd=REPO,
                          env=subprocess_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def host_batches(folder: pathlib.Path, process: int) -> list[dict]:
  return [dict(np.load(folder / f'p{process}_{n}.npz')) for n in range(1, STEPS + 1)]


@pytest.mark.slow
def test_model_axis_across_processes_feeds_identical_rows_per_replica(tmp_path):
  common = {'train.pack': False, 'train.shuffle': False, 'train.async_checkpointing': False,
            'CHECKPOINT_PERIOD': STEPS}
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  runs = [start(train_command(tmp_path / 'one', STEPS, **common, **{'make_mesh.data': 1, 'make_mesh.model': 1}),
                1, tmp_path / 'one_batches')]
  multi = train_command(tmp_path / 'multi', STEPS, **common, **{'make_mesh.data': 2, 'make_mesh.model': 4})
  runs += [start(multi + [f'--coordinator_address=127.0.0.1:{port}', '--process_count=4', f'--process_index={i}'], 2,
                 tmp_path / 'multi_batches') for i in range(4)]
  for proc in runs:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
  hosts = [host_batches(tmp_path / 'multi_batches', p) for p in range(4)]
  single = host_batches(tmp_path / 'one_batches', 0)
  for step in range(STEPS):
    for key in single[step]:
      assert hosts[0][step][key].shape[0] == 4  # half the global batch of 8: two input shards, not four
      np.testing.assert_array_equal(hosts[0][step][key], hosts[1][step][key])  # one replica set, same rows
      np.testing.assert_array_equal(hosts[2][step][key], hosts[3][step][key])
      # seqio shards the examples round-robin: replica set 0 feeds the single run's even rows, set 1 its odd rows
      np.testing.assert_array_equal(hosts[0][step][key], single[step][key][0::2])
      np.testing.assert_array_equal(hosts[2][step][key], single[step][key][1::2])
  losses = {name: [m['loss'] for m in read_metrics(tmp_path / name) if 'loss' in m] for name in ('one', 'multi')}
  np.testing.assert_allclose(losses['multi'], losses['one'], rtol=1e-5)
  assert_trees_equal(saved_params(tmp_path / 'multi', STEPS), saved_params(tmp_path / 'one', STEPS), atol=1e-5)
