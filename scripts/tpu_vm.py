#!/usr/bin/env python3
"""Drives a Cloud TPU VM (every worker of a slice) or one GPU VM through a flanx run, with gcloud.

Subcommands: create, setup, train, eval, infer, logs, stop, ssh, copy, delete.
Each one is a short list of commands (gcloud, plus local git/mkdir/rm for setup and copy); --dry-run
prints them one per line, shell-quoted and copy-pasteable, and runs nothing.
Defaults: scripts/tpu_vm.defaults.ini; override with --config FILE (or FLANX_VM_CONFIG) and flags.
Usage guide: scripts/README.md.
"""

from __future__ import annotations

import argparse
import configparser
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

SCRIPT_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
DEFAULTS = SCRIPT_DIR / 'tpu_vm.defaults.ini'
CONFIG_ENV = 'FLANX_VM_CONFIG'
ENTRY_POINTS = {'train': 'flanx.train', 'eval': 'flanx.eval', 'infer': 'flanx.infer'}
# Flags handed to the entry points untouched. Taken out of argv before argparse, which would
# mistake a value with a space ("--gin.X={'a': 1}") for a positional argument.
GIN_PREFIXES = ('--gin.', '--gin_file', '--gin_search_paths')
# TPU software version per generation, from Cloud TPU's "TPU software versions" page.
TPU_RUNTIMES = (
    (r'v[234]-\d+', 'tpu-ubuntu2204-base'),
    (r'v5litepod-\d+', 'v2-alpha-tpuv5-lite'),
    (r'v5p-\d+', 'v2-alpha-tpuv5'),
    (r'v6e-\d+', 'v2-alpha-tpuv6e'),
)
REMOTE_TARBALL = 'flanx.tar.gz'
# Zones that offer each TPU type, from Cloud TPU's "TPU regions and zones" page; the first is the default.
# v3 pods (v3-32 and up) are only in europe-west4-a; v4 only in us-central2-b.
TPU_ZONES = (
    (r'v3-8', ('europe-west4-a', 'us-central1-a', 'us-central1-b')),
    (r'v3-\d+', ('europe-west4-a',)),
    (r'v4-\d+', ('us-central2-b',)),
    (r'v5litepod-\d+', ('us-west4-a', 'us-central1-a', 'us-south1-a', 'us-west1-c')),
    (r'v5p-\d+', ('us-east5-a', 'us-central1-a', 'europe-west4-b')),
    (r'v6e-\d+', ('us-east5-b', 'us-central1-b', 'us-east1-d', 'us-east5-a', 'europe-west4-a')),
)
# gcloud's rule for TPU node and Compute Engine instance names: 1-63 characters, a lowercase letter first,
# then lowercase letters, digits or hyphens, not ending with a hyphen.
VM_NAME = r'[a-z]([-a-z0-9]{0,61}[a-z0-9])?'
# The local compile-only check of train/eval/infer (flanx.training.aot): 3 = does not fit, 1 = error.
COMPILE_DOES_NOT_FIT = 3


class UsageError(Exception):
  """Bad input: reported as one line, exit status 2."""


class StepFailed(Exception):
  """A command exited non-zero: reported with the command, exit status of that command."""

  def __init__(self, argv: list[str], returncode: int):
    super().__init__(f'command failed with exit status {returncode}: {shlex.join(argv)}')
    self.argv, self.returncode = argv, returncode


# ----------------------------------------------------------------------------------------------
# Settings


def _read_ini(parser: configparser.ConfigParser, path: str | os.PathLike) -> None:
  """Reads one INI file into parser; errors name the file (and line, for syntax errors)."""
  try:
    with open(path, encoding='utf-8') as f:
      parser.read_file(f, source=str(path))
  except OSError as e:
    raise UsageError(f'cannot read config file {path}: {e.strerror}') from e
  except configparser.Error as e:
    raise UsageError(f'bad config file {path}: {e}') from e


