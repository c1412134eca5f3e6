"""A checkpoint's meta (flanx/training/checkpoint_meta.py): the metas earlier flanx versions wrote read with their
values (absent keys as the documented defaults), write back as the same JSON, and a new checkpoint's meta file is
what the typed record says.

The JSON objects below are metas of real checkpoints written before the typed record existed (the trainer's run
signature shortened, the checksums cut to two arrays each); nothing here was produced by the code under test.
"""

import json
import re

import numpy as np
import pytest

from flanx.training import checkpoints
from flanx.training.checkpoint_meta import CheckpointMeta

_RUN = {'T5Config.vocab_size': 384, 'T5Config.d_model': 32, 'T5Config.lora': None, 'BATCH_SIZE': 8,
        'TASK_FEATURE_LENGTHS': {'inputs': 24, 'targets': 12}, 'MIXTURE_OR_TASK_NAME': 'flanx_test_copy',
        'train.pack': False}
_CHECKSUMS = {'params': {"['decoder']['decoder_norm']['scale']": 'float32[32]:488f2cfed7dafb68'},
              'opt_state': {'.count': 'int32[]:000000044b28bc3c'}}
# The trainer, version 2 (checksums, data fingerprint, keep-best metrics): a full fine-tuning run.
TRAINER_V2 = {'step': 4, 'batches_read': 4, 'seed': 42, 'data_seed': 42, 'run': _RUN,
              'config_gin': 'import flanx.model.peft\n', 'schedule_offset': 0, 'peft': None, 'base': None,
              'initial_adapter': None, 'data_sources': {},
              'eval_metrics': {'eval/validation/accuracy': 0.0555, 'inference_eval/flanx_test_copy/exact_match': 0.0},
              'checkpoint_version': 2, 'checksums': _CHECKSUMS}
# A LoRA run on a base checkpoint (the demo's), seed 7.
TRAINER_LORA = {'step': 3, 'batches_read': 3, 'seed': 7, 'data_seed': 42,
                'run': {**_RUN, 'INITIAL_CHECKPOINT_PATH': '/runs/base/checkpoint_0'}, 'config_gin': '',
                'schedule_offset': 0, 'peft': 'lora', 'base': '/runs/base/checkpoint_0', 'initial_adapter': None,
                'data_sources': {'flanx_demo': {'/data/demo_dolly.jsonl': [284045, 'sha256:a0568d828a1c3019']}},
                'checkpoint_version': 2, 'checksums': _CHECKSUMS}
# A flanx from before checksums and data fingerprints (no checkpoint_version, data_sources).
TRAINER_UNVERSIONED = {'step': 2, 'batches_read': 2, 'seed': 42, 'data_seed': 42, 'run': _RUN, 'config_gin': '',
                       'schedule_offset': 0, 'peft': None, 'base': None, 'initial_adapter': None,
                       'checksums': _CHECKSUMS}
# An import (flanx.import_t5x) and a params-only checkpoint of the first trainer versions: step only.
IMPORT = {'step': 1000, 'imported_from': '/t5x/checkpoint_1000', 'format': 't5x', 'checkpoint_version': 2,
          'checksums': {'params': _CHECKSUMS['params']}}
STEP_ONLY = {'step': 0}


def _without_nulls(meta: dict) -> dict:
  return {k: v for k, v in meta.items() if v is not None}


@pytest.mark.parametrize('written', [TRAINER_V2, TRAINER_LORA, TRAINER_UNVERSIONED, IMPORT, STEP_ONLY])
def test_every_meta_written_before_reads_and_writes_back_the_same(written):
  meta = CheckpointMeta.from_json(json.loads(json.dumps(written)))
  assert meta.step == written['step']
  for key, value in written.items():
    if value is not None:
      assert getattr(meta, key) == value, key
  # Written again (as a writer passes it), the JSON is the same, in the same order; a null is not written.
  again = CheckpointMeta.from_json(written, defaults=False).to_json()
  assert again == _without_nulls(written) and list(again) == list(_without_nulls(written))


