"""kill -9 at seven points of a run (and once, unassisted, at whatever it was doing when its second checkpoint
appeared), then the same command again: every resume ends bitwise identical to an uninterrupted run, with each
step's metrics written once and no lease left behind."""

from __future__ import annotations

import concurrent.futures
import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import (REPO, TESTS, assert_trees_equal, read_metrics, saved_params,  # noqa: E402
                           subprocess_env, train_command)

STEPS = 40
EXTRA = {'CHECKPOINT_PERIOD': 10, 'T5Config.dropout_rate': 0.1}
# (name, [(kill point, step) of each interrupted attempt]); the last attempt always runs to the end.
SCENARIOS = [
    ('during_setup', [('setup', 0)]),
    ('between_checkpoints', [('mid_step', 15)]),
    ('after_data_position_before_commit', [('after_data_state', 20)]),
    ('mid_save', [('mid_save', 20)]),
    ('right_after_commit', [('after_save', 20)]),
    ('mid_final_save', [('mid_save', STEPS)]),
    ('then_again_during_restore', [('mid_step', 25), ('during_restore', 0)]),
    ('unassisted', [('when_checkpoint_appears', 20)]),  # no launcher: the plain command, killed from outside
]


def run(command: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)


def attempt(model_dir: pathlib.Path, point: str, step: int) -> subprocess.CompletedProcess:
  if point == 'when_checkpoint_appears':
    return kill_when(model_dir / f'checkpoint_{step}', train_command(model_dir, STEPS, **EXTRA))
  train_args = train_command(model_dir, STEPS, **EXTRA)[3:]  # drop `python -m flanx.train`
  return run([sys.executable, str(TESTS / 'crash_launcher.py'), point, str(step), '--'] + train_args)


def kill_when(path: pathlib.Path, command: list[str]) -> subprocess.CompletedProcess:
  victim = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not path.is_dir() and victim.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  victim.send_signal(signal.SIGKILL)
  _, err = victim.communicate()
  return subprocess.CompletedProcess(command, victim.returncode, '', err)


def play(tmp_path: pathlib.Path, name: str, kills: list[tuple[str, int]]) -> tuple[str, str]:
  model_dir = tmp_path / name
  for point, step in kills:
    proc = attempt(model_dir, point, step)
    assert proc.returncode == -9, f'{name}: {point} did not die: rc={proc.returncode}\n{proc.stderr[-3000:]}'
  final = run(train_command(model_dir, STEPS, **EXTRA))
  assert final.returncode == 0, f'{name}:\n{final.stderr[-3000:]}'
  return name, final.stdout + final.stderr


@pytest.mark.slow
def test_kill_9_resume_matrix(tmp_path):
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    reference = pool.submit(run, train_command(tmp_path / 'reference', STEPS, **EXTRA))
    plays = [pool.submit(play, tmp_path, name, kills) for name, kills in SCENARIOS]
    assert reference.result().returncode == 0, reference.result().stderr[-3000:]
    outputs = dict(p.result() for p in plays)
  expected = saved_params(tmp_path / 'reference', STEPS)
  differ = []
  for name, _ in SCENARIOS:
    try:
      assert_trees_equal(saved_params(tmp_path / name, STEPS), expected)
    except AssertionError as e:
      differ.append(f'{name}: {str(e)[:300]}')
  assert not differ, '\n'.join(differ)
  for name, kills in SCENARIOS:
    folder = tmp_path / name
    rows = read_metrics(folder)
    assert [m['step'] for m in rows if 'loss' in m] == list(range(1, STEPS + 1)), name
    assert [m['step'] for m in rows] == sorted({m['step'] for m in rows}), name  # no row written twice
    assert not (folder / 'run_lease.json').exists(), name
    assert not list(folder.glob('*orbax-checkpoint-tmp*')), name
    if kills[-1][0] != 'setup':
      assert 'Resuming from' in outputs[name], name