def load_settings(kind: str, config_files: list[str]) -> dict:
  """Merged [common] + [kind] settings: the defaults file, then each config file in order."""
  merged = configparser.ConfigParser(interpolation=None)
  _read_ini(merged, DEFAULTS)
  for path in config_files:
    user = configparser.ConfigParser(interpolation=None)
    _read_ini(user, path)
    for section in user.sections():
      if not merged.has_section(section):
        raise UsageError(f'{path}: unknown section [{section}]; known: {", ".join(merged.sections())}')
      for key in user[section]:
        if key not in merged[section]:
          known = ', '.join(merged[section])
          raise UsageError(f'{path}: [{section}] has unknown key {key!r}; known keys there: {known}')
        merged[section][key] = user[section][key]
  settings = dict(merged['common'])
  settings.update(merged[kind])
  for key in ('spot', 'preemptible'):
    try:
      settings[key] = merged.getboolean(kind, key)
    except ValueError as e:
      raise UsageError(f'[{kind}] {key} must be true or false, not {merged[kind][key]!r}') from e
  settings['kind'] = kind
  return settings


def _check_remote_path(key: str, path: str) -> None:
  """Refuses remote folders that `rm -rf` or `cd` would turn into the home or root directory."""
  parts = [p for p in path.split('/') if p]
  if not parts or any(p in ('.', '..', '~') for p in parts) or '$' in path:
    raise UsageError(f'{key} = {path!r} is not a usable remote folder; give a plain name like "flanx"')


# ----------------------------------------------------------------------------------------------
# gcloud command lines


def _where(s: dict) -> list[str]:
  """--zone (and --project) flags of every compute command."""
  flags = [f'--zone={s["zone"]}']
  if s['project']:
    flags.append(f'--project={s["project"]}')
  return flags


def tpu_runtime(accelerator: str) -> str:
  """TPU software version for an accelerator type such as v4-32."""
  for pattern, version in TPU_RUNTIMES:
    if re.fullmatch(pattern, accelerator):
      return version
  raise UsageError(f'no default TPU software version for accelerator type {accelerator!r}; '
                   'pass --version (see `gcloud compute tpus tpu-vm versions list`)')


def tpu_zones(accelerator: str) -> tuple[str, ...]:
  """Zones offering a TPU accelerator type (default first); empty for types this table does not know."""
  for pattern, zones in TPU_ZONES:
    if re.fullmatch(pattern, accelerator):
      return zones
  return ()


def check_zone(s: dict) -> None:
  """Refuses a TPU accelerator/zone pair Cloud TPU does not offer, before gcloud would."""
  zones = tpu_zones(s['accelerator'])
  if zones and s['zone'] not in zones:
    raise UsageError(f'{s["accelerator"]} is not offered in zone {s["zone"]}; zones that offer it: '
                     f'{", ".join(zones)} (Cloud TPU "TPU regions and zones"; --skip_zone_check to try anyway)')


def check_name(name: str) -> None:
  """Refuses VM names gcloud would reject (they also name local temporary files)."""
  if not re.fullmatch(VM_NAME, name):
    raise UsageError(f'VM name {name!r} is not valid: use 1-63 characters, a lowercase letter first, then '
                     'lowercase letters, digits or hyphens, not ending with a hyphen (gcloud\'s rule)')


def create_argv(s: dict) -> list[str]:
  """The gcloud command that creates the VM."""
  if s['spot'] and s['preemptible']:
    raise UsageError('choose one of spot and preemptible, not both')
  if s['kind'] == 'tpu':
    argv = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', s['name'], *_where(s),
            f'--accelerator-type={s["accelerator"]}',
            f'--version={s["version"] or tpu_runtime(s["accelerator"])}']
    if s['spot']:
      argv.append('--spot')
    if s['preemptible']:
      argv.append('--preemptible')
    return argv
  argv = ['gcloud', 'compute', 'instances', 'create', s['name'], *_where(s),
          f'--machine-type={s["machine_type"]}']
  if s['accelerator']:
    argv.append(f'--accelerator={s["accelerator"]}')
  argv += [f'--image-family={s["image_family"]}', f'--image-project={s["image_project"]}',
           # GPU VMs cannot live-migrate; the image installs the driver on first boot.
           '--maintenance-policy=TERMINATE', '--metadata=install-nvidia-driver=True',
           f'--boot-disk-size={s["boot_disk_size"]}']
  if s['scopes']:
    argv.append(f'--scopes={s["scopes"]}')
  if s['spot']:
    argv += ['--provisioning-model=SPOT', '--instance-termination-action=STOP']
  if s['preemptible']:
    argv += ['--preemptible', '--no-restart-on-failure']
  return argv


