"""A run folder survives failed starts: nothing written before validation passes, config.gin kept, saved settings
compared up front, finished runs reported, metrics and TensorBoard scalars not repeated after a resume."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import read_metrics, train_in_process  # noqa: E402  pylint: disable=g-import-not-at-top

from flanx.training import checkpoints, run_checks, run_lease  # noqa: E402


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file under `folder` with its bytes."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def loss_steps(model_dir) -> list[int]:
  """Steps of the training-loss rows of train_metrics.jsonl (other rows: reports at step 0, eval)."""
  return [m['step'] for m in read_metrics(model_dir) if 'loss' in m]


@pytest.mark.slow
def test_failed_starts_leave_the_run_folder_untouched(tmp_path):
  run = tmp_path / 'run'
  with pytest.raises(run_checks.RunConfigError, match="flanx_test_cpy.*did you mean flanx_test_copy"):
    train_in_process(run, 4, MIXTURE_OR_TASK_NAME='"flanx_test_cpy"')
  assert not run.exists()  # no config.gin, no TensorBoard events, no lease

  assert train_in_process(run, 4, CHECKPOINT_PERIOD=2)['step'] == 4
  before = snapshot(run)
  assert 'TRAIN_STEPS = 4' in before['config.gin'].decode() and run_lease.LEASE_FILE not in before

  with pytest.raises(run_checks.RunConfigError, match=r'checkpoint_4(.|\n)*T5Config.d_model: checkpoint has 32, '
                                                      r'this run has 64'):
    train_in_process(run, 8, **{'T5Config.d_model': 64})
  with pytest.raises(run_checks.RunConfigError, match=r'BATCH_SIZE: checkpoint has 8, this run has 4(.|\n)*'
                                                      r'restore_data=False'):
    train_in_process(run, 8, BATCH_SIZE=4)
  with pytest.raises(run_checks.RunConfigError, match=r'TRAIN_STEPS.*4.*already at step 4.*already_done_ok'):
    train_in_process(run, 4)
  assert snapshot(run) == before  # same files, same bytes: config.gin, events, metrics, checkpoints

  assert train_in_process(run, 4, **{'train.already_done_ok': True})['step'] == 4
  result = train_in_process(run, 6, CHECKPOINT_PERIOD=2, BATCH_SIZE=4, **{'train.restore_data': False})
  assert result['step'] == 6
  assert 'BATCH_SIZE = 4' in (run / 'config.gin').read_text()
  assert 'BATCH_SIZE = 8' in checkpoints.saved_config(str(run / 'checkpoint_4'))  # the config it was written with
  assert 'BATCH_SIZE = 4' in checkpoints.saved_config(str(run / 'checkpoint_6'))


@pytest.mark.slow
def test_metrics_and_tensorboard_scalars_are_not_repeated_after_a_resume(tmp_path):
  from flanx.training import loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(loop.NonFiniteLossError):  # a crash after step 4 with checkpoint_3 the newest
    train_in_process(tmp_path, 6, CHECKPOINT_PERIOD=3, **{'train.inject_nan_at_step': 5})
  assert loss_steps(tmp_path) == [1, 2, 3, 4]
  train_in_process(tmp_path, 6, CHECKPOINT_PERIOD=3)
  assert loss_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
  steps = [m['step'] for m in read_metrics(tmp_path)]
  assert steps == sorted(set(steps))  # no row repeated (a fresh start's step-0 report included)

  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  events = event_accumulator.EventAccumulator(str(tmp_path / 'train'))
  events.Reload()
  assert [e.step for e in events.Scalars('loss')] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_stale_lease_is_taken_over_only_when_asked(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  lease = {'host': 'tpu-vm-that-died', 'pid': 7, 'started': '2026-01-02T03:04:05+00:00',
           'heartbeat': time.time() - 3600, 'token': 'old'}
  (tmp_path / run_lease.LEASE_FILE).write_text(json.dumps(lease))
  with pytest.raises(run_lease.LeaseHeldError, match=r'stale lease .*host tpu-vm-that-died, pid 7, started '
                                                     r'2026-01-02.*--gin.train.take_over_stale_lease=True'):
    train_in_process(tmp_path, 2)
  assert json.loads((tmp_path / run_lease.LEASE_FILE).read_text())['token'] == 'old'  # untouched
  assert train_in_process(tmp_path, 2, **{'train.take_over_stale_lease': True})['step'] == 2
  assert not (tmp_path / run_lease.LEASE_FILE).exists()
