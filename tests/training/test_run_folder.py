"""The run folder is the boundary: links that would lead a write, rename or delete outside MODEL_DIR are refused
before any work, exports never land inside a run folder, and a failed write is one line naming the path and the
free space.

References: the real file system (links made with os.symlink / os.link), and a snapshot of every file beside the
run before and after.
"""

import errno
import os

import pytest

from flanx.training import run_folder


def tree(folder):
  """{relative path: bytes or 'link -> target'} of everything under `folder`, links not followed."""
  out = {}
  for parent, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(parent, name)
      rel = os.path.relpath(path, folder)
      if os.path.islink(path):
        out[rel] = 'link -> ' + os.readlink(path)
      elif os.path.isfile(path):
        with open(path, 'rb') as f:
          out[rel] = f.read()
  return out


def make_run(root):
  """A run folder as the trainer leaves it (names only) and a sibling folder whose files must never change."""
  run, outside = root / 'run', root / 'elsewhere'
  for sub in ('checkpoint_2/params', 'checkpoint_4/params', 'data_state/checkpoint_2', 'data_state/checkpoint_4',
              'train'):
    (run / sub).mkdir(parents=True)
  (run / 'config.gin').write_text('T5Config.d_model = 32\n')
  (run / 'train_metrics.jsonl').write_text('{"step": 4}\n')
  outside.mkdir()
  (outside / 'keep.txt').write_text('not the run\'s')
  return run, outside


@pytest.mark.parametrize('link', ['data_state/checkpoint_0', 'config.gin', 'train_metrics.jsonl', 'train',
                                  'checkpoint_6', 'run_lease.json', 'damaged', 'checkpoint_2/params/array'])
def test_links_out_of_the_run_are_refused_naming_the_link(tmp_path, link):
  run, outside = make_run(tmp_path)
  path = run / link
  if path.exists():
    path.unlink() if path.is_file() else os.rename(path, tmp_path / 'moved')
  os.symlink(outside / 'keep.txt' if link.endswith(('.gin', '.jsonl', '.json', 'array')) else outside, path)
  before = tree(tmp_path)
  with pytest.raises(run_folder.OutsideRunFolderError, match=f'{path} is a symbolic link to {outside}'):
    run_folder.check_confined(str(run))
  assert tree(tmp_path) == before


def test_dangling_link_out_of_the_run_is_refused(tmp_path):
  run, outside = make_run(tmp_path)
  os.symlink(outside / 'new.txt', run / 'data_state' / 'checkpoint_6')  # a save would create outside/new.txt
  with pytest.raises(run_folder.OutsideRunFolderError, match='checkpoint_6 is a symbolic link'):
    run_folder.check_confined(str(run))


def test_links_that_stay_inside_and_a_linked_model_dir_are_fine(tmp_path):
  run, _ = make_run(tmp_path)
  os.symlink(run / 'checkpoint_4', run / 'latest')
  os.symlink('config.gin', run / 'config_copy.gin')
  os.symlink(run, tmp_path / 'run_alias')
  run_folder.check_confined(str(run))
  run_folder.check_confined(str(tmp_path / 'run_alias'))  # MODEL_DIR itself may be a link
  run_folder.check_confined(str(tmp_path / 'missing'))  # a new run: nothing to check
  run_folder.check_confined('gs://bucket/run')  # object stores have no links


@pytest.mark.parametrize('name', ['config.gin', 'train_metrics.jsonl'])
def test_hard_linked_files_rewritten_in_place_are_refused(tmp_path, name):
  run, outside = make_run(tmp_path)
  (run / name).unlink()
  os.link(outside / 'keep.txt', run / name)
  with pytest.raises(run_folder.OutsideRunFolderError, match=f'{name} has 2 hard links'):
    run_folder.check_confined(str(run))


def test_run_folders_are_recognised_by_their_markers(tmp_path):
  run, outside = make_run(tmp_path)
  leased, positions = tmp_path / 'leased', tmp_path / 'positions'
  leased.mkdir()
  (leased / 'run_lease.json').write_text('{}')
  (positions / 'data_state').mkdir(parents=True)
  assert run_folder.enclosing_run_folder(str(run / 'data_state' / 'checkpoint_1')) == str(run)
  assert run_folder.enclosing_run_folder(str(run / 'new' / 'deeper')) == str(run)
  assert run_folder.enclosing_run_folder(str(leased / 'hf')) == str(leased)
  assert run_folder.enclosing_run_folder(str(positions / 'hf')) == str(positions)
  assert run_folder.enclosing_run_folder(str(outside / 'hf')) is None
  assert run_folder.enclosing_run_folder(str(tmp_path)) is None  # a folder of runs is not a run
  os.symlink(run / 'train', tmp_path / 'into_run')
  assert run_folder.enclosing_run_folder(str(tmp_path / 'into_run' / 'hf')) == str(run)