def delete_argv(s: dict) -> list[str]:
  """The gcloud command that deletes the VM without asking."""
  if s['kind'] == 'tpu':
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', s['name'], *_where(s), '--quiet']
  return ['gcloud', 'compute', 'instances', 'delete', s['name'], *_where(s), '--quiet']


def ssh_argv(s: dict, command: str | None, worker: str = 'all') -> list[str]:
  """gcloud ssh into the VM; `command` (one shell string) runs on `worker` ('all', N) of a TPU VM."""
  if s['kind'] == 'tpu':
    argv = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', s['name'], *_where(s), f'--worker={worker}']
  else:
    argv = ['gcloud', 'compute', 'ssh', s['name'], *_where(s)]
  if command is not None:
    argv.append(f'--command={command}')
  return argv


def scp_argv(s: dict, local: str, remote: str) -> list[str]:
  """gcloud scp of a local file to `remote` (relative to the home directory) on every worker."""
  if s['kind'] == 'tpu':
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local, f'{s["name"]}:{remote}', *_where(s),
            '--worker=all']
  return ['gcloud', 'compute', 'scp', local, f'{s["name"]}:{remote}', *_where(s)]


# ----------------------------------------------------------------------------------------------
# Remote shell commands (each is one string, run by the remote login shell on every worker)


def _remote(path: str) -> str:
  """A shell word for a remote path; relative paths are under the remote home directory."""
  if path.startswith('/'):
    return shlex.quote(path)
  return '"$HOME"/' + shlex.quote(path)


def _pid_file(s: dict) -> str:
  return _remote(f'{s["remote_logs"]}/run.pid')


def log_file(s: dict, mode: str) -> str:
  """Shell word for a worker's log of `mode`: ~/flanx-logs/<mode>-<hostname>.log."""
  return _remote(f'{s["remote_logs"]}/{mode}-') + '"$(hostname)".log'


def _refuse_if_running(s: dict) -> str:
  """Shell `if` that exits 1 while the run recorded in the pid file is alive."""
  pid = _pid_file(s)
  return (f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then '
          f'echo "$(hostname): a flanx run is still going (pid $(cat {pid})); use the stop subcommand" >&2; '
          'exit 1; fi')


def setup_command(s: dict, from_tarball: bool) -> str:
  """Installs Python and git, puts the code in remote_repo, and pip-installs it into a venv."""
  python, extras = s['python'], s['extras']
  repo, venv = _remote(s['remote_repo']), _remote(s['remote_venv'])
  apt = '-qq -o DPkg::Lock::Timeout=600'  # Fresh VMs run unattended upgrades at boot.
  steps = [
      'set -e',
      _refuse_if_running(s),  # Replacing the code under a live run would break it.
      f'sudo apt-get {apt} update',
      f'sudo DEBIAN_FRONTEND=noninteractive apt-get {apt} install -y '
      + shlex.join([python, f'{python}-venv', 'git']),
      f'rm -rf {repo}',
  ]
  if from_tarball:
    tarball = _remote(REMOTE_TARBALL)
    steps += [f'mkdir -p {repo}', f'tar -xzf {tarball} -C {repo}', f'rm -f {tarball}']
  else:
    steps += [f'git clone --quiet {shlex.quote(s["repo_url"])} {repo}',
              f'git -C {repo} checkout --quiet {shlex.quote(s["ref"])}']
  steps += [
      f'{shlex.quote(python)} -m venv {venv}',
      f'{venv}/bin/pip install -q --upgrade pip',
      f'cd {repo}',
      f'{venv}/bin/pip install -q -c constraints.txt -e ' + shlex.quote(f'.[{extras}]'),
      f'echo "$(hostname): flanx installed in" {venv}',
  ]
  return '; '.join(steps)


