"""Which checkpoints `flanx.eval` visits over a run folder: step order, already-evaluated ones skipped, waiting."""

from __future__ import annotations

import pytest

from flanx.inference import eval_run


def _checkpoint(run, step):
  (run / f'checkpoint_{step}' / 'params').mkdir(parents=True)


def test_all_in_step_order_skipping_evaluated_ones(tmp_path):
  run = tmp_path / 'run'
  for step in (30, 10, 20):
    _checkpoint(run, step)
  (run / 'checkpoint_5.orbax-checkpoint-tmp-1').mkdir()  # a save in progress is not a checkpoint
  (run / 'eval' / 'checkpoint_20').mkdir(parents=True)
  (run / 'eval' / 'checkpoint_20' / 'validation_metrics.json').write_text('{}')
  logged = []
  found = list(eval_run.targets(str(run), 'all', None, 'validation', log=logged.append))
  assert [t.step for t in found] == [10, 30]
  assert found[0] == eval_run.Target(str(run / 'checkpoint_10'), 10, str(run / 'eval' / 'checkpoint_10'),
                                     str(run / 'eval'))
  assert logged == [f'checkpoint_20: already evaluated ({run}/eval/checkpoint_20/validation_metrics.json), skipped']
  newest = list(eval_run.targets(str(run), 'newest', str(tmp_path / 'out'), 'validation'))
  assert [(t.step, t.output_dir) for t in newest] == [(30, str(tmp_path / 'out'))]
  with pytest.raises(ValueError, match="expected one of"):
    list(eval_run.targets(str(run), 'every', None, 'validation'))


def test_wait_follows_the_trainer_until_it_releases_the_run(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'run_lease.json').write_text('{}')
  events = iter([lambda: _checkpoint(run, 10), lambda: None, lambda: _checkpoint(run, 20),
                 lambda: (run / 'run_lease.json').unlink()])
  sleeps = []

  def sleep(seconds):
    sleeps.append(seconds)
    next(events)()

  found = [t.step for t in eval_run.targets(str(run), 'wait', None, 'validation', poll_seconds=7, log=print,
                                            sleep=sleep)]
  assert found == [10, 20] and sleeps == [7, 7, 7, 7]


def test_wait_gives_up_after_the_timeout(tmp_path):
  run = tmp_path / 'run'
  _checkpoint(run, 10)
  (run / 'run_lease.json').write_text('{}')  # a trainer that stopped saving
  found = [t.step for t in eval_run.targets(str(run), 'wait', None, 'validation', wait_timeout=0.0,
                                            sleep=lambda s: None, log=print)]
  assert found == [10]
