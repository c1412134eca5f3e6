"""A config recorded in a checkpoint is data: appended imports, includes and bindings of the export command are
left out, references may only name the model's configurables, and command-line flags win.

References: a module on sys.path that leaves a marker file when imported (proof of import), and the file tree
beside the run before and after.
"""

import json
import os
import sys

import gin
import numpy as np
import pytest
import seqio

from flanx import export
from flanx.model.config import T5Config
from flanx.training import checkpoints, recorded_config

pytest.importorskip('transformers')

TASK = 'flanx_recorded_config_byte'
CONFIG = dict(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2)


def _tree(folder):
  out = {}
  for parent, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(parent, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


@pytest.fixture
def run(tmp_path, random_params):
  """A run whose checkpoint recorded a config (as the trainer writes it) naming the byte-vocabulary task."""
  if TASK not in seqio.TaskRegistry.names():
    source = seqio.FunctionDataSource(lambda split, shuffle_files, seed=None: None, splits=('train',))
    seqio.TaskRegistry.add(TASK, source=source, output_features={
        'inputs': seqio.Feature(seqio.ByteVocabulary()), 'targets': seqio.Feature(seqio.ByteVocabulary())})
  gin.clear_config()
  lines = ['import flanx.training.loop', 'import flanx.model.config', f"train.mixture_or_task_name = '{TASK}'",
           "train.task_feature_lengths = {'inputs': 32, 'targets': 16}",
           'train.model_config = @T5Config()'] + [f'T5Config.{k} = {v}' for k, v in CONFIG.items()]
  run_dir = tmp_path / 'runs' / 'model'
  ckpts = checkpoints.RunCheckpoints(str(run_dir), keep=None, async_save=False)
  ckpts.save(10, random_params(T5Config(**CONFIG), 1), {'count': np.zeros((), np.int32)},
             {'step': 10, 'batches_read': 10, 'config_gin': '\n'.join(lines) + '\n'})
  ckpts.close()
  return run_dir


def _append_to_recorded(run_dir, text):
  path = run_dir / 'checkpoint_10' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  meta['config_gin'] += text
  path.write_text(json.dumps(meta))


def _export(*args):
  gin.clear_config()
  try:
    return export.main(list(args))
  finally:
    gin.clear_config()


def test_appended_import_and_overwrite_are_ignored(run, tmp_path, capsys, monkeypatch):
  """The issue's case: `import evilmod` and `export_checkpoint.overwrite = True` appended to config_gin."""
  marker = tmp_path / 'imported.txt'
  (tmp_path / 'evilmod.py').write_text(f'open({str(marker)!r}, "w").write("ran")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  _append_to_recorded(run, '\nimport evilmod\nexport_checkpoint.overwrite = True\n'
                           f"export_checkpoint.output_dir = '{tmp_path / 'elsewhere'}'\n")
  out = tmp_path / 'existing'
  out.mkdir()
  (out / 'mine.txt').write_text('keep me')
  before = _tree(tmp_path)
  with pytest.raises(FileExistsError, match='not empty'):  # overwrite came from the recorded config only
    _export('--checkpoint_dir', str(run), '--output_dir', str(out), '--verify=false', '--handler=false')
  assert not marker.exists() and 'evilmod' not in sys.modules
  assert _tree(tmp_path) == before
  printed = capsys.readouterr().out
  assert 'import evilmod' in printed and 'export_checkpoint.overwrite' in printed


@pytest.mark.parametrize('line, reported', [
    ("include '/etc/evil.gin'", "include '/etc/evil.gin'"),
    ('from __gin__ import dynamic_registration', 'import __gin__.dynamic_registration'),
    ('T5Config.d_model = @train()', 'T5Config.d_model refers to @train'),
    ('X = @export_checkpoint()', 'X refers to @export_checkpoint'),
])
def test_code_paths_in_a_recorded_config_are_left_out(line, reported):
  kept, dropped = recorded_config.filter_config(f'import flanx.model.config\n{line}\nT5Config.d_kv = 8\n', 'meta')
  assert kept == 'T5Config.d_kv = 8\n'
  assert [d for d in dropped if reported in d] == [d for d in dropped if 'line 2' in d]
  assert any(reported in d for d in dropped)


def test_describing_bindings_and_macros_are_kept_across_lines():
  text = ("import flanx.training.loop as flanx2\nTASK_FEATURE_LENGTHS = {'inputs': 32,\n    'targets': 16}\n"
          'train.task_feature_lengths = %TASK_FEATURE_LENGTHS\nget_dataset.seed = 3\n'
          'train.learning_rate_schedule = @schedules.constant()\n')
  kept, dropped = recorded_config.filter_config(text, 'meta')
  assert kept == text.split('\n', 1)[1].replace('get_dataset.seed = 3\n', '')
  assert dropped == []  # flanx's own imports and unrelated bindings are left out silently


def test_the_command_line_wins_and_a_recorded_task_module_is_not_imported(run, tmp_path, monkeypatch):
  marker = tmp_path / 'imported.txt'
  (tmp_path / 'my_tasks.py').write_text(f'open({str(marker)!r}, "w").write("ran")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  _append_to_recorded(run, "\ntrain.mixture_or_task_module = 'my_tasks'\nT5Config.d_model = 64\n")
  with pytest.raises(recorded_config.RecordedConfigError, match='--gin.MIXTURE_OR_TASK_MODULE="my_tasks"'):
    _export('--checkpoint_dir', str(run), '--output_dir', str(tmp_path / 'out'), '--verify=false',
            '--gin.T5Config.d_model=32')
  assert not marker.exists()
  # --vocab needs no task module; d_model = 64 from the recorded config is overridden by the command line.
  assert _export('--checkpoint_dir', str(run), '--output_dir', str(tmp_path / 'out'), '--verify=false',
                 '--handler=false', '--vocab=byte', '--gin.T5Config.d_model=32') == 0
  assert json.loads((tmp_path / 'out' / 'config.json').read_text())['d_model'] == 32
  assert not marker.exists()


def test_every_peft_method_config_may_be_recorded():
  from flanx.model import peft  # pylint: disable=g-import-not-at-top
  from flanx.training import recorded_config  # pylint: disable=g-import-not-at-top
  for method in peft.METHODS.values():  # export, eval and infer of that method's run need its settings (prefix length)
    assert method.__name__ in recorded_config.DESCRIBING, method.__name__
    assert method.__name__ in recorded_config.MODEL_CONFIGS, method.__name__  # what eval/infer fill (run_config)