def run_command(s: dict, mode: str, flags: list[str]) -> str:
  """Starts `python -m flanx.<mode> FLAGS` in the background, output to the worker's log file."""
  repo, venv, logs = _remote(s['remote_repo']), _remote(s['remote_venv']), _remote(s['remote_logs'])
  log, pid = log_file(s, mode), _pid_file(s)
  entry = shlex.join(['-m', ENTRY_POINTS[mode], *flags])
  return '; '.join([
      'set -e',
      f'cd {repo}',
      f'mkdir -p {logs}',
      _refuse_if_running(s),  # A second run would fight the first for the accelerator.
      f'nohup {venv}/bin/python {entry} > {log} 2>&1 < /dev/null & echo $! > {pid}',
      f'echo "$(hostname): started {ENTRY_POINTS[mode]}, pid $(cat {pid}), log" {log}',
  ])


def logs_command(s: dict, mode: str, lines: int, follow: bool) -> str:
  """Tails the worker's log of `mode`, each line prefixed with the worker's hostname."""
  tail = ['tail', '-n', str(lines)] + (['-F'] if follow else [])
  return f'{shlex.join(tail)} {log_file(s, mode)} | sed -u "s/^/[$(hostname)] /"'


def stop_command(s: dict) -> str:
  """Kills the run recorded in the worker's pid file."""
  pid = _pid_file(s)
  return (f'if [ -f {pid} ] && kill "$(cat {pid})" 2>/dev/null; then '
          f'echo "$(hostname): stopped pid $(cat {pid})"; '
          'else echo "$(hostname): no flanx run going"; fi; '
          f'rm -f {pid}')


# ----------------------------------------------------------------------------------------------
# Subcommands: each returns (steps, cleanup steps that run even when a step fails)


def _git(*args: str) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(['git', '-C', str(REPO_ROOT), *args], capture_output=True, text=True)
  except FileNotFoundError as e:
    raise UsageError('git is not on PATH; setup needs it to archive the checkout') from e


def plan_setup(s: dict) -> tuple[list[list[str]], list[list[str]]]:
  """Copies `git archive HEAD` (or clones repo_url) to every worker and installs flanx there."""
  _check_remote_path('remote_repo', s['remote_repo'])
  if s['repo_url']:
    return [ssh_argv(s, setup_command(s, from_tarball=False))], []
  if _git('rev-parse', '--verify', '--quiet', 'HEAD').returncode:
    raise UsageError(f'setup copies `git archive HEAD` of {REPO_ROOT}, which is not a git checkout '
                     'with a commit; commit first or set repo_url')
  if _git('status', '--porcelain', '--untracked-files=no').stdout.strip():
    print(f'warning: uncommitted changes in {REPO_ROOT} are not copied (setup sends HEAD)',
          file=sys.stderr)
  tarball = os.path.join(tempfile.gettempdir(), f'{s["name"]}-flanx.tar.gz')
  steps = [
      ['git', '-C', str(REPO_ROOT), 'archive', '--format=tar.gz', f'--output={tarball}', 'HEAD'],
      scp_argv(s, tarball, REMOTE_TARBALL),
      ssh_argv(s, setup_command(s, from_tarball=True)),
  ]
  return steps, [['rm', '-f', tarball]]


def local_python(s: dict) -> str:
  """The interpreter of the local compile check: local_python, else this checkout's .venv, else this one."""
  if s.get('local_python'):
    return s['local_python']
  venv = REPO_ROOT / '.venv' / 'bin' / 'python'
  return str(venv) if venv.exists() else sys.executable


def compile_check_argv(s: dict, mode: str, flags: list[str]) -> list[str]:
  """`python -m flanx.<mode> FLAGS --topology=ACCELERATOR --compile_only`, run here before the VM starts it."""
  return [local_python(s), '-m', ENTRY_POINTS[mode], *flags, f'--topology={s["accelerator"]}', '--compile_only']


