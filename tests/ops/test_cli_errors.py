"""Every command line ends a user error with one line on stderr and exit 2, no traceback (issue 25).

Each case runs the real `python -m flanx.<command>` as a subprocess. A tiny run folder (random params of a
2-layer model, written once for the module) serves the cases that need a checkpoint; damaged copies of it
stand for a truncated array file and a checksum that disagrees with the data.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import REPO, TINY_MODEL, subprocess_env  # noqa: E402

DOLLY_LINE = {'instruction': 'What is 1 + 1?', 'context': '', 'response': '2', 'category': 'open_qa'}
# Lines TensorFlow/XLA print at start-up before any of flanx's code runs (another change quiets them);
# nothing else may reach stderr.
NOISE = ('All log messages before absl::InitializeLog', 'oneDNN custom operations', 'Could not find cuda drivers',
         'google_auth_provider.cc')


def dolly_train(data: pathlib.Path, model_dir: str, *extra: str) -> list[str]:
  return ['flanx.train', '--gin_file=runs/finetune.gin', f'--gin.MODEL_DIR="{model_dir}"',
          '--gin.MIXTURE_OR_TASK_MODULE="tasks.dolly"', '--gin.MIXTURE_OR_TASK_NAME="dolly"',
          f'--gin.tasks.dolly.dolly_path.path="{data}"', '--gin.get_vocabulary.path="byte"',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 12}", '--gin.BATCH_SIZE=4', '--gin.TRAIN_STEPS=1',
          '--gin.EVAL_PERIOD=0', '--gin.train.progress_bar=False'] + [
              '--gin.' + b.replace(' = ', '=', 1) for b in TINY_MODEL] + list(extra)


def dolly_file(path: pathlib.Path, lines: list[dict], raw: bytes | None = None) -> pathlib.Path:
  path.write_bytes(raw if raw is not None else ''.join(json.dumps(r) + '\n' for r in lines).encode())
  return path


@pytest.fixture(scope='module')
def work(tmp_path_factory):
  """A folder with a tiny run (checkpoint_1 with recorded checksums) and its damaged copies."""
  import gin  # pylint: disable=g-import-not-at-top
  from conftest import _random_params  # pylint: disable=g-import-not-at-top
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('cli')
  run = root / 'run'
  gin.clear_config()
  gin.parse_config('\n'.join(['import flanx.training.loop', 'import flanx.model.config',
                              f"train.model_dir = '{run}'", 'train.model_config = @T5Config()'] + TINY_MODEL))
  config = T5Config()
  gin_config.write_config(str(run))
  checkpoints.write_params_checkpoint(str(run), 1, _random_params(config, 0),
                                      {'step': 1, 'config_gin': (run / 'config.gin').read_text()})
  gin.clear_config()
  # A truncated array file: the largest file of the params is cut in half.
  shutil.copytree(run, root / 'truncated')
  biggest = max((p for p in (root / 'truncated').rglob('*') if p.is_file() and 'params' in p.parts),
                key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:biggest.stat().st_size // 2])
  # A checksum mismatch: the data is intact, the recorded checksum of one array is not the data's.
  shutil.copytree(run, root / 'mismatch')
  meta = next((root / 'mismatch').rglob('metadata'))
  recorded = json.loads(meta.read_text())
  name = sorted(recorded['checksums']['params'])[0]
  recorded['checksums']['params'][name] = 'ff' * 16 if isinstance(recorded['checksums']['params'][name], str) else (
      np.asarray(recorded['checksums']['params'][name]) + 1).tolist()
  meta.write_text(json.dumps(recorded))
  good = [dict(DOLLY_LINE, instruction=f'What is {i} + 1?', response=str(i + 1)) for i in range(20)]
  data = root / 'data'
  data.mkdir()
  dolly_file(data / 'missing.jsonl', good[:10] + [{k: v for k, v in DOLLY_LINE.items() if k != 'response'}] + good)
  dolly_file(data / 'empty.jsonl', [])
  (data / 'gzipped.jsonl').write_bytes(gzip.compress(''.join(json.dumps(r) + '\n' for r in good).encode()))
  dolly_file(data / 'good.jsonl', good)
  (data / 'prompts.jsonl').write_text('{"inputs": "fine"}\n{"inputs": "no closing quote}\n')
  (data / 'surrogate.jsonl').write_text('{"inputs": "fine"}\n' * 6 + '{"inputs": "half a pair \\ud800"}\n')
  return root


def _read_only_dir(root: pathlib.Path) -> str:
  """A folder this process cannot create files in: mode 0555, or for root (which permissions do not stop)
  a folder under /sys, where nobody may create one."""
  if os.geteuid() != 0:
    folder = root / 'read_only'
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return str(folder / 'run')
  return '/sys/flanx_cli_test/run'


def infer_cmd(work, input_file, checkpoint=None):
  return ['flanx.infer', '--gin_file=runs/infer.gin', f'--gin.CHECKPOINT_PATH="{checkpoint or work / "run"}"',
          f'--gin.INFER_OUTPUT_DIR="{work / "infer_out"}"', f'--gin.INPUT_FILE="{input_file}"',
          '--gin.infer.vocabulary=@get_vocabulary()', '--gin.get_vocabulary.path="byte"'] + [
              '--gin.' + b.replace(' = ', '=', 1) for b in TINY_MODEL] + ['--gin.infer.model_config=@T5Config()']


def eval_cmd(work):
  return ['flanx.eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{work / "nowhere"}"',
          f'--gin.EVAL_OUTPUT_DIR="{work / "ev"}"', '--gin.MIXTURE_OR_TASK_MODULE="fixture_tasks"',
          '--gin.MIXTURE_OR_TASK_NAME="flanx_test_copy"', "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 12}"
          ] + ['--gin.' + b.replace(' = ', '=', 1) for b in TINY_MODEL]


def export_cmd(work, checkpoint, out):
  return ['flanx.export', f'--checkpoint_dir={work / checkpoint}', f'--output_dir={work / out}', '--vocab=byte']


GOOD = 'data/good.jsonl'
READ_ONLY_TEXT = ['flanx_cli_test' if os.geteuid() == 0 else 'read_only', 'choose a folder you can write to']
# name: (command line from the work folder, texts the one line must contain)
CASES = {
    'dolly_missing_field': (lambda w: dolly_train(w / 'data/missing.jsonl', w / 'm1'),
                            ['missing.jsonl:11: missing field', "on_error='skip'"]),
    'empty_data_file': (lambda w: dolly_train(w / 'data/empty.jsonl', w / 'm2'),
                        ['empty.jsonl: no records (the file is empty']),
    'gzip_bytes_in_jsonl': (lambda w: dolly_train(w / 'data/gzipped.jsonl', w / 'm3'),
                            ['gzipped.jsonl:1: not UTF-8 text', 'gzip-compressed']),
    'unquoted_gin_string': (lambda w: dolly_train(w / GOOD, w / 'm4', '--gin.MIXTURE_OR_TASK_NAME=dolly'),
                            ["--gin.MIXTURE_OR_TASK_NAME=dolly: 'dolly' is not a gin value: strings need quotes",
                             """--gin.MIXTURE_OR_TASK_NAME='"dolly"'"""]),
    'read_only_model_dir': (lambda w: dolly_train(w / GOOD, _read_only_dir(w)), READ_ONLY_TEXT),
    'long_folder_name': (lambda w: dolly_train(w / GOOD, w / ('x' * 300)), ['x' * 300, 'too long']),
    'vocabulary_on_gs_offline': (lambda w: dolly_train(w / GOOD, w / 'm5', '--gin.get_vocabulary.path=None'),
                                 ['cannot read the vocabulary gs://t5-data/vocabs/cc_all.32000/sentencepiece.model',
                                  'copy it to a local file', 'FLANX_VOCAB']),
    'infer_malformed_line': (lambda w: infer_cmd(w, w / 'data/prompts.jsonl'), ['prompts.jsonl:2: malformed JSON']),
    'infer_lone_surrogate': (lambda w: infer_cmd(w, w / 'data/surrogate.jsonl'),
                             ['surrogate.jsonl:7: \\ud800 (a lone UTF-16 surrogate escape) is not Unicode text']),
    'export_truncated_array': (lambda w: export_cmd(w, 'truncated', 'hf1'),
                               ['truncated/checkpoint_1/params', 'damaged']),
    'export_checksum_mismatch': (lambda w: export_cmd(w, 'mismatch', 'hf2'),
                                 ['differ from the checksums recorded', 'use another checkpoint']),
    'eval_missing_checkpoint': (eval_cmd, ['nowhere does not exist']),
    'import_t5x_missing': (lambda w: ['flanx.import_t5x', f'--t5x_checkpoint={w / "no_t5x"}',
                                      f'--output_dir={w / "hf3"}'], ['no_t5x']),
    'from_t5x_gin_missing': (lambda w: ['flanx.from_t5x_gin', str(w / 'no_such.gin')], ['no_such.gin']),
    'demo_long_run_dir': (lambda w: ['flanx.demo', f'--run_dir={w / ("d" * 300)}'], ['d' * 300, 'too long']),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_user_error_is_one_line_exit_2(work, case):
  command, expected = CASES[case]
  env = dict(subprocess_env(), GCS_RETRY_CONFIG_MAX_RETRIES='0')  # gs:// without network fails at once
  env.pop('FLANX_VERBOSE', None)
  proc = subprocess.run([sys.executable, '-m'] + [str(a) for a in command(work)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  lines = [line for line in proc.stderr.splitlines() if line.strip() and not any(n in line for n in NOISE)]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('ERROR: '), proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  for text in expected:
    assert text in lines[0], lines[0]


@pytest.mark.slow
def test_verbose_shows_the_traceback(work, tmp_path):
  command = dolly_train(work / 'data/missing.jsonl', tmp_path / 'm') + ['--verbose']
  proc = subprocess.run([sys.executable, '-m'] + [str(a) for a in command], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2 and 'Traceback' in proc.stderr and 'tasks/records.py' in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('ERROR: ') and 'missing.jsonl:11' in proc.stderr


# The wrapper itself, in process: exit codes, the log, --verbose / FLANX_VERBOSE.

def _run(main, capsys, monkeypatch, argv=('flanx.x',), run_dir=None):
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, 'argv', list(argv))
  code = cli_errors.run(main, run_dir=(lambda: run_dir) if run_dir else None)
  return code, capsys.readouterr().err


def test_internal_error_exits_1_with_its_traceback_in_the_run_folder(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)
  code, err = _run(lambda: {}['no such key'], capsys, monkeypatch, run_dir=str(tmp_path))
  log = tmp_path / 'errors.log'
  assert code == 1 and err.count('\n') == 1 and 'Traceback' not in err
  assert err.startswith("ERROR: KeyError: 'no such key' (an internal error") and f'[traceback: {log}]' in err
  assert 'Traceback' in log.read_text() and "KeyError: 'no such key'" in log.read_text()


def test_user_error_writes_no_log_and_verbose_prints_the_traceback(tmp_path, capsys, monkeypatch):
  from tasks import records  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)

  def bad():
    raise records.RecordError('a.jsonl:3: malformed JSON (Expecting value at column 1)')

  code, err = _run(bad, capsys, monkeypatch, run_dir=str(tmp_path))
  assert code == 2 and err.count('\n') == 1 and err.startswith('ERROR: a.jsonl:3: malformed JSON')
  assert not (tmp_path / 'errors.log').exists()
  argv = ['flanx.x', '--gin.A=1', '--verbose']
  code, err = _run(bad, capsys, monkeypatch, argv=argv)
  assert code == 2 and 'Traceback' in err and sys.argv == ['flanx.x', '--gin.A=1']  # the flag is taken off
  monkeypatch.setenv('FLANX_VERBOSE', '1')
  code, err = _run(bad, capsys, monkeypatch)
  assert code == 2 and 'Traceback' in err


@pytest.mark.parametrize('error, code, line', [
    (FileNotFoundError(2, 'No such file or directory', '/x/y.jsonl'), 2,
     'ERROR: /x/y.jsonl: No such file or directory: check the path'),
    (OSError(30, 'Read-only file system', '/ro/run'), 2,
     'ERROR: /ro/run: Read-only file system: the file system is read-only: choose a writable folder'),
    (SystemExit('--checkpoint_dir is required'), 2, 'ERROR: --checkpoint_dir is required'),
    (KeyboardInterrupt(), 130, 'ERROR: interrupted'),
    (ValueError('PERMISSION_DENIED: Failed to create directory: "/ro/run": Permission denied '
                "[os_error_code='13']"), 2, 'ERROR: PERMISSION_DENIED: Failed to create directory: "/ro/run": '
     "Permission denied [os_error_code='13']: choose a folder you can write to, or fix its permissions"),
])
def test_classification(error, code, line, capsys, monkeypatch):
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)

  def fail():
    raise error

  got, err = _run(fail, capsys, monkeypatch)
  assert (got, err) == (code, line + '\n')


def test_gin_and_autograph_wrapped_errors_keep_their_class_and_hint(capsys, monkeypatch):
  """gin re-raises an error from a configurable as a proxy with "In call to configurable" lines; TensorFlow's
  autograph re-raises one from a traced function as a StagingError with the traced frames: both still read as
  the original error and message."""
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tasks import records  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)

  @gin.configurable
  def configurable_reader():
    raise records.RecordError('d.jsonl:4: missing field \'response\'', records.SKIP_HINT)

  code, err = _run(configurable_reader, capsys, monkeypatch)
  assert (code, err) == (2, f"ERROR: d.jsonl:4: missing field 'response': {records.SKIP_HINT}\n")

  def traced():
    def fail(x):
      raise FileNotFoundError(f'cannot read the vocabulary /nowhere/spm.model')
    tf.data.Dataset.range(1).map(fail)

  code, err = _run(traced, capsys, monkeypatch)
  assert (code, err) == (2, 'ERROR: cannot read the vocabulary /nowhere/spm.model\n')


@pytest.mark.parametrize('bindings, gin_text, message', [
    (['MIXTURE_OR_TASK_NAME = dolly'], None,
     """--gin.MIXTURE_OR_TASK_NAME=dolly: 'dolly' is not a gin value: strings need quotes, write it as "dolly" (on """
     """a command line: --gin.MIXTURE_OR_TASK_NAME='"dolly"'); a reference is @name() and a macro %NAME"""),
    (['INITIAL_CHECKPOINT_PATH = gs://bucket/run'], None,
     """--gin.INITIAL_CHECKPOINT_PATH=gs://bucket/run: 'gs' is not a gin value: strings need quotes, write it as """
     '"gs://bucket/run"'),
    ([], 'MIXTURE_OR_TASK_NAME = dolly\n', """run.gin, line 2 (MIXTURE_OR_TASK_NAME = dolly): 'dolly' is not a gin """
     'value: strings need quotes, write it as "dolly"'),
    (['trian.batch_size = 3'], None, "--gin.trian.batch_size=3: No configurable matching 'trian'."),
    ([], 'train.batch_sise = 4\n', "run.gin, line 2 (train.batch_sise = 4): Configurable 'train' doesn't have a "
     "parameter named 'batch_sise'."),
    (["TASK_FEATURE_LENGTHS = {'inputs': 3"], None, "--gin.TASK_FEATURE_LENGTHS={'inputs': 3: does not parse (EOF in "
     'multi-line statement): check its brackets and quotes'),
    ([], '\ufeffTRAIN_STEPS = 3\n', 'run.gin: starts with a UTF-8 byte-order mark, which gin cannot read: save it '
     'as UTF-8 without one'),
], ids=['unquoted', 'unquoted_path', 'unquoted_in_file', 'unknown_configurable', 'unknown_parameter', 'unclosed',
        'bom'])
