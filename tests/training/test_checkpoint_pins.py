"""A checkpoint being read from a live run (export) is pinned: the trainer's pruning keeps it until the reader is
done, a reader that died stops pinning, and a checkpoint that vanishes anyway is named in one clear message.

References: orbax's own pruning (max kept = 1) on real files; a lease file as the trainer writes it.
"""

import json
import os
import socket
import time

import numpy as np
import pytest

from flanx.training import checkpoint_pins, checkpoints, run_lease


def _lease(run, heartbeat_age=0.0):
  run.mkdir(parents=True, exist_ok=True)
  (run / run_lease.LEASE_FILE).write_text(json.dumps({
      'host': socket.gethostname(), 'pid': os.getpid(), 'started': 'now', 'heartbeat': time.time() - heartbeat_age,
      'token': 'x'}))


def _save(ckpts, step):
  ckpts.save(step, {'w': np.full((3,), step, np.float32)}, {'count': np.zeros((), np.int32)},
             {'step': step, 'batches_read': step})


def test_a_pinned_checkpoint_survives_pruning_until_released(tmp_path):
  run = tmp_path / 'run'
  ckpts = checkpoints.RunCheckpoints(str(run), keep=1, async_save=False)
  _save(ckpts, 1)
  _lease(run)
  with checkpoint_pins.reading(str(run)) as pinned:
    assert pinned == str(run / 'checkpoint_1')
    assert checkpoint_pins.pinned_steps(str(run)) == {1}
    _save(ckpts, 2)
    _save(ckpts, 3)
    assert sorted(ckpts._manager.all_steps()) == [1, 3]  # pylint: disable=protected-access
    assert checkpoints.restore_params(pinned)['w'][0] == 1
  assert os.listdir(run / checkpoint_pins.PINS) == []
  _save(ckpts, 4)
  ckpts.close()
  assert sorted(p.name for p in run.glob('checkpoint_*')) == ['checkpoint_4']


def test_no_pin_without_a_live_trainer(tmp_path):
  run = tmp_path / 'run'
  ckpts = checkpoints.RunCheckpoints(str(run), keep=1, async_save=False)
  _save(ckpts, 1)
  ckpts.close()
  _lease(run, heartbeat_age=3600)  # a lease left by a crashed trainer: nobody prunes
  with checkpoint_pins.reading(str(run)):
    assert not (run / checkpoint_pins.PINS).exists()


def test_pins_of_dead_or_old_readers_do_not_count(tmp_path):
  pins = tmp_path / checkpoint_pins.PINS
  pins.mkdir()
  host = socket.gethostname()
  (pins / f'checkpoint_5.{host}-{os.getpid()}.json').write_text(json.dumps({'time': time.time()}))
  (pins / f'checkpoint_6.{host}-999999999.json').write_text(json.dumps({'time': time.time()}))  # no such process
  (pins / f'checkpoint_7.otherhost-1.json').write_text(json.dumps({'time': time.time() - 7 * 3600}))
  (pins / 'checkpoint_8.otherhost-1.json').write_text(json.dumps({'time': time.time()}))
  assert checkpoint_pins.pinned_steps(str(tmp_path)) == {5, 8}


def test_a_checkpoint_deleted_while_read_is_named(tmp_path):
  run = tmp_path / 'run'
  ckpts = checkpoints.RunCheckpoints(str(run), keep=None, async_save=False)
  _save(ckpts, 1)
  ckpts.close()
  _lease(run)
  import shutil  # pylint: disable=g-import-not-at-top
  with pytest.raises(checkpoints.CheckpointRestoreError, match=r'checkpoint_1 was deleted while it was being read: '
                                                               r'the trainer running in .* pruned it'):
    with checkpoint_pins.reading(str(run / 'checkpoint_1')) as path:
      shutil.rmtree(path)  # a trainer from before pins
      checkpoints.restore_params(path)
  assert os.listdir(run / checkpoint_pins.PINS) == []


@pytest.mark.slow
def test_export_of_a_live_run_pins_the_checkpoint_while_reading_it(tmp_path, random_params, monkeypatch):
  pytest.importorskip('transformers')
  from flanx.interop import hf_export  # pylint: disable=g-import-not-at-top
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2,
                    num_decoder_layers=2)
  run = tmp_path / 'run'
  ckpts = checkpoints.RunCheckpoints(str(run), keep=2, async_save=False)
  ckpts.save(7, random_params(config, 1), {'count': np.zeros((), np.int32)}, {'step': 7, 'batches_read': 7})
  ckpts.close()
  _lease(run)
  seen = []
  restore = checkpoints.restore_params

  def watching(path, *args, **kwargs):
    seen.append(checkpoint_pins.pinned_steps(str(run)))
    return restore(path, *args, **kwargs)

  monkeypatch.setattr(checkpoints, 'restore_params', watching)
  hf_export.export_checkpoint(checkpoint_dir=str(run), output_dir=str(tmp_path / 'hf'), model_config=config,
                              vocab='byte', verify=False, handler=False)
  assert seen == [{7}]  # pinned while its arrays were read
  assert os.listdir(run / checkpoint_pins.PINS) == [] and (tmp_path / 'hf' / 'model.safetensors').exists()