def entry_flags(s: dict, mode: str, gin_files: list[str], gin_args: list[str],
                model_dir: str | None) -> list[str]:
  """The flags of `python -m flanx.<mode>`: gin files, search paths, MODEL_DIR, then overrides."""
  for arg in gin_args:
    name, eq, value = arg.partition('=')
    if not eq:
      raise UsageError(f'write {arg} and its value as one argument: {arg}=VALUE')
    known = name in ('--gin_file', '--gin_search_paths') and value
    if not known and not re.fullmatch(r'--gin\.[A-Za-z_][\w./]*', name):
      raise UsageError(f'bad flag {arg!r}: expected --gin.KEY=VALUE, --gin_file=FILE or '
                       '--gin_search_paths=PATHS')
  for path in gin_files:
    if not (REPO_ROOT / path).is_file():
      raise UsageError(f'gin file not found: {path} (paths are relative to the repo root {REPO_ROOT}; '
                       'use --gin_file=PATH to pass a file this checkout lacks)')
  flags = []
  if s['gin_search_paths'] and not any(a.startswith('--gin_search_paths=') for a in gin_args):
    flags.append(f'--gin_search_paths={s["gin_search_paths"]}')
  flags += [f'--gin_file={path}' for path in gin_files]
  user_model_dir = [a.partition('=')[2] for a in gin_args if a.startswith('--gin.MODEL_DIR=')]
  if model_dir and user_model_dir:
    raise UsageError('give the model dir once: --model_dir or --gin.MODEL_DIR, not both')
  model_dir = model_dir or (None if user_model_dir else s['model_dir'])
  if model_dir:
    if '"' in model_dir or '\\' in model_dir:
      raise UsageError(f'model_dir {model_dir!r} must not contain quotes or backslashes')
    flags.append(f'--gin.MODEL_DIR="{model_dir}"')
  elif not user_model_dir:
    raise UsageError(f'{mode} needs a model dir: set model_dir in a --config file, or pass '
                     '--model_dir gs://BUCKET/RUN')
  for value in ([model_dir] if model_dir else [v.strip('\'"') for v in user_model_dir]):
    if s['kind'] == 'tpu' and not value.startswith('gs://'):
      raise UsageError(f'MODEL_DIR {value!r} must be a gs:// path on a TPU VM (all workers write there)')
  return flags + gin_args


def plan(args: argparse.Namespace, s: dict, gin_args: list[str]) -> tuple[list[list[str]], list[list[str]]]:
  """The commands of one subcommand, and cleanup commands."""
  command = args.command
  if gin_args and command not in ENTRY_POINTS:
    raise UsageError(f'{gin_args[0]} is only for train, eval and infer')
  if command == 'create':
    if s['kind'] == 'tpu' and not args.skip_zone_check:
      check_zone(s)
    return [create_argv(s)], []
  if command == 'setup':
    return plan_setup(s)
  if command in ENTRY_POINTS:
    _check_remote_path('remote_repo', s['remote_repo'])
    flags = entry_flags(s, command, args.gin_files, gin_args, args.model_dir)
    check = [] if s['kind'] == 'gpu' or args.skip_compile_check else [compile_check_argv(s, command, flags)]
    return check + [ssh_argv(s, run_command(s, command, flags))], []
  if command == 'logs':
    if args.lines < 0:
      raise UsageError('--lines must be >= 0')
    return [ssh_argv(s, logs_command(s, args.mode, args.lines, args.follow), _worker(s, args.worker))], []
  if command == 'stop':
    return [ssh_argv(s, stop_command(s))], []
  if command == 'ssh':
    remote = args.remote_command[1:] if args.remote_command[:1] == ['--'] else args.remote_command
    worker = _worker(s, args.worker or '0')
    if not remote and not worker.isdigit():
      raise UsageError(f'an interactive ssh goes to one worker; --worker={worker} needs a command')
    return [ssh_argv(s, ' '.join(remote) if remote else None, worker)], []  # Joined like ssh does.
  if command == 'copy':
    model_dir = (args.model_dir or s['model_dir']).rstrip('/')
    if not model_dir.startswith('gs://'):
      raise UsageError(f'copy downloads from a gs:// model dir, not {model_dir!r}; '
                       'set model_dir or pass --model_dir')
    source = f'{model_dir}/{args.subdir.strip("/")}' if args.subdir else model_dir
    dest = args.dest or s['copy_dest']
    project = [f'--project={s["project"]}'] if s['project'] else []
    return [['mkdir', '-p', dest], ['gcloud', 'storage', 'cp', '-r', source, dest, *project]], []
  if command == 'delete':
    return [delete_argv(s)], []
  raise AssertionError(command)