def test_a_failed_write_names_the_path_and_the_free_space(tmp_path):
  error = run_folder.write_failed(str(tmp_path / 'run' / 'train_metrics.jsonl'),
                                  OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
  assert type(error).__name__ == 'CheckpointWriteError'
  text = str(error)
  assert f'writing {tmp_path}/run/train_metrics.jsonl failed: No space left on device (' in text
  assert f'free on {tmp_path})' in text  # the nearest existing parent
  assert '\n' not in text
  tf_style = RuntimeError('{{function_node SaveV2}} /run/data_state/x.tempstate1; No space left on device [Op:SaveV2]')
  assert 'failed: No space left on device' in str(run_folder.write_failed('/run/data_state/x', tf_style))


@pytest.mark.slow
def test_train_refuses_a_linked_data_position_before_any_work(tmp_path):
  """The issue's case: data_state/checkpoint_0 -> elsewhere made the first save delete a file outside the run."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
  from train_helpers import train_in_process  # pylint: disable=g-import-not-at-top
  run, outside = tmp_path / 'run', tmp_path / 'elsewhere'
  (run / 'data_state').mkdir(parents=True)
  outside.mkdir()
  (outside / 'keep.txt').write_text('keep')
  os.symlink(outside, run / 'data_state' / 'checkpoint_0')
  before = tree(tmp_path)
  with pytest.raises(run_folder.OutsideRunFolderError, match='data_state/checkpoint_0 is a symbolic link'):
    train_in_process(run, 2, CHECKPOINT_PERIOD=1)
  assert tree(tmp_path) == before  # no lease, no config.gin, nothing deleted outside


def test_a_full_disk_under_the_metrics_file_is_one_line_and_closing_is_quick(tmp_path, monkeypatch):
  from flanx.training import metrics_writer  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  writer = metrics_writer.MetricsWriter(str(tmp_path / 'run'), progress=False)

  def full(self, *args, **kwargs):  # pylint: disable=unused-argument
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(tf.io.gfile.GFile, 'flush', full)
  with pytest.raises(Exception, match=r'writing .*run/train_metrics.jsonl failed: No space left on device '
                                       r'\(.* free on .*\)') as raised:
    writer.write(1, {'loss': 1.0})
  assert type(raised.value).__name__ == 'CheckpointWriteError'
  writer.close(after_error=True)  # never raises, never waits long: the first error is the one reported


def test_a_full_disk_under_the_data_position_keeps_the_previous_checkpoint(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top

  class FullDisk:
    batches_read = 3

    def save(self, prefix):
      os.makedirs(os.path.dirname(prefix), exist_ok=True)
      open(prefix + '.partial', 'w').close()
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  ckpts = checkpoints.RunCheckpoints(str(tmp_path), keep=3, async_save=False)
  tree = {'w': np.zeros(2, np.float32)}
  ckpts.save(1, tree, tree, {'step': 1})
  with pytest.raises(checkpoints.CheckpointWriteError, match=r'data_state/checkpoint_2 failed: No space left on '
                                                             r'device .*newest intact checkpoint is .*checkpoint_1\.'):
    ckpts.save(2, tree, tree, {'step': 2}, FullDisk())
  ckpts.close()
  assert not (tmp_path / 'data_state' / 'checkpoint_2').exists()  # no partial position left behind
  assert checkpoints.RunCheckpoints(str(tmp_path)).latest_step() == 1


def _late_tensorstore_callbacks(folder) -> None:
  """Real TensorStore writes whose asyncio loop closes before they finish (what a failed orbax save leaves): each
  finished write then tries to hand its result to the closed loop from TensorStore's own thread."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  loop = asyncio.new_event_loop()

  async def start():
    store = await ts.KvStore.open({'driver': 'file', 'path': f'{folder}/'})
    writes = [store.write(f'k{i}', b'x' * 10000) for i in range(20)]
    for write in writes:
      asyncio.ensure_future(write)
    return writes

  writes = loop.run_until_complete(start())
  loop.close()
  for write in writes:
    write.result()


def test_storage_callbacks_after_a_failed_save_are_quiet_other_unraisable_errors_are_not(tmp_path, monkeypatch):
  import gc  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints, storage_callbacks  # pylint: disable=g-import-not-at-top
  reported = []

  def record(unraisable):
    reported.append(unraisable.exc_value)

  monkeypatch.setattr(sys, 'unraisablehook', record)
  _late_tensorstore_callbacks(tmp_path / 'a')
  time.sleep(0.2)
  assert any(str(e) == 'Event loop is closed' for e in reported)  # what used to print a traceback each
  reported.clear()

  ckpts = checkpoints.RunCheckpoints(str(tmp_path / 'run'))
  _late_tensorstore_callbacks(tmp_path / 'b')
  time.sleep(0.2)

  class Broken:
    def __del__(self):
      raise RuntimeError('Event loop is closed')  # the same message from Python code: not a storage callback

  Broken()
  gc.collect()
  assert [str(e) for e in reported] == ['Event loop is closed']  # only Broken's
  ckpts.close()
  assert sys.unraisablehook is record  # closed without a failed save: the previous hook is back
  assert storage_callbacks.quiet() and sys.unraisablehook is not record  # what every command line installs
  storage_callbacks.unquiet()
  assert sys.unraisablehook is record


def test_a_damaged_checkpoint_is_one_error_the_reads_it_abandoned_are_quiet(tmp_path, monkeypatch, caplog):
  """A truncated array file: restore_params raises one error naming TensorStore's reason; the reads orbax abandoned
  (other arrays of the same file) report nothing through sys.unraisablehook, asyncio's logger or warnings once
  quiet() is installed, and do without it (the control)."""
  import gc  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from conftest import _random_params  # pylint: disable=g-import-not-at-top
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints, storage_callbacks  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=384, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=2,
                    num_decoder_layers=2)
  checkpoints.write_params_checkpoint(str(tmp_path / 'run'), 1, _random_params(config, 0), {'step': 1})
  biggest = max((p for p in (tmp_path / 'run').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:biggest.stat().st_size // 2])
  monkeypatch.setattr(storage_callbacks, '_read_failed', False)
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', reported.append)
  caplog.set_level(logging.ERROR, logger='asyncio')

  def noise(quiet: bool) -> list:
    reported.clear()
    caplog.clear()
    if quiet:
      storage_callbacks.quiet()
    with warnings.catch_warnings(record=True) as warned:
      warnings.simplefilter('always')
      for _ in range(4):
        with pytest.raises(checkpoints.CheckpointRestoreError, match='Requested byte range .* is not valid'):
          checkpoints.restore_params(str(tmp_path / 'run'))
        gc.collect()
      time.sleep(0.3)
      gc.collect()
    storage_callbacks.unquiet()
    return reported + [r.getMessage()[:80] for r in caplog.records] + [str(w.message) for w in warned
                                                                     if 'never awaited' in str(w.message)]

  assert noise(quiet=True) == []
  assert noise(quiet=False)  # what each command printed, dozens of lines per abandoned read
  shutil.rmtree(tmp_path / 'run')


@pytest.mark.slow
def test_a_full_disk_under_tensorboard_stops_the_run_instead_of_hanging(tmp_path, monkeypatch):
  """TensorBoard's writer thread dies on the full disk; tensorboardX then blocks each write once its queue is full
  (forever: nothing drains it). The next write must stop the run with one line."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
  from flanx.training import metrics_writer  # pylint: disable=g-import-not-at-top
  writer = metrics_writer.MetricsWriter(str(tmp_path / 'run'), progress=False)

  def full(self, event):  # pylint: disable=unused-argument
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(event_file_writer.EventsWriter, 'write_event', full)
  outcome = []

  def steps():
    try:
      for step in range(1, 50):
        writer.write(step, {f'metric_{i}': 1.0 for i in range(12)})
        time.sleep(0.02)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  runner = threading.Thread(target=steps, daemon=True)
  runner.start()
  runner.join(timeout=30)
  assert not runner.is_alive(), 'write() blocked on TensorBoard\'s full queue'
  assert len(outcome) == 1 and type(outcome[0]).__name__ == 'CheckpointWriteError', outcome
  assert f'writing {tmp_path}/run failed: No space left on device' in str(outcome[0])
  writer.close(after_error=True)