def test_gin_errors_are_one_line_naming_the_binding(tmp_path, bindings, gin_text, message):
  import gin  # pylint: disable=g-import-not-at-top
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  files = ['runs/finetune.gin']
  if gin_text is not None:
    bom = gin_text.startswith('\ufeff')  # a byte-order mark is at the start of a file or nowhere
    text = "include 'runs/finetune.gin'\n" + gin_text.lstrip('\ufeff')
    (tmp_path / 'run.gin').write_text(('\ufeff' if bom else '') + text, encoding='utf-8')
    files = [str(tmp_path / 'run.gin')]
  gin.clear_config()
  try:
    with pytest.raises(gin_config.GinConfigError) as info:
      gin_config.parse_gin(files, bindings)
  finally:
    gin.clear_config()
  assert '\n' not in str(info.value) and message in str(info.value)


def test_tensorflow_file_errors_are_user_errors(capsys, monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)
  path = '/sys/flanx_cli_test_dir/run'  # nobody, root included, may create a folder in sysfs

  def fail():
    tf.io.gfile.makedirs(path)

  code, err = _run(fail, capsys, monkeypatch)
  assert code == 2 and err.count('\n') == 1 and err.startswith('ERROR: ') and 'flanx_cli_test_dir' in err, err

  def denied():
    raise tf.errors.PermissionDeniedError(None, None, '/ro/run/config.gin; Permission denied')

  assert _run(denied, capsys, monkeypatch) == (2, 'ERROR: /ro/run/config.gin; Permission denied: choose a folder '
                                                  'you can write to, or fix its permissions\n')


def test_a_bug_while_handling_a_user_error_is_internal(capsys, monkeypatch):
  monkeypatch.delenv('FLANX_VERBOSE', raising=False)

  def fail():
    try:
      raise FileNotFoundError(2, 'No such file or directory', '/x')
    except FileNotFoundError:
      return None + 1  # a bug in the handler is not the user's missing file

  code, err = _run(fail, capsys, monkeypatch)
  assert code == 1 and err.startswith('ERROR: TypeError: unsupported operand') and '(an internal error' in err
