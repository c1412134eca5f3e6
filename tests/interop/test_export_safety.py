"""Export and import never write over their input, leave nothing from a killed or failed run, and refuse a
vocabulary the checkpoint was not trained with (checked against the model config and the run's config.gin).

References: the file tree of the run before and after (bytes and names), seqio's vocabularies, processes really
killed with SIGKILL / SIGTERM.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import seqio

from flanx import export, gin_config, import_t5x
from flanx.interop import staging
from flanx.model.config import T5Config
from flanx.training import checkpoints
from tasks import vocab as vocab_lib
from test_t5x_import import write_t5x_checkpoint

pytest.importorskip('transformers')

SPM = os.path.join(os.path.dirname(seqio.__file__), 'test_data', 'sentencepiece', 'sentencepiece.model')
BYTE_TASK, SPM_TASK = 'flanx_safety_byte', 'flanx_safety_spm'
CONFIG = dict(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=3)
HOST = socket.gethostname().replace('-', '_')


def _register(name, vocabulary):
  if name not in seqio.TaskRegistry.names():
    source = seqio.FunctionDataSource(lambda split, shuffle_files, seed=None: None, splits=('train',))
    seqio.TaskRegistry.add(name, source=source, output_features={
        'inputs': seqio.Feature(vocabulary), 'targets': seqio.Feature(vocabulary)})


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A run trained (nominally) with the byte vocabulary: config.gin naming a byte task, one checkpoint."""
  from conftest import _random_params  # pylint: disable=g-import-not-at-top
  _register(BYTE_TASK, seqio.ByteVocabulary())
  _register(SPM_TASK, vocab_lib.get_vocabulary(SPM, 'lossless'))
  run_dir = tmp_path_factory.mktemp('runs') / 'model'
  lines = ['import flanx.training.loop', 'import flanx.model.config', f"train.model_dir = '{run_dir}'",
           f"train.mixture_or_task_name = '{BYTE_TASK}'", "train.task_feature_lengths = {'inputs': 32, 'targets': 16}",
           'train.model_config = @T5Config()'] + [f'T5Config.{k} = {v}' for k, v in CONFIG.items()]
  gin.clear_config()
  gin.parse_config('\n'.join(lines))
  gin_config.write_config(str(run_dir))
  gin.clear_config()
  ckpts = checkpoints.RunCheckpoints(str(run_dir), keep=None, async_save=False)
  ckpts.save(10, _random_params(T5Config(**CONFIG), 1), {'count': np.zeros((), np.int32)},
             {'step': 10, 'batches_read': 10})
  ckpts.close()
  (run_dir / 'eval').mkdir()
  (run_dir / 'eval' / 'notes.txt').write_text('kept')
  return run_dir


