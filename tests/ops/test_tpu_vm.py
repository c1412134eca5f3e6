"""scripts/tpu_vm.py against a fake gcloud that records its arguments.

The tool runs as a subprocess from a throwaway git checkout holding a copy of the script, with a fake
`gcloud` first on PATH. The remote shell commands it records (--command=...) are then run by bash in a
sandbox home directory with fake remote tools (sudo, apt-get, python3.11, pip, git, the venv's python),
so the tests check what the remote shell would really execute, quoting included.
"""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from unittest import mock

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / 'scripts'
HOSTNAME = 't1v-n-test-w-0'
GIN_FILE = 'gin/recipes/test run.gin'  # A space in the path on purpose.
# Values with spaces, both kinds of quotes, braces and shell syntax that must reach flanx untouched.
OVERRIDES = [
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 256}",
    '--gin.TRAIN_STEPS=1000',
    '--gin.MIXTURE_OR_TASK_NAME="flan cot: it\'s \\"quoted\\""',
    '--gin.NOTE=$HOME `echo hi` $(hostname) ; & | * ~ \\n',
    '--gin_file=gin/runs/extra.gin',
]
GIT_ENV = {'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't',
           'GIT_COMMITTER_EMAIL': 't@t', 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1'}

FAKE_GCLOUD = '''#!{python} -IS
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:
  f.write(json.dumps(args) + '\\n')
if 'scp' in args:  # Deliver the file to the fake remote home, as scp would.
  source, dest = [a for a in args[args.index('scp') + 1:] if not a.startswith('--')]
  shutil.copy(source, os.path.join(os.environ['FAKE_REMOTE_HOME'], dest.partition(':')[2]))
sys.exit(int(os.environ.get('FAKE_GCLOUD_RC', '0')))
'''
# Records argv and cwd as one JSON line in $HOME/<name>.log.
RECORDER = '''#!{python} -IS
import json, os, sys
with open(os.path.join(os.environ['HOME'], '{name}.log'), 'a') as f:
  f.write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}) + '\\n')
'''
# The local interpreter of the compile-only check: records argv and cwd, prints a report, exits FAKE_COMPILE_RC.
FAKE_COMPILE_CHECK = '''#!{python} -IS
import json, os, sys
with open(os.environ['FAKE_COMPILE_LOG'], 'a') as f:
  f.write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}) + '\\n')
print('fake compile report')
sys.exit(int(os.environ.get('FAKE_COMPILE_RC', '0')))
'''
FAKE_PYTHON311 = RECORDER + '''
import pathlib
assert sys.argv[1:3] == ['-m', 'venv'], sys.argv
bin_dir = pathlib.Path(sys.argv[3]) / 'bin'
bin_dir.mkdir(parents=True, exist_ok=True)
(bin_dir / 'pip').write_text({pip!r})
(bin_dir / 'pip').chmod(0o755)
'''
FAKE_GIT = RECORDER + '''
if sys.argv[1] == 'clone':
  os.makedirs(sys.argv[-1])
'''
# The venv's python: records argv (atomically, it runs in the background), prints, may sleep.
FAKE_ENTRY_POINT = '''#!{python} -IS
import json, os, sys, time
path = os.path.join(os.environ['HOME'], 'entry.json')
with open(path + '.tmp', 'w') as f:
  json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}, f)
os.replace(path + '.tmp', path)
print('step 1: loss 2.5', flush=True)
time.sleep(float(os.environ.get('FAKE_SLEEP', '0')))
'''


def _write_exe(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)


def _git(repo: pathlib.Path, *args: str) -> None:
  subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True,
                 env={**os.environ, **GIT_ENV})