def test_absent_keys_read_as_the_documented_defaults():
  old = CheckpointMeta.from_json(IMPORT)
  assert (old.seed, old.data_seed, old.schedule_offset, old.batches_read) == (42, 42, 0, 0)
  assert old.peft is None and old.base is None and old.run is None and old.task is None and old.eval_metrics is None
  empty = CheckpointMeta.from_json({})
  assert empty.step is None and empty.checkpoint_version is None and empty.checksums is None
  assert CheckpointMeta.from_json(TRAINER_LORA).seed == 7  # a recorded value is never replaced by a default
  assert CheckpointMeta.from_json(TRAINER_LORA).task == 'flanx_test_copy'


def test_keys_of_a_newer_flanx_are_kept_and_written_back():
  newer = {**TRAINER_V2, 'checkpoint_version': 3, 'mesh_layout': {'data': 4, 'model': 2}, 'extra': [1]}
  meta = CheckpointMeta.from_json(newer)
  assert meta.extra == {'mesh_layout': {'data': 4, 'model': 2}, 'extra': [1]} and meta.checkpoint_version == 3
  assert meta.to_json() == _without_nulls(newer)


@pytest.mark.parametrize('key, value, expected', [('seed', '42', 'an integer'), ('step', True, 'an integer'),
                                                  ('run', [1], 'an object'), ('base', 3, 'a string')])
def test_a_value_of_the_wrong_type_names_its_key(key, value, expected):
  with pytest.raises(ValueError, match=f'^{re.escape(f"RUN/meta: {key} = {value!r}: expected {expected}")}$'):
    CheckpointMeta.from_json({**TRAINER_V2, key: value}, 'RUN/meta')


def test_a_saved_checkpoint_records_the_typed_meta(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path / 'run'), keep=None, async_save=False)
  params, opt_state = {'w': np.arange(3, dtype=np.float32)}, {'count': np.zeros((), np.int32)}
  meta = CheckpointMeta.from_json(TRAINER_LORA, defaults=False).replace(checksums=None, checkpoint_version=None)
  ckpts.save(3, params, opt_state, meta)
  ckpts.save(4, params, opt_state, {'step': 4})  # a small dict (tests) is written as given
  ckpts.close()
  on_disk = json.loads((tmp_path / 'run' / 'checkpoint_3' / 'meta' / 'metadata').read_text())
  assert on_disk == {**_without_nulls(TRAINER_LORA), 'checksums': on_disk['checksums']}
  assert set(on_disk['checksums']) == {'params', 'opt_state'} and on_disk['checkpoint_version'] == checkpoints.VERSION
  assert list(on_disk) == list(_without_nulls(TRAINER_LORA))
  small = json.loads((tmp_path / 'run' / 'checkpoint_4' / 'meta' / 'metadata').read_text())
  assert list(small) == ['step', 'checkpoint_version', 'checksums']
  assert checkpoints.read_meta(str(tmp_path / 'run' / 'checkpoint_3')) == CheckpointMeta.from_json(on_disk)


def test_a_damaged_meta_file_names_the_file_and_key(tmp_path):
  folder = tmp_path / 'checkpoint_5' / 'meta'
  folder.mkdir(parents=True)
  (folder / 'metadata').write_text(json.dumps({**STEP_ONLY, 'batches_read': 'many'}))
  with pytest.raises(checkpoints.CheckpointRestoreError, match=r"checkpoint_5/meta/metadata is not a valid "
                                                               r"checkpoint meta \(.*batches_read = 'many'"):
    checkpoints.read_meta(str(tmp_path / 'checkpoint_5'))
  (folder / 'metadata').write_text('{"step": 5')
  with pytest.raises(checkpoints.CheckpointRestoreError, match='checkpoint_5/meta/metadata is not a valid'):
    checkpoints.read_meta(str(tmp_path / 'checkpoint_5'))