def _tree(folder):
  """Every file under `folder` (links not followed) with its bytes: what must survive a refused command."""
  out = {}
  for parent, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(parent, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def _export(*args):
  gin.clear_config()
  try:
    return export.main(list(args))
  finally:
    gin.clear_config()


@pytest.mark.parametrize('output, message', [
    ('.', 'contains the checkpoint folder'),
    ('checkpoint_10', 'is the checkpoint folder'),
    ('checkpoint_10/hf', 'is inside the checkpoint folder'),
    ('..', 'contains the checkpoint folder'),
    ('eval', 'is inside the run folder'),  # exists, not empty: --overwrite would delete it
    ('checkpoint_20', 'is inside the run folder'),
    ('data_state/checkpoint_1', 'is inside the run folder'),  # where the trainer's pruning deletes
    ('alias', 'contains the checkpoint folder'),  # a link to the run folder
])
@pytest.mark.parametrize('source', ['run', 'checkpoint'])
def test_export_refuses_output_overlapping_its_input(run, tmp_path, output, message, source):
  if output == 'alias':
    os.symlink(run, tmp_path / 'alias')
    output = tmp_path / 'alias'
  else:
    output = run / output
  before = _tree(run.parent)
  checkpoint_dir = run if source == 'run' else run / 'checkpoint_10'
  with pytest.raises(ValueError, match=message):
    _export('--checkpoint_dir', str(checkpoint_dir), '--output_dir', str(output), '--overwrite', '--verify=false')
  assert _tree(run.parent) == before


@pytest.mark.parametrize('where', ['this run', 'another run', 'link into a run'])
def test_export_refuses_any_folder_inside_a_run_folder(run, tmp_path, where):
  """A trainer prunes and replaces what is in its run folder: an export there would be deleted by the next resume."""
  other = tmp_path / 'other_run'
  (other / 'checkpoint_3' / 'params').mkdir(parents=True)
  output = {'this run': run / 'hf', 'another run': other / 'hf', 'link into a run': tmp_path / 'alias' / 'hf'}[where]
  if where == 'link into a run':
    os.symlink(other / 'checkpoint_3', tmp_path / 'alias')
  before = _tree(run.parent), _tree(tmp_path)
  with pytest.raises(ValueError, match='is inside the run folder'):
    _export('--checkpoint_dir', str(run), '--output_dir', str(output), '--verify=false', '--handler=false',
            '--vocab=byte')
  assert (_tree(run.parent), _tree(tmp_path)) == before


@pytest.mark.parametrize('output, message', [
    ('t5x/checkpoint_42', 'is the t5x checkpoint folder'),
    ('t5x/checkpoint_42/out', 'is inside the t5x checkpoint folder'),
    ('t5x', 'contains the t5x checkpoint folder'),
    ('.', 'contains the t5x checkpoint folder'),
    ('t5x/notes', 'is inside the t5x run folder'),  # exists, not empty: --overwrite would delete it
])
def test_import_refuses_output_overlapping_its_input(tiny_config, random_params, tmp_path, output, message):
  write_t5x_checkpoint(tmp_path / 't5x', 42, random_params(tiny_config(**CONFIG), 3))
  (tmp_path / 't5x' / 'notes').mkdir()
  (tmp_path / 't5x' / 'notes' / 'keep.txt').write_text('mine')
  before = _tree(tmp_path)
  for source in ('t5x', 't5x/checkpoint_42', 't5x/checkpoint_42/checkpoint'):
    with pytest.raises(ValueError, match=message):
      import_t5x.main(['--t5x_checkpoint', str(tmp_path / source), '--output_dir', str(tmp_path / output),
                       '--format=flanx', '--overwrite'])
  assert _tree(tmp_path) == before


def _dead_pid() -> int:
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def test_killed_export_leftovers_are_cleaned_or_reported(run, tmp_path, capsys):
  out = tmp_path / 'hf'
  # A real one: a process killed (SIGKILL) while staging `out`.
  code = ('import os, signal, sys\nfrom flanx.interop import staging\n'
          f'with staging.staged_folder({str(out)!r}, purpose="export") as folder:\n'
          '  (folder / "model.safetensors").write_bytes(b"partial")\n'
          '  os.kill(os.getpid(), signal.SIGKILL)\n')
  assert subprocess.run([sys.executable, '-c', code], check=False).returncode == -signal.SIGKILL
  killed = [p for p in tmp_path.iterdir() if p.name.startswith('.hf.export-')]
  assert len(killed) == 1 and (killed[0] / 'model.safetensors').exists() and not out.exists()
  dead = _dead_pid()
  old_style = tmp_path / '.hf.export-abcd_123'  # older flanx: no host/pid, stale after an hour
  recent_old_style = tmp_path / '.hf.export-wxyz_987'
  running = tmp_path / f'.hf.export-{HOST}-{os.getpid()}-qwerty12'
  elsewhere = tmp_path / '.hf.export-otherhost-1-qwerty12'
  previous = tmp_path / f'.hf.old-{HOST}-{dead}-zzzzzzzz'  # a replacement cut short while `hf` is missing
  unrelated = tmp_path / '.hf.export-my-notes'
  for path in (old_style, recent_old_style, running, elsewhere, previous, unrelated):
    path.mkdir()
  os.utime(old_style, (time.time() - 2 * staging.STALE_AFTER_S,) * 2)
  assert _export('--checkpoint_dir', str(run), '--output_dir', str(out), '--verify=false', '--handler=false') == 0
  printed = capsys.readouterr().out
  assert not killed[0].exists() and not old_style.exists()
  for path in (killed[0], old_style):
    assert f'Removed {path}, left by an interrupted run writing {out}.' in printed
  for path, why in ((recent_old_style, 'may belong to a running process'),
                    (running, f'process {os.getpid()} is still running'),
                    (elsewhere, 'made by process 1 on host otherhost'),
                    (previous, 'it holds the previous hf')):
    line = next(line for line in printed.splitlines() if line.startswith(f'Kept {path} ('))
    assert path.exists() and why in line
  assert unrelated.exists() and str(unrelated) not in printed
  # Now `hf` exists: the leftover previous copy is stale and goes with the next replacement.
  assert _export('--checkpoint_dir', str(run), '--output_dir', str(out), '--verify=false', '--handler=false',
                 '--overwrite') == 0
  assert not previous.exists()
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.hf.')) == sorted(
      p.name for p in (recent_old_style, running, elsewhere, unrelated))