@pytest.fixture(scope='module')
def repo(tmp_path_factory) -> pathlib.Path:
  """A committed checkout with a copy of the tool, setup.py and a few gin files."""
  root = tmp_path_factory.mktemp('repo')
  (root / 'scripts').mkdir()
  for name in ('tpu_vm.py', 'tpu_vm.defaults.ini'):
    shutil.copy(SCRIPTS / name, root / 'scripts' / name)
  (root / 'setup.py').write_text('import setuptools\nsetuptools.setup(name="flanx")\n')
  (root / 'constraints.txt').write_text('')
  for gin in (GIN_FILE, 'gin/runs/extra.gin'):
    (root / gin).parent.mkdir(parents=True, exist_ok=True)
    (root / gin).write_text('TRAIN_STEPS = 10\n')
  _git(root, 'init', '-q')
  _git(root, 'add', '.')
  _git(root, 'commit', '-q', '-m', 'test')
  return root


class Fake:
  """Runs the tool with a fake gcloud on PATH and reads back what gcloud received."""

  def __init__(self, tmp: pathlib.Path, repo: pathlib.Path):
    self.repo, self.tmp, self.log = repo, tmp, tmp / 'gcloud.jsonl'
    self.home = tmp / 'home'  # The VM's home directory.
    self.remote_bin = tmp / 'remote_bin'
    self.home.mkdir()
    _write_exe(tmp / 'bin' / 'gcloud', FAKE_GCLOUD.format(python=sys.executable))
    pip = RECORDER.format(python=sys.executable, name='pip')
    _write_exe(self.remote_bin / 'python3.11', FAKE_PYTHON311.format(python=sys.executable,
                                                                     name='python', pip=pip))
    _write_exe(self.remote_bin / 'git', FAKE_GIT.format(python=sys.executable, name='git'))
    _write_exe(self.remote_bin / 'apt-get', RECORDER.format(python=sys.executable, name='apt'))
    _write_exe(self.remote_bin / 'sudo', '#!/bin/sh\nexec env "$@"\n')
    _write_exe(self.remote_bin / 'hostname', f'#!/bin/sh\necho {HOSTNAME}\n')
    self.compile_log = tmp / 'compile.jsonl'
    _write_exe(tmp / 'bin' / 'local-python', FAKE_COMPILE_CHECK.format(python=sys.executable))
    self.config = tmp / 'my.ini'
    self.config.write_text('[common]\nproject = my-proj\nmodel_dir = gs://bucket/run\n'
                           f'local_python = {tmp / "bin" / "local-python"}\n')
    self.env = {k: v for k, v in os.environ.items() if k != 'FLANX_VM_CONFIG'}
    self.env.update(PATH=f'{tmp / "bin"}{os.pathsep}{os.environ["PATH"]}', FAKE_GCLOUD_LOG=str(self.log),
                    FAKE_REMOTE_HOME=str(self.home), TMPDIR=str(tmp),  # setup's local archive goes in TMPDIR.
                    FAKE_COMPILE_LOG=str(self.compile_log))
    self.procs = []

  def tool(self, *args: str, config: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Runs `tpu_vm.py ARGS --config my.ini` from the fake checkout."""
    # -S: no site-packages, so this also checks that the tool needs nothing beyond the standard library.
    argv = [sys.executable, '-S', str(self.repo / 'scripts' / 'tpu_vm.py'), *args]
    if config:
      argv[4:4] = ['--config', str(self.config)]  # After the subcommand.
    return subprocess.run(argv, capture_output=True, text=True, env={**self.env, **env}, cwd=self.tmp,
                          timeout=30)

  def in_process(self, *args: str) -> tuple[int, str, str]:
    """Runs the tool's main() in this process (faster): exit status, stdout, stderr."""
    spec = importlib.util.spec_from_file_location('tpu_vm_copy', self.repo / 'scripts' / 'tpu_vm.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, self.env, clear=True), mock.patch.object(tempfile, 'tempdir', None), \
        contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        status = module.main([args[0], '--config', str(self.config), *args[1:]])
      except SystemExit as e:
        status = e.code
    return status, out.getvalue(), err.getvalue()

  def error(self, *args: str) -> str:
    """The one-line message of the tool on bad input (exit status 2)."""
    status, _, stderr = self.in_process(*args)
    prefix = f'tpu_vm.py {args[0]}: error: '
    assert status == 2 and stderr.startswith(prefix), stderr
    return stderr[len(prefix):].rstrip('\n')

  def calls(self) -> list[list[str]]:
    """Argument lists gcloud received, in order."""
    if not self.log.exists():
      return []
    return [json.loads(line) for line in self.log.read_text().splitlines()]

  def remote(self, call: list[str], **env: str) -> subprocess.CompletedProcess:
    """Runs the --command of a recorded ssh call with bash in the sandbox home, like sshd would."""
    (command,) = [a.partition('=')[2] for a in call if a.startswith('--command=')]
    env = {'HOME': str(self.home), 'PATH': f'{self.remote_bin}:/usr/bin:/bin', **env}
    return subprocess.run(['bash', '-c', command], cwd=self.home, env=env, capture_output=True, text=True,
                          timeout=30)

  def compile_checks(self) -> list[dict]:
    """argv and cwd of each local compile-only check."""
    if not self.compile_log.exists():
      return []
    return [json.loads(line) for line in self.compile_log.read_text().splitlines()]

  def recorded(self, name: str) -> list[dict]:
    path = self.home / f'{name}.log'
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

  def install_entry_point(self) -> None:
    """What `setup` leaves on a worker, as far as train/eval/infer need it."""
    (self.home / 'flanx').mkdir(exist_ok=True)
    _write_exe(self.home / 'flanx-venv' / 'bin' / 'python', FAKE_ENTRY_POINT.format(python=sys.executable))

  def wait_for_entry_point(self) -> dict:
    path = self.home / 'entry.json'
    for _ in range(200):
      if path.exists():
        return json.loads(path.read_text())
      time.sleep(0.02)
    raise AssertionError('the entry point never ran')


@pytest.fixture
def fake(tmp_path, repo):
  f = Fake(tmp_path, repo)
  yield f
  pid_file = f.home / 'flanx-logs' / 'run.pid'  # Never leave a fake run behind.
  if pid_file.exists():
    try:
      os.kill(int(pid_file.read_text()), signal.SIGKILL)
    except (ProcessLookupError, ValueError):
      pass


def _running(pid: int) -> bool:
  """Whether a process lives (a zombie awaiting its reaper counts as ended)."""
  try:
    stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
  except FileNotFoundError:
    return False
  return stat.rpartition(')')[2].split()[0] != 'Z'


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert proc.returncode == 0, proc.stderr
  return proc


TPU = ['--zone=us-central2-b', '--project=my-proj']


# Default zones: the first zone Cloud TPU's "TPU regions and zones" lists per generation (v3 pods only in
# europe-west4-a, v4 only in us-central2-b).
@pytest.mark.parametrize('flags, accelerator, version, zone', [
    ([], 'v4-32', 'tpu-ubuntu2204-base', 'us-central2-b'),  # The defaults file.
    (['--accelerator', 'v3-8'], 'v3-8', 'tpu-ubuntu2204-base', 'europe-west4-a'),
    (['--accelerator', 'v3-128'], 'v3-128', 'tpu-ubuntu2204-base', 'europe-west4-a'),
    (['--accelerator', 'v3-8', '--zone', 'us-central1-b'], 'v3-8', 'tpu-ubuntu2204-base', 'us-central1-b'),
    (['--accelerator', 'v4-128'], 'v4-128', 'tpu-ubuntu2204-base', 'us-central2-b'),
    (['--accelerator', 'v5litepod-16'], 'v5litepod-16', 'v2-alpha-tpuv5-lite', 'us-west4-a'),
    (['--accelerator', 'v5p-8'], 'v5p-8', 'v2-alpha-tpuv5', 'us-east5-a'),
    (['--accelerator', 'v6e-8'], 'v6e-8', 'v2-alpha-tpuv6e', 'us-east5-b'),
    (['--accelerator', 'v4-8', '--version', 'tpu-vm-base'], 'v4-8', 'tpu-vm-base', 'us-central2-b'),
    (['--accelerator', 'v3-32', '--zone', 'us-central2-b', '--skip_zone_check'], 'v3-32', 'tpu-ubuntu2204-base',
     'us-central2-b'),
])
def test_create_tpu_picks_the_runtime_and_zone_for_the_accelerator(fake, flags, accelerator, version, zone):
  status, out, err = fake.in_process('create', '--dry-run', *flags)
  assert status == 0, err
  assert out == shlex.join(['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'flanx-tpu', f'--zone={zone}',
                            '--project=my-proj', f'--accelerator-type={accelerator}', f'--version={version}']) + '\n'


def test_create_tpu_spot_or_preemptible_and_config_from_env(fake, tmp_path):
  env_config = tmp_path / 'env.ini'
  env_config.write_text('[tpu]\nzone = europe-west4-a\nname = my-tpu\nspot = true\n')
  _ok(fake.tool('create', '--accelerator', 'v3-32', config=False, FLANX_VM_CONFIG=str(env_config)))
  _ok(fake.tool('create', '--name', 'other', '--preemptible'))
  assert fake.calls() == [
      ['compute', 'tpus', 'tpu-vm', 'create', 'my-tpu', '--zone=europe-west4-a',
       '--accelerator-type=v3-32', '--version=tpu-ubuntu2204-base', '--spot'],
      ['compute', 'tpus', 'tpu-vm', 'create', 'other', *TPU, '--accelerator-type=v4-32',
       '--version=tpu-ubuntu2204-base', '--preemptible'],
  ]


def test_create_gpu(fake):
  _ok(fake.tool('create', '--gpu'))
  _ok(fake.tool('create', '--gpu', '--machine_type', 'n1-standard-8', '--accelerator',
                'type=nvidia-tesla-v100,count=1', '--boot_disk_size', '500GB', '--spot'))
  base = ['--image-family=common-cu129-ubuntu-2204-nvidia-580', '--image-project=deeplearning-platform-release',
          '--maintenance-policy=TERMINATE', '--metadata=install-nvidia-driver=True']
  gpu = ['--zone=us-central1-a', '--project=my-proj']
  assert fake.calls() == [
      ['compute', 'instances', 'create', 'flanx-gpu', *gpu, '--machine-type=a2-highgpu-1g', *base,
       '--boot-disk-size=200GB', '--scopes=cloud-platform'],
      ['compute', 'instances', 'create', 'flanx-gpu', *gpu, '--machine-type=n1-standard-8',
       '--accelerator=type=nvidia-tesla-v100,count=1', *base, '--boot-disk-size=500GB',
       '--scopes=cloud-platform', '--provisioning-model=SPOT', '--instance-termination-action=STOP'],
  ]


def test_delete(fake):
  _ok(fake.tool('delete'))
  _ok(fake.tool('delete', '--gpu', '--zone', 'us-east1-b'))
  assert fake.calls() == [
      ['compute', 'tpus', 'tpu-vm', 'delete', 'flanx-tpu', *TPU, '--quiet'],
      ['compute', 'instances', 'delete', 'flanx-gpu', '--zone=us-east1-b', '--project=my-proj', '--quiet'],
  ]


def test_setup_copies_head_to_all_workers_and_installs_it(fake):
  _ok(fake.tool('setup'))
  tarball = str(fake.tmp / 'flanx-tpu-flanx.tar.gz')
  scp, ssh = fake.calls()
  assert scp == ['compute', 'tpus', 'tpu-vm', 'scp', tarball, 'flanx-tpu:flanx.tar.gz', *TPU, '--worker=all']
  assert ssh[:8] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=all']
  assert len(ssh) == 9 and ssh[8].startswith('--command=')
  assert not os.path.exists(tarball)  # The local archive is removed.
  with tarfile.open(fake.home / 'flanx.tar.gz') as archive:
    assert {'setup.py', 'scripts/tpu_vm.py', GIN_FILE} <= set(archive.getnames())

  _ok(fake.remote(ssh))  # What every worker runs.
  assert (fake.home / 'flanx' / 'setup.py').is_file() and not (fake.home / 'flanx.tar.gz').exists()
  apt = ['-qq', '-o', 'DPkg::Lock::Timeout=600']
  assert [r['argv'] for r in fake.recorded('apt')] == [
      [*apt, 'update'], [*apt, 'install', '-y', 'python3.11', 'python3.11-venv', 'git']]
  assert [r['argv'] for r in fake.recorded('python')] == [['-m', 'venv', str(fake.home / 'flanx-venv')]]
  assert fake.recorded('pip') == [
      {'argv': ['install', '-q', '--upgrade', 'pip'], 'cwd': str(fake.home)},
      {'argv': ['install', '-q', '-c', 'constraints.txt', '-e', '.[tpu]'], 'cwd': str(fake.home / 'flanx')},
  ]


def test_setup_gpu_clones_a_url(fake):
  url = 'https://example.com/my repo.git'
  _ok(fake.tool('setup', '--gpu', '--repo_url', url, '--ref', "it's-v1"))
  (ssh,) = fake.calls()
  assert ssh[:6] == ['compute', 'ssh', 'flanx-gpu', '--zone=us-central1-a', '--project=my-proj',
                     ssh[5]] and ssh[5].startswith('--command=')
  _ok(fake.remote(ssh))
  repo = str(fake.home / 'flanx')
  assert [r['argv'] for r in fake.recorded('git')] == [
      ['clone', '--quiet', url, repo], ['-C', repo, 'checkout', '--quiet', "it's-v1"]]
  assert fake.recorded('pip')[-1] == {'argv': ['install', '-q', '-c', 'constraints.txt', '-e', '.[gpu]'],
                                      'cwd': repo}


def test_setup_refuses_a_checkout_without_commits(fake, tmp_path):
  empty = tmp_path / 'empty'
  (empty / 'scripts').mkdir(parents=True)
  for name in ('tpu_vm.py', 'tpu_vm.defaults.ini'):
    shutil.copy(SCRIPTS / name, empty / 'scripts' / name)
  _git(empty, 'init', '-q')
  fake.repo = empty
  proc = fake.tool('setup')
  assert proc.returncode == 2 and 'is not a git checkout with a commit' in proc.stderr and fake.calls() == []


@pytest.mark.parametrize('mode', ['train', 'eval', 'infer'])
def test_run_starts_the_entry_point_on_all_workers_with_gin_flags_intact(fake, mode):
  fake.install_entry_point()
  _ok(fake.tool(mode, GIN_FILE, *OVERRIDES))
  (ssh,) = fake.calls()
  assert ssh[:8] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=all']
  out = _ok(fake.remote(ssh)).stdout
  assert fake.wait_for_entry_point() == {
      'argv': ['-m', f'flanx.{mode}', f'--gin_file={GIN_FILE}', '--gin.MODEL_DIR="gs://bucket/run"',
               *OVERRIDES],
      'cwd': str(fake.home / 'flanx')}
  log = fake.home / 'flanx-logs' / f'{mode}-{HOSTNAME}.log'
  assert str(log) in out
  for _ in range(200):  # The background run writes its output to the worker's log.
    if 'step 1: loss 2.5' in log.read_text():
      break
    time.sleep(0.02)
  assert log.read_text() == 'step 1: loss 2.5\n'


def test_run_refuses_a_second_run_and_stop_kills_it(fake):
  fake.install_entry_point()
  _ok(fake.tool('train', '--model_dir', 'gs://bucket/other'))
  _ok(fake.tool('stop'))
  _ok(fake.tool('setup', '--repo_url', 'https://example.com/flanx.git'))
  train, stop, setup = fake.calls()
  assert stop[:8] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=all']
  _ok(fake.remote(train, FAKE_SLEEP='60'))
  assert fake.wait_for_entry_point()['argv'][2:] == ['--gin.MODEL_DIR="gs://bucket/other"']
  pid = int((fake.home / 'flanx-logs' / 'run.pid').read_text())
  for refused in (fake.remote(train), fake.remote(setup)):  # Setup would replace the code under the run.
    assert refused.returncode == 1 and f'still going (pid {pid})' in refused.stderr
  assert fake.recorded('apt') == []
  assert f'stopped pid {pid}' in _ok(fake.remote(stop)).stdout
  for _ in range(200):
    if not _running(pid):
      break
    time.sleep(0.02)
  else:
    raise AssertionError('stop did not end the run')
  assert 'no flanx run going' in _ok(fake.remote(stop)).stdout


def test_gpu_run_uses_plain_ssh_and_config_search_paths(fake, tmp_path):
  fake.install_entry_point()
  fake.config.write_text('[common]\nmodel_dir = /home/me/run\ngin_search_paths = gin,/opt/gin\n')
  _ok(fake.tool('infer', '--gpu', '--gin.X=1'))
  (ssh,) = fake.calls()
  assert ssh[:4] == ['compute', 'ssh', 'flanx-gpu', '--zone=us-central1-a'] and len(ssh) == 5
  _ok(fake.remote(ssh))
  assert fake.wait_for_entry_point()['argv'] == [
      '-m', 'flanx.infer', '--gin_search_paths=gin,/opt/gin', '--gin.MODEL_DIR="/home/me/run"', '--gin.X=1']


def test_logs(fake):
  _ok(fake.tool('logs'))
  _ok(fake.tool('logs', '--mode', 'eval', '--worker', '2', '-n', '3', '-f'))
  default, follow = fake.calls()
  assert default[:8] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=all']
  assert follow[7] == '--worker=2' and '-F' in shlex.split(follow[8])
  (fake.home / 'flanx-logs').mkdir()
  (fake.home / 'flanx-logs' / f'train-{HOSTNAME}.log').write_text(''.join(f'line {i}\n' for i in range(60)))
  shown = _ok(fake.remote(default)).stdout.splitlines()
  assert shown == [f'[{HOSTNAME}] line {i}' for i in range(10, 60)]


def test_ssh(fake):
  _ok(fake.tool('ssh'))
  _ok(fake.tool('ssh', '--worker', '3'))
  _ok(fake.tool('ssh', '--worker', 'all', '--', 'ls', '-la', '"$HOME"'))
  _ok(fake.tool('ssh', '--gpu', '--', 'nvidia-smi'))
  assert fake.calls() == [
      ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=0'],
      ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=3'],
      ['compute', 'tpus', 'tpu-vm', 'ssh', 'flanx-tpu', *TPU, '--worker=all', '--command=ls -la "$HOME"'],
      ['compute', 'ssh', 'flanx-gpu', '--zone=us-central1-a', '--project=my-proj', '--command=nvidia-smi'],
  ]


def test_copy(fake, tmp_path):
  dest = tmp_path / 'out dir' / 'runs'
  _ok(fake.tool('copy', '--subdir', 'inference_eval/', str(dest)))
  _ok(fake.tool('copy', '--model_dir', 'gs://b/x/', str(dest)))
  assert dest.is_dir()
  assert fake.calls() == [['storage', 'cp', '-r', 'gs://bucket/run/inference_eval', str(dest), '--project=my-proj'],
                          ['storage', 'cp', '-r', 'gs://b/x', str(dest), '--project=my-proj']]


@pytest.mark.parametrize('args', [
    ['create', '--accelerator', 'v5litepod-8', '--spot'],
    ['create', '--gpu', '--preemptible'],
    ['setup'],
    ['setup', '--repo_url', 'git@host:a/b.git'],
    ['train', GIN_FILE, *OVERRIDES],
    ['eval', '--gpu', '--model_dir', 'gs://b/r', '--gin.EVAL_SPLIT="validation"'],
    ['logs', '--worker', '1', '-f'],
    ['stop'],
    ['ssh', '--', 'cat', "it's"],
    ['copy', 'dest'],
    ['delete', '--gpu'],
])
def test_dry_run_prints_the_exact_commands_and_runs_nothing(fake, args, monkeypatch):
  monkeypatch.chdir(fake.tmp)  # `copy dest` creates ./dest.
  status, out, err = fake.in_process(args[0], '--dry-run', *args[1:])
  assert status == 0 and fake.calls() == [] and not (fake.tmp / 'dest').exists(), err
  printed = out.splitlines()
  status, _, err = fake.in_process(*args)  # In-process for speed; every subcommand also runs as a script above.
  assert status == 0, err
  gcloud_lines = [shlex.split(line) for line in printed if line.startswith('gcloud ')]
  assert gcloud_lines == [['gcloud', *call] for call in fake.calls()]


def test_failed_step_stops_with_its_status_and_cleans_up(fake):
  proc = fake.tool('setup', FAKE_GCLOUD_RC='5')
  assert proc.returncode == 5
  assert 'command failed with exit status 5: gcloud compute tpus tpu-vm scp' in proc.stderr
  assert [c[3] for c in fake.calls()] == ['scp']  # No ssh after the failed scp.
  assert not (fake.tmp / 'flanx-tpu-flanx.tar.gz').exists()


@pytest.mark.parametrize('args, message', [
    (['create', '--spot', '--preemptible'], 'choose one of spot and preemptible'),
    (['create', '--accelerator', 'tpu7x-8', '--zone', 'us-central1-c'],
     "no default TPU software version for accelerator type 'tpu7x-8'"),
    (['create', '--accelerator', 'tpu7x-8'], "no default zone for accelerator type 'tpu7x-8'"),
    (['create', '--accelerator', 'v3-128', '--zone', 'us-central2-b'],
     'v3-128 is not offered in zone us-central2-b; zones that offer it: europe-west4-a'),
    (['create', '--accelerator', 'v4-32', '--zone', 'europe-west4-a'],
     'v4-32 is not offered in zone europe-west4-a; zones that offer it: us-central2-b'),
    (['create', '--name', 'My-TPU'], "VM name 'My-TPU' is not valid"),
    (['delete', '--name', 'tpu-'], "VM name 'tpu-' is not valid"),
    (['ssh', '--name', '9tpu'], "VM name '9tpu' is not valid"),
    (['create', '--name', 'a' * 64], 'is not valid: use 1-63 characters'),
    (['train', '--model_dir', '/local/run'], "MODEL_DIR '/local/run' must be a gs:// path"),
    (['train', '--gin.MODEL_DIR="/tmp/x"'], "MODEL_DIR '/tmp/x' must be a gs:// path"),
    (['train', '--model_dir', 'gs://a', '--gin.MODEL_DIR="gs://b"'], 'give the model dir once'),
    (['train', 'gin/nope.gin'], 'gin file not found: gin/nope.gin'),
    (['train', '--gin.TRAIN_STEPS', '10'], 'write --gin.TRAIN_STEPS and its value as one argument'),
    (['train', '--gin.=3'], "bad flag '--gin.=3'"),
    (['create', '--gin.X=1'], '--gin.X=1 is only for train, eval and infer'),
    (['ssh', '--worker', 'all'], 'an interactive ssh goes to one worker'),
    (['logs', '--gpu', '--worker', '3'], 'a GPU VM has one worker'),
    (['logs', '--worker', 'w3'], "--worker takes all, N, N-M or N,M,...; not 'w3'"),
    (['copy', '--model_dir', 'bucket/run'], "copy downloads from a gs:// model dir, not 'bucket/run'"),
])
def test_bad_input_is_a_clear_error_and_runs_nothing(fake, args, message):
  assert message in fake.error(*args) and fake.calls() == []


@pytest.mark.parametrize('config, message', [
    ('[tpu]\nzonee = us-central2-b\n', "{config}: [tpu] has unknown key 'zonee'"),
    ('[gpus]\nzone = x\n', '{config}: unknown section [gpus]'),
    ('[tpu]\nzone\n', 'bad config file {config}'),
    ('[tpu]\nspot = maybe\n', "[tpu] spot must be true or false, not 'maybe'"),
    ('[common]\nremote_repo = .\n', "remote_repo = '.' is not a usable remote folder"),
    ('[common]\nremote_repo = /\n', "remote_repo = '/' is not a usable remote folder"),
])
def test_bad_config_names_the_file_and_key(fake, config, message):
  fake.config.write_text(config)
  assert message.format(config=fake.config) in fake.error('setup') and fake.calls() == []


@pytest.mark.parametrize('name', ['../../x', 'a/b', '..'])
def test_setup_refuses_names_that_would_write_outside_the_temp_folder(fake, name):
  before = set(fake.tmp.parent.iterdir())
  assert "is not valid" in fake.error('setup', '--name', name)
  assert fake.calls() == [] and set(fake.tmp.parent.iterdir()) == before


@pytest.mark.parametrize('mode', ['train', 'eval', 'infer'])
def test_run_compiles_for_the_accelerator_here_before_starting(fake, mode):
  _ok(fake.tool(mode, GIN_FILE, '--accelerator', 'v3-128', '--gin.TRAIN_STEPS=3'))
  (check,) = fake.compile_checks()
  assert check == {'argv': ['-m', f'flanx.{mode}', f'--gin_file={GIN_FILE}', '--gin.MODEL_DIR="gs://bucket/run"',
                            '--gin.TRAIN_STEPS=3', '--topology=v3-128', '--compile_only'],
                   'cwd': str(fake.repo)}
  (ssh,) = fake.calls()
  assert ssh[4:6] == ['flanx-tpu', '--zone=europe-west4-a']


@pytest.mark.parametrize('status, verdict', [(3, 'does not fit on v4-32'), (1, 'could not be checked')])
def test_run_refuses_to_start_when_the_check_fails(fake, status, verdict):
  proc = fake.tool('train', GIN_FILE, FAKE_COMPILE_RC=str(status))
  assert proc.returncode == status and fake.calls() == []
  assert 'fake compile report' in proc.stdout
  assert f'refusing to start: the run {verdict}' in proc.stderr and '--skip_compile_check' in proc.stderr


def test_run_skips_the_check_when_asked_and_on_gpu_vms(fake):
  _ok(fake.tool('train', GIN_FILE, '--skip_compile_check', FAKE_COMPILE_RC='3'))
  _ok(fake.tool('train', '--gpu', GIN_FILE, FAKE_COMPILE_RC='3'))
  assert fake.compile_checks() == [] and len(fake.calls()) == 2


def test_dry_run_prints_the_compile_check_and_runs_nothing(fake):
  status, out, err = fake.in_process('train', '--dry-run', GIN_FILE)
  assert status == 0, err
  check, ssh = out.splitlines()
  assert shlex.split(check)[1:] == ['-m', 'flanx.train', f'--gin_file={GIN_FILE}',
                                    '--gin.MODEL_DIR="gs://bucket/run"', '--topology=v4-32', '--compile_only']
  assert ssh.startswith('gcloud compute tpus tpu-vm ssh') and fake.compile_checks() == []