def _worker(s: dict, worker: str) -> str:
  """Validates a --worker value; GPU VMs have a single worker."""
  if s['kind'] == 'gpu':
    if worker not in ('all', '0'):
      raise UsageError(f'a GPU VM has one worker; --worker={worker} is for TPU VMs')
    return worker
  if worker != 'all' and not re.fullmatch(r'\d+([,-]\d+)*', worker):
    raise UsageError(f'--worker takes all, N, N-M or N,M,...; not {worker!r}')
  return worker


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
  """The argument parser; flags shared by every subcommand go after the subcommand."""
  common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common.add_argument('--gpu', action='store_true', help='drive one GPU VM ([gpu] settings), not a TPU VM')
  common.add_argument('--config', action='append', metavar='FILE',
                      help=f'INI file over the defaults (repeatable; default: ${CONFIG_ENV} if set)')
  common.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                      help='print the exact commands, one per line, and run nothing')
  common.add_argument('--name', help='VM name')
  common.add_argument('--zone', help='zone of the VM')
  common.add_argument('--project', help='GCP project')

  parser = argparse.ArgumentParser(prog='tpu_vm.py', description=__doc__, allow_abbrev=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True, metavar='SUBCOMMAND')

  def add(name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                          allow_abbrev=False)

  create = add('create', 'create the TPU VM (or GPU VM)')
  create.add_argument('--accelerator', help='TPU accelerator type (v4-32); GPU: type=...,count=N')
  create.add_argument('--version', help='TPU software version (default: picked from the accelerator)')
  create.add_argument('--spot', action=argparse.BooleanOptionalAction, help='spot VM')
  create.add_argument('--preemptible', action=argparse.BooleanOptionalAction, help='preemptible VM')
  create.add_argument('--machine_type', help='GPU VM machine type (a2-highgpu-1g)')
  create.add_argument('--image_family', help='GPU VM image family')
  create.add_argument('--boot_disk_size', help='GPU VM boot disk size (200GB)')
  create.add_argument('--skip_zone_check', action='store_true',
                      help='create even where the zone table says the accelerator is not offered')

  setup = add('setup', 'copy the repo (git archive HEAD, or clone repo_url) to every worker and '
              'pip install it into a venv')
  setup.add_argument('--repo_url', help='clone this URL instead of copying the local HEAD')
  setup.add_argument('--ref', help='branch, tag or commit to check out after cloning')

  for mode in ENTRY_POINTS:
    run = add(mode, f'start python -m flanx.{mode} on every worker, in the background, logging to '
              f'~/flanx-logs/{mode}-$(hostname).log; --gin.KEY=VALUE, --gin_file=F and '
              '--gin_search_paths=P pass through unchanged')
    run.add_argument('gin_files', nargs='*', metavar='GIN_FILE', help='gin file, relative to the repo root')
    run.add_argument('--model_dir', help='MODEL_DIR (gs://BUCKET/RUN); default: model_dir of the config')
    run.add_argument('--accelerator', help='TPU accelerator type the run is checked against (default: the config)')
    run.add_argument('--skip_compile_check', action='store_true',
                     help='start without first compiling the step for the accelerator here (flanx --compile_only)')

  logs = add('logs', 'print (or follow) the log of each worker')
  logs.add_argument('--mode', choices=list(ENTRY_POINTS), default='train', help='which run (train)')
  logs.add_argument('--worker', default='all', help='all (default), N, N-M or N,M')
  logs.add_argument('--lines', '-n', type=int, default=50, help='lines to show (50)')
  logs.add_argument('--follow', '-f', action='store_true', help='keep following the logs')

  add('stop', 'kill the flanx run going on every worker')

  ssh = add('ssh', 'ssh into a worker, or run a command there')
  ssh.add_argument('--worker', help='0 (default), N; with a command also all, N-M, N,M')
  ssh.add_argument('remote_command', nargs=argparse.REMAINDER, metavar='-- COMMAND',
                   help='command to run (its words are joined with spaces, like ssh does)')

  copy = add('copy', 'download MODEL_DIR (or a folder in it) from GCS')
  copy.add_argument('dest', nargs='?', help='local folder (default: copy_dest of the config, runs)')
  copy.add_argument('--model_dir', help='gs:// folder (default: model_dir of the config)')
  copy.add_argument('--subdir', help='only this folder of MODEL_DIR (e.g. inference_eval)')

  add('delete', 'delete the VM (no prompt)')
  return parser