def test_sigterm_while_staging_leaves_nothing(tmp_path):
  code = ('import os, signal, time\nfrom flanx.interop import staging\n'
          f'with staging.staged_folder({str(tmp_path / "hf")!r}, purpose="export") as folder:\n'
          '  (folder / "model.safetensors").write_bytes(b"partial")\n'
          '  os.kill(os.getpid(), signal.SIGTERM)\n'
          '  time.sleep(30)\n')
  result = subprocess.run([sys.executable, '-c', code], check=False, timeout=120)
  assert result.returncode == 128 + signal.SIGTERM
  assert list(tmp_path.iterdir()) == []


def test_vocabulary_must_be_the_runs(run, tmp_path, capsys):
  out = tmp_path / 'hf'
  # A SentencePiece vocabulary for a byte-trained run: refused before anything is written (verification would
  # pass: the folder would be consistent with itself).
  with pytest.raises(ValueError, match=f'--vocab is not the vocabulary the run trained with \\(the vocabulary of '
                                       f'{BYTE_TASK}\\): newline mode lossless vs byte; size [0-9]+ vs 259'):
    _export('--checkpoint_dir', str(run), '--output_dir', str(out), f'--vocab={SPM}', '--newline_mode=lossless')
  # Same SentencePiece model, other newline mode than the run's task.
  with pytest.raises(ValueError, match='newline mode none vs lossless'):
    _export('--checkpoint_dir', str(run), '--output_dir', str(out), f'--vocab={SPM}', '--newline_mode=none',
            f'--gin.train.mixture_or_task_name="{SPM_TASK}"')
  # More ids than the model has rows (the config's vocab_size).
  with pytest.raises(ValueError, match=r'the vocabulary has 259 ids, the model only 200 rows \(T5Config.vocab_size\)'):
    _export('--checkpoint_dir', str(run), '--output_dir', str(out), '--gin.T5Config.vocab_size=200')
  assert list(tmp_path.iterdir()) == []
  # A run whose task is not registered here: --vocab cannot be compared; said, and the export goes on.
  capsys.readouterr()
  assert _export('--checkpoint_dir', str(run), '--output_dir', str(out), '--vocab=byte', '--verify=false',
                 '--handler=false', '--gin.train.mixture_or_task_name="no_such_task"') == 0
  assert "Warning: --vocab not compared with the run's vocabulary ('no_such_task' is not a registered task" in (
      capsys.readouterr().out)
