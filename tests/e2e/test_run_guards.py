"""Command-line runs: two trainers on one folder (one runs, one refuses), SIGTERM while setting up, and bad
settings that end in one clear message instead of a traceback."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import REPO, read_metrics, subprocess_env, train_command  # noqa: E402


def start(command: list[str], devices: int = 1) -> subprocess.Popen:
  return subprocess.Popen(command, cwd=REPO, env=subprocess_env(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_trainers_on_one_folder_one_runs_one_refuses(tmp_path):
  command = train_command(tmp_path, 30, CHECKPOINT_PERIOD=10)
  procs = [start(command), start(command)]
  results = [(p.wait(timeout=900), *p.communicate()) for p in procs]
  codes = sorted(rc for rc, _, _ in results)
  assert codes == [0, 2], [err[-2000:] for _, _, err in results]
  _, _, refusal = next(r for r in results if r[0] == 2)
  assert 'is in use' in refusal and 'pid' in refusal and 'started' in refusal and 'Traceback' not in refusal
  assert [m['step'] for m in read_metrics(tmp_path) if 'loss' in m] == list(range(1, 31))  # one writer
  assert not (tmp_path / 'run_lease.json').exists()


def _catches_sigterm(pid: int) -> bool:
  with open(f'/proc/{pid}/status') as f:
    caught = next(int(line.split()[1], 16) for line in f if line.startswith('SigCgt:'))
  return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path('/proc/self/status').exists(), reason='needs Linux /proc to see the handler')
def test_sigterm_during_setup_stops_cleanly(tmp_path):
  proc = start(train_command(tmp_path, 1000, CHECKPOINT_PERIOD=1000))
  deadline = time.time() + 120
  while not _catches_sigterm(proc.pid) and time.time() < deadline:
    time.sleep(0.005)
  proc.send_signal(signal.SIGTERM)  # while still importing / parsing / restoring / compiling
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert 'SIGTERM' in out + err
  assert not (tmp_path / 'run_lease.json').exists()


@pytest.mark.slow
@pytest.mark.parametrize('extra, devices, message', [
    ({'BATCH_SIZE': '"x"'}, 1, "BATCH_SIZE = 'x'"),
    ({'BATCH_SIZE': 6}, 4, "BATCH_SIZE (train.batch_size) = 6 is not divisible by num_microbatches x the mesh's "
                          'data-parallel size (1 x 4)'),
    ({'MIXTURE_OR_TASK_NAME': '"flanx_test_copi"'}, 1, 'did you mean flanx_test_copy'),
])
def test_bad_settings_end_in_one_message(tmp_path, extra, devices, message):
  proc = subprocess.run(train_command(tmp_path / 'run', 3, **extra), cwd=REPO, env=subprocess_env(devices),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'run').exists()