def split_gin_args(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates the pass-through gin flags (up to a literal --) from the tool's own arguments."""
  own, gin = [], []
  for i, arg in enumerate(argv):
    if arg == '--':
      return own + argv[i:], gin
    (gin if arg.startswith(GIN_PREFIXES) else own).append(arg)
  return own, gin


def settings_for(args: argparse.Namespace) -> dict:
  """Settings of the config files with the command-line flags on top."""
  config_files = args.config or ([os.environ[CONFIG_ENV]] if os.environ.get(CONFIG_ENV) else [])
  s = load_settings('gpu' if args.gpu else 'tpu', config_files)
  for key in ('name', 'zone', 'project', 'accelerator', 'version', 'spot', 'preemptible', 'machine_type',
              'image_family', 'boot_disk_size', 'repo_url', 'ref'):
    value = getattr(args, key, None)
    if value is not None:
      s[key] = value
  if not s['name']:
    raise UsageError('the VM needs a name: set name in the config or pass --name')
  check_name(s['name'])
  if s['kind'] == 'tpu' and not s['zone']:
    zones = tpu_zones(s['accelerator'])
    if not zones:
      raise UsageError(f'no default zone for accelerator type {s["accelerator"]!r}; set zone or pass --zone')
    s['zone'] = zones[0]
  if not s['zone']:
    raise UsageError('the VM needs a zone: set zone in the config or pass --zone')
  return s


def is_compile_check(argv: list[str]) -> bool:
  """Whether a step is the local compile-only check of train/eval/infer."""
  return '--compile_only' in argv


def execute(steps: list[list[str]], cleanup: list[list[str]], dry_run: bool) -> None:
  """Prints (dry run) or runs the steps in order, stopping at the first failure; then the cleanup."""
  if dry_run:
    for argv in steps + cleanup:
      print(shlex.join(argv))
    return
  try:
    for argv in steps:
      print('+ ' + shlex.join(argv), file=sys.stderr, flush=True)
      try:
        # The compile check runs from the repo root, where the gin file paths it is given start.
        returncode = subprocess.call(argv, cwd=REPO_ROOT if is_compile_check(argv) else None)
      except FileNotFoundError as e:
        raise UsageError(f'{argv[0]} is not on PATH (gcloud comes with the Google Cloud CLI)') from e
      if returncode:
        raise StepFailed(argv, returncode)
  finally:
    for argv in cleanup:
      subprocess.call(argv)


def main(argv: list[str] | None = None) -> int:
  """Entry point; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  parser = build_parser()
  own, gin_args = split_gin_args(argv)
  args = parser.parse_args(own)
  try:
    s = settings_for(args)
    steps, cleanup = plan(args, s, gin_args)
    execute(steps, cleanup, args.dry_run)
  except UsageError as e:
    parser.exit(2, f'{parser.prog} {args.command}: error: {e}\n')
  except StepFailed as e:
    if is_compile_check(e.argv):
      verdict = ('does not fit' if e.returncode == COMPILE_DOES_NOT_FIT else
                 f'could not be checked (exit status {e.returncode}, error above)')
      print(f'{parser.prog} {args.command}: refusing to start: the run {verdict} on {s["accelerator"]} '
            '(report above); fix the config, or pass --skip_compile_check to start anyway', file=sys.stderr)
      return e.returncode
    print(f'{parser.prog} {args.command}: {e}', file=sys.stderr)
    return e.returncode
  except KeyboardInterrupt:  # Ctrl-C ends `logs -f` and interactive ssh; no traceback.
    return 130
  return 0


if __name__ == '__main__':
  sys.exit(main())
