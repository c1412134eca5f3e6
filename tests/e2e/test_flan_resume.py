"""Exact resume on the Flan 2022 mixture (issue 23): a run killed between checkpoints and restarted trains on the
same batches as an uninterrupted run, bitwise. Uncached, the Flan sources are Python generators whose iterator
state tf.data cannot save (the save says so, naming the checkpoint; the restore rebuilds the pipeline and
replays the batches read, saying how many); from seqio's cache (USE_CACHED_TASKS) the position is saved and
restored, so nothing is replayed."""

from __future__ import annotations

import concurrent.futures
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'tasks'))
from train_helpers import (REPO, TESTS, assert_trees_equal, read_metrics, saved_params,  # noqa: E402
                           subprocess_env, train_command)
from test_tasks_flan_mirrors import CAPS, write_openorca  # noqa: E402  (the Open-Orca/FLAN layout)

STEPS, PERIOD, KILL_AT = 10, 4, 6  # killed after checkpoint_4 is committed: steps 5-6 are trained twice


def flan_run(model_dir, **extra) -> list[str]:
  """A tiny run on flan2022_submix read from the mirror folder (caps small enough that epochs resample)."""
  return train_command(
      model_dir, STEPS, MIXTURE_OR_TASK_NAME='"flan2022_submix"', MIXTURE_OR_TASK_MODULE='"tasks.flan"',
      CHECKPOINT_PERIOD=PERIOD, **{'T5Config.dropout_rate': 0.1, 'train.truncation_examples': 0,
                                   'tasks.flan.register_flan2022.caps': repr(CAPS),
                                   'tasks.flan.register_flan2022.shuffle_buffer': 16}, **extra)


def run(command: list[str], data: pathlib.Path, cache: pathlib.Path | None = None) -> subprocess.CompletedProcess:
  env = dict(subprocess_env(), FLANX_FLAN_DATA=str(data), FLANX_VOCAB='byte')
  if cache is not None:
    env['FLANX_TASK_CACHE_DIRS'] = str(cache)
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def killed_then_resumed(model_dir: pathlib.Path, data: pathlib.Path, cache: pathlib.Path | None,
                        **extra) -> subprocess.CompletedProcess:
  crash = ([sys.executable, str(TESTS / 'crash_launcher.py'), 'mid_step', str(KILL_AT), '--'] +
           flan_run(model_dir, **extra)[3:])
  killed = run(crash, data, cache)
  assert killed.returncode == -9, f'rc={killed.returncode}\n{killed.stderr[-3000:]}'
  assert (model_dir / f'checkpoint_{PERIOD}').is_dir() and not (model_dir / f'checkpoint_{2 * PERIOD}').exists()
  return run(flan_run(model_dir, **extra), data, cache)


@pytest.mark.slow
@pytest.mark.parametrize('cached', [False, True], ids=['uncached', 'cached'])
def test_flan_mixture_resume_is_bitwise_exact(tmp_path, cached):
  data = tmp_path / 'flan'
  data.mkdir()
  write_openorca(data)
  cache, extra = None, {}
  if cached:
    pytest.importorskip('apache_beam')
    cache = tmp_path / 'cache'
    made = run([sys.executable, '-m', 'seqio.scripts.cache_tasks_main', '--module_import=tasks.flan',
                '--tasks=flan2022_.*', f'--output_cache_dir={cache}', '--min_shards=2'], data)
    assert made.returncode == 0, made.stderr[-3000:]
    extra = {'USE_CACHED_TASKS': True}
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    straight = pool.submit(run, flan_run(tmp_path / 'straight', **extra), data, cache)
    resumed = pool.submit(killed_then_resumed, tmp_path / 'resumed', data, cache, **extra)
    straight, resumed = straight.result(), resumed.result()
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  log = resumed.stdout + resumed.stderr
  assert f'Resuming from {tmp_path / "resumed"}/checkpoint_{PERIOD}' in log
  saved_position = tmp_path / 'resumed' / 'data_state' / f'checkpoint_{PERIOD}' / 'process_0.index'
  if cached:  # TFRecord reads: the position is saved, nothing replayed (resume cost does not grow with the step)
    assert saved_position.exists() and 'Replayed' not in log and 'could not be saved' not in log
  else:
    assert 'could not be saved with checkpoint_4' in straight.stdout + straight.stderr  # reported, not swallowed
    assert f'Replayed {PERIOD} batches of the rebuilt input pipeline' in log and not saved_position.exists()
  losses = lambda d: [(m['step'], m['loss']) for m in read_metrics(d) if 'loss' in m]
  assert losses(tmp_path / 'resumed') == losses(tmp_path / 'straight')  # every step, its batch's loss
  assert_trees_equal(saved_params(tmp_path / 'resumed', STEPS), saved_params(tmp_path / 'straight', STEPS))
