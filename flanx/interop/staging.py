"""Output folders that appear whole or not at all: written in a hidden folder beside the target, then renamed.

The hidden folder is named `.NAME.PURPOSE-HOST-PID-XXXX`. A process killed before the rename (kill -9, a lost
machine) leaves it behind: the next staging of the same target removes those whose process is gone (same host),
or, for names without host and pid, that are older than STALE_AFTER_S, and reports the others. SIGTERM while
staging raises SystemExit so the folder is removed. An output folder must not overlap the folders it is made
from (check_outside).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Iterator

STALE_AFTER_S = 3600  # staging folders without host/pid in their name (older flanx) older than this are stale


def check_target(target: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
  """The absolute target folder; an error if it is a file, or a non-empty folder and not `overwrite`."""
  target = pathlib.Path(target).absolute()
  if target.exists() and not target.is_dir():
    raise FileExistsError(f'{target} exists and is not a directory')
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f'{target} exists and is not empty (pass --overwrite to replace it)')
  return target


def _relation(path: str, folder: str) -> str | None:
  """How local `path` overlaps `folder` ('is', 'is inside', 'contains'; links resolved), or None."""
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  if path == folder:
    return 'is'
  common = os.path.commonpath([path, folder])
  return 'is inside' if common == folder else 'contains' if common == path else None


def check_outside(target: str | os.PathLike, source: str, what: str, new_inside_ok: bool = False) -> None:
  """An error if the output folder `target` is, is inside, or contains the input folder `source`.

  new_inside_ok: a target inside `source` is allowed while it does not exist or is empty (nothing to replace).
  """
  target = str(target)
  if '://' in target or '://' in source:  # a gs:// input and a local output (or the reverse) cannot overlap
    return
  relation = _relation(target, source)
  if relation == 'is inside' and new_inside_ok and not (os.path.isdir(target) and os.listdir(target)):
    return
  if relation:
    raise ValueError(f'output folder {target} {relation} the {what} {source}: writing it would replace or delete '
                     'what is read; choose an output folder outside it')


def _prefix(target: pathlib.Path, purpose: str) -> str:
  return f'.{target.name}.{purpose}-'


def _owner_tag() -> str:
  """HOST-PID of this process, as staging folder names carry it (no '-' inside HOST)."""
  return f"{re.sub('[^A-Za-z0-9.]', '_', socket.gethostname())}-{os.getpid()}"


def _process_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _leftover_state(path: pathlib.Path, prefix: str) -> str | None:
  """None when the staging folder `path` is stale (its process is gone), else why it is kept."""
  match = re.fullmatch(r'(?:([A-Za-z0-9._]+)-(\d+)-)?[a-z0-9_]{8}', path.name[len(prefix):])  # mkdtemp: 8 chars
  if not match:
    return 'not a staging folder name'
  if match.group(1):
    host, pid = match.group(1), int(match.group(2))
    if host != _owner_tag().split('-')[0]:
      return f'made by process {pid} on host {host}, which may still be running'
    return f'process {pid} is still running' if _process_running(pid) else None
  age = time.time() - path.stat().st_mtime
  return None if age > STALE_AFTER_S else f'modified {age:.0f} s ago, may belong to a running process'


def clean_leftovers(target: str | os.PathLike, purpose: str) -> list[str]:
  """Removes stale `.NAME.PURPOSE-*` staging folders beside `target`; returns a line for each (removed or kept).

  Also `.NAME.old-*` (a replaced target whose removal was cut short): removed when `target` exists, else kept and
  reported, since it then holds the only copy of the previous output.
  """
  target = pathlib.Path(target).absolute()
  lines = []
  if not target.parent.is_dir():
    return lines
  for kind in (purpose, 'old'):
    prefix = _prefix(target, kind)
    for path in sorted(target.parent.iterdir()):
      if not path.name.startswith(prefix) or path.is_symlink() or not path.is_dir():
        continue
      why = _leftover_state(path, prefix)
      if why == 'not a staging folder name':  # e.g. another target whose name starts like this one
        continue
      if kind == 'old' and why is None and not target.exists():
        why = f'it holds the previous {target.name} (a replacement was interrupted); move it back or delete it'
      if why is None:
        shutil.rmtree(path, ignore_errors=True)
        lines.append(f'Removed {path}, left by an interrupted run writing {target}.')
      else:
        lines.append(f'Kept {path} ({why}).')
  return lines


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
  """Inside the block SIGTERM raises SystemExit (so `finally` cleanup runs); main thread only."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def stop(signum, frame):  # pylint: disable=unused-argument
    raise SystemExit(128 + signum)

  previous = signal.signal(signal.SIGTERM, stop)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def replace_folder(staged: pathlib.Path, target: pathlib.Path) -> None:
  """Moves a complete `staged` folder to `target`, replacing an existing `target` only at that moment."""
  if target.exists():
    old = pathlib.Path(tempfile.mkdtemp(prefix=f'{_prefix(target, "old")}{_owner_tag()}-', dir=target.parent))
    target.rename(old / target.name)
    staged.rename(target)
    shutil.rmtree(old)
  else:
    staged.rename(target)


def current_umask() -> int:
  """The process umask (Python can only read it by setting it: restored at once)."""
  umask = os.umask(0o022)
  os.umask(umask)
  return umask


def make_ordinary(path: str | os.PathLike) -> None:
  """Gives a file written private (safetensors' save_file: 0600) the mode open() would: 0666 less the umask."""
  os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, overwrite: bool = False, purpose: str = 'tmp') -> Iterator[pathlib.Path]:
  """Yields an empty hidden folder beside `target`; on success it becomes `target`, on any error it is removed."""
  target = check_target(target, overwrite)
  target.parent.mkdir(parents=True, exist_ok=True)
  for line in clean_leftovers(target, purpose):
    print(line, flush=True)
  with _sigterm_raises():
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f'{_prefix(target, purpose)}{_owner_tag()}-', dir=target.parent))
    try:
      yield staging
      os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private
      replace_folder(staging, target)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
