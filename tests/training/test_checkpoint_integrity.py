"""Checkpoints prove themselves: damaged arrays are caught at restore and export (fallback to the previous intact
checkpoint, or a stop), a bad data position names its file and the way out, and a failed background save stops
the run at once with the previous checkpoint kept."""

from __future__ import annotations

import errno
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import assert_trees_equal, read_metrics, saved_params, train_in_process  # noqa: E402

from flanx.training import checkpoints  # noqa: E402


def flip_bytes(checkpoint: pathlib.Path, item: str = 'params') -> pathlib.Path:
  """Flips a few bytes in the middle of the item's largest data file (bit rot, a bad copy)."""
  files = [p for p in (checkpoint / item).rglob('*') if p.is_file() and p.parent.name == 'd']
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  for offset in (len(data) // 3, len(data) // 2):
    data[offset] ^= 0xFF
  target.write_bytes(bytes(data))
  return target


@pytest.mark.slow
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  train_in_process(tmp_path / 'reference', 6, CHECKPOINT_PERIOD=2)
  run = tmp_path / 'run'
  train_in_process(run, 4, CHECKPOINT_PERIOD=2)
  flip_bytes(run / 'checkpoint_4')
  with pytest.raises(checkpoints.CheckpointRestoreError, match=r'checkpoint_4/params(: | )'):  # checksums, or a decode error
    checkpoints.restore_params(str(run / 'checkpoint_4'))  # what export reads
  capsys.readouterr()

  assert train_in_process(run, 6, CHECKPOINT_PERIOD=2)['step'] == 6
  log = capsys.readouterr().out
  assert 'checkpoint_4 is damaged and was moved to' in log and 'Resuming from' in log and 'checkpoint_2' in log
  assert len(list((run / 'damaged').iterdir())) == 1
  assert_trees_equal(saved_params(run, 6), saved_params(tmp_path / 'reference', 6))  # steps 3..6 redone exactly
  assert [m['step'] for m in read_metrics(run) if 'loss' in m] == [1, 2, 3, 4, 5, 6]

  for step in (2, 4, 6):
    flip_bytes(run / f'checkpoint_{step}', 'opt_state' if step == 4 else 'params')
  before = sorted(p.name for p in run.iterdir())
  with pytest.raises(checkpoints.CheckpointRestoreError, match=r'checkpoint_6'):  # every one damaged: stop
    train_in_process(run, 8, CHECKPOINT_PERIOD=2)
  assert sorted(p.name for p in run.iterdir()) == before  # nothing moved, nothing written, lease released


@pytest.mark.slow
def test_garbage_data_position_names_its_file_and_the_way_out(tmp_path):
  train_in_process(tmp_path, 2, CHECKPOINT_PERIOD=2)
  index = tmp_path / 'data_state' / 'checkpoint_2' / 'process_0.index'
  assert index.exists()
  index.write_bytes(b'not an sstable')
  with pytest.raises(checkpoints.CheckpointRestoreError,
                     match=r'data position of .*checkpoint_2 .*process_0.index(.|\n)*--gin.train.restore_data=False'):
    train_in_process(tmp_path, 4, CHECKPOINT_PERIOD=2)
  assert train_in_process(tmp_path, 4, CHECKPOINT_PERIOD=2, **{'train.restore_data': False})['step'] == 4


def test_position_of_a_pipeline_built_otherwise_names_the_setting(tmp_path):
  """A data position saved from a pipeline interleaving its files in parallel (tasks/cached_reads.py on a host with
  more than 4 cores) does not restore into the sequential one; the error says which setting to match."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from flanx.training import data  # pylint: disable=g-import-not-at-top

  def pipeline(parallel):
    files = tf.data.Dataset.range(8).shuffle(8, seed=1)
    rows = files.interleave(lambda i: tf.data.Dataset.range(i * 10, i * 10 + 10), cycle_length=4, block_length=2,
                            num_parallel_calls=4 if parallel else None)
    return lambda: rows.batch(3).map(lambda x: {'x': x})

  run = checkpoints.RunCheckpoints(str(tmp_path), async_save=False)
  saved = data.CheckpointableIterator(pipeline(True), log=lambda m: None)
  for _ in range(3):
    next(saved)
  assert saved.save(run.data_state_prefix(3))
  with pytest.raises(checkpoints.CheckpointRestoreError,
                     match=r'parallel_file_reads.enabled=True if it had more than 4 cores(.|\n)*restore_data=False'):
    run.restore_data_position(data.CheckpointableIterator(pipeline(False), log=lambda m: None), 3, 3)
  resumed = data.CheckpointableIterator(pipeline(True), log=lambda m: None)
  run.restore_data_position(resumed, 3, 3)
  assert next(resumed)['x'].tolist() == next(saved)['x'].tolist()


@pytest.mark.slow
def test_failed_background_save_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  commit = atomicity.AtomicRenameTemporaryPath.finalize
  failed_at = []

  async def disk_full_at_step_20(self):  # the commit of checkpoint_20 fails as on a full disk
    if self.get_final().name == 'checkpoint_20':
      failed_at.append(max(m['step'] for m in read_metrics(tmp_path)))  # the step training had reached
      raise OSError(errno.ENOSPC, 'No space left on device', str(self.get()))
    await commit(self)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', disk_full_at_step_20)
  with pytest.raises(checkpoints.CheckpointWriteError, match=r'checkpoint_20 failed: .*No space left on device'
                                                             r'.*newest intact checkpoint is .*checkpoint_10'):
    train_in_process(tmp_path, 200, CHECKPOINT_PERIOD=10)
  assert max(m['step'] for m in read_metrics(tmp_path)) <= failed_at[0] + 2  # stopped at the next step
  monkeypatch.undo()
  assert checkpoints.RunCheckpoints(str(tmp_path)).latest_step() == 10
  checkpoints.restore_params(str(tmp_path / 'checkpoint_10'))  # intact, checksums pass
