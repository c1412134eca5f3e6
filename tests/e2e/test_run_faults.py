"""Faults end in one clear message and lose nothing: the first Ctrl-C saves and exits 0, a second one aborts, and a
full disk stops the run at its first failed write with one line naming the path and the free space (also when it
fills in the middle of orbax's background write), the lease released and the previous checkpoint intact.

References: real signals to a real trainer process, a real 3 MB tmpfs (mounted when this process may; else the
test is skipped: tests/training/test_run_folder.py simulates ENOSPC for each writer), the files beside the run.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import REPO, subprocess_env, train_command  # noqa: E402

from flanx.training import checkpoints  # noqa: E402


def start(command: list[str]) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _catches(pid: int, signum: int) -> bool:
  with open(f'/proc/{pid}/status') as f:
    caught = next(int(line.split()[1], 16) for line in f if line.startswith('SigCgt:'))
  return bool(caught & (1 << (signum - 1)))


@pytest.mark.skipif(not pathlib.Path('/proc/self/status').exists(), reason='needs Linux /proc to see the handler')
def test_first_ctrl_c_saves_and_exits_zero_a_second_aborts(tmp_path):
  run = tmp_path / 'run'
  proc = start(train_command(run, 100000, CHECKPOINT_PERIOD=100000))
  metrics = run / 'train_metrics.jsonl'
  deadline = time.time() + 600
  while (not metrics.exists() or len(metrics.read_text().splitlines()) < 5) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  step = checkpoints.RunCheckpoints(str(run)).latest_step()
  assert step is not None and step >= 4
  assert f'Ctrl-C (SIGINT): saving checkpoint_{step} and exiting' in out + err
  assert f'Training preempted at step {step}' in out and 'Traceback' not in err
  assert not (run / 'run_lease.json').exists()

  # Resumed, then two Ctrl-C while it sets up: aborts at once, exit 130, one line, the checkpoint kept.
  proc = start(train_command(run, 100000, CHECKPOINT_PERIOD=100000))
  deadline = time.time() + 300
  while not _catches(proc.pid, signal.SIGTERM) and time.time() < deadline:  # Python catches SIGINT from the start
    time.sleep(0.005)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.5)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-3000:]
  assert 'Aborted by a second Ctrl-C' in err and 'Traceback' not in err
  assert checkpoints.RunCheckpoints(str(run)).latest_step() == step
  assert not (run / 'run_lease.json').exists()


@pytest.fixture
def small_disk(tmp_path):
  disk = tmp_path / 'disk'
  disk.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)], capture_output=True)
  if mounted.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); simulated ENOSPC is tested in '
                'tests/training/test_run_folder.py')
  try:
    yield disk
  finally:
    subprocess.run(['umount', str(disk)], check=False)


def _tree(root: pathlib.Path, leave_out: pathlib.Path) -> dict[str, tuple]:
  """Every file and folder under `root` but outside `leave_out`: files with their mtime and contents."""
  return {str(p): None if p.is_dir() else (p.stat().st_mtime_ns, p.read_bytes())
          for p in root.rglob('*') if p != leave_out and leave_out not in p.parents}


def test_a_full_disk_mid_save_stops_the_run_with_one_line(small_disk, tmp_path):
  """The 3 MB disk holds the run's files (~0.7 MB: compile cache, logs), checkpoint_2 (~0.9 MB) with its data
  position (~0.6 MB) and checkpoint_4's data position, but not checkpoint_4's arrays: the disk fills in the middle
  of orbax's background write, where TensorStore's writer threads used to print a traceback each."""
  (small_disk / 'sibling').mkdir()
  (small_disk / 'sibling' / 'keep.txt').write_text('not the run\'s')
  run = small_disk / 'run'
  outside = _tree(tmp_path, run)
  env = subprocess_env(shared_cache=False)  # the compile cache in the run, on the small disk, as sized above
  proc = subprocess.Popen(train_command(run, 200, CHECKPOINT_PERIOD=2), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  err, reported = [], None
  for line in proc.stderr:  # until the process closes it (at exit)
    err.append(line)
    if line.startswith('ERROR: ') and reported is None:
      reported = time.time()
  proc.wait(timeout=600)
  err, exited = ''.join(err), time.time()
  assert proc.returncode == 1, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith('ERROR: ')]
  assert len(errors) == 1, err[-3000:]
  for noise in ('Traceback', 'Event loop is closed', 'In call to configurable', 'RuntimeError'):
    assert noise not in err, err[-3000:]
  newest = checkpoints.RunCheckpoints(str(run)).latest_step()
  assert newest is not None and newest < 200
  failed = newest + 2
  assert errors[0].startswith(f'ERROR: writing {run}/') and 'No space left on device (' in errors[0]
  assert 'free on' in errors[0] and 'data_state' not in errors[0]  # the data position was written
  if f'{run}/checkpoint_{failed} failed' in errors[0]:  # else TensorBoard's writer thread hit the full disk first
    assert f'the newest intact checkpoint is {run}/checkpoint_{newest}.' in errors[0]
  # It failed in orbax's write of the arrays, after the data position was written: the case this test is for.
  # The position is gone again (none without its checkpoint); orbax's temporary folder goes at the next start.
  assert not (run / 'data_state' / f'checkpoint_{failed}').exists() and not (run / f'checkpoint_{failed}').exists()
  assert (run / 'data_state' / f'checkpoint_{newest}').is_dir()
  assert exited - reported < 30, f'{exited - reported:.0f} s from the error line to exit'
  assert not (run / 'run_lease.json').exists()
  checkpoints.restore_params(str(run / f'checkpoint_{newest}'))  # intact: its checksums pass
  assert _tree(tmp_path, run) == outside
  print(f'full disk mid-save: stopped at checkpoint_{failed} (kept checkpoint_{newest}); exit '
        f'{exited - reported:.1f} s after the error line: {errors[0][:80]}')
