"""The run folder is the boundary: nothing flanx writes, renames or deletes may resolve outside it.

A symbolic link inside MODEL_DIR that points elsewhere (`data_state/checkpoint_0 -> /elsewhere`, a linked
`config.gin`, `train_metrics.jsonl` or `train/`) would make a save, a log line or a pruning write or delete
there, so `check_confined` refuses such a folder before any work, naming the link. Links that stay inside are
fine, and MODEL_DIR itself may be a link (only what is below it is checked). Files flanx rewrites in place
(`config.gin`, `*_metrics.jsonl`) may not be hard links either: a rewrite would change every name of the file.
Object stores (gs://) have neither, so only local folders are walked.

`enclosing_run_folder` finds the run folder a path lies in (by its markers), so an export never writes where a
trainer prunes; `write_failed` turns a failed write (disk full) into one CheckpointWriteError line naming the
path and the free space.
"""

from __future__ import annotations

import os
import re
import shutil

from flanx.training.run_checks import RunConfigError

LEASE_FILE = 'run_lease.json'  # the trainer's lease (run_lease.LEASE_FILE; not imported: tensorstore is heavy)
_CHECKPOINT = re.compile(r'checkpoint_\d+')


class OutsideRunFolderError(RunConfigError):
  """A link (or hard link) in a run or output folder would make flanx write outside it (a bad setting: exit 2)."""


def _inside(path: str, root: str) -> bool:
  return os.path.commonpath([path, root]) == root


def check_confined(folder: str, what: str = 'run folder') -> None:
  """Raises OutsideRunFolderError naming the first link below local `folder` that resolves outside it, or a
  file flanx rewrites in place that has other names (hard links). Nothing is changed."""
  if '://' in folder or not os.path.isdir(folder):
    return
  root = os.path.realpath(folder)
  for parent, dirs, files in os.walk(folder):  # does not descend into linked folders (checked as entries)
    for name in sorted(dirs + files):
      path = os.path.join(parent, name)
      if os.path.islink(path):
        target = os.path.realpath(path)
        if not _inside(target, root):
          raise OutsideRunFolderError(
              f'{path} is a symbolic link to {target}, outside the {what} {folder}: flanx would write or delete '
              'there through it. Replace the link with a real file or folder (or remove it), then rerun.')
      elif parent == folder and (name == 'config.gin' or name.endswith('_metrics.jsonl')):
        links = os.stat(path).st_nlink
        if links > 1:
          raise OutsideRunFolderError(
              f'{path} has {links} hard links: rewriting it would also change the other names of the file. '
              f'Replace it with a copy (cp {name} {name}.copy && mv {name}.copy {name}), then rerun.')


def is_run_folder(path: str) -> bool:
  """Whether local `path` looks like a flanx run folder: a lease, data positions, or a checkpoint_<step> folder
  (with params/ or orbax's metadata)."""
  if not os.path.isdir(path):
    return False
  if os.path.exists(os.path.join(path, LEASE_FILE)) or os.path.isdir(os.path.join(path, 'data_state')):
    return True
  try:
    names = os.listdir(path)
  except OSError:
    return False
  return any(_CHECKPOINT.fullmatch(n) and (os.path.isdir(os.path.join(path, n, 'params')) or
                                          os.path.exists(os.path.join(path, n, '_CHECKPOINT_METADATA')))
             for n in names)


def enclosing_run_folder(path: str) -> str | None:
  """The run folder that local `path` is in or is (links resolved), walking up its parents; None if none."""
  if '://' in path:
    return None
  current = os.path.realpath(path)
  while True:
    if is_run_folder(current):
      return current
    parent = os.path.dirname(current)
    if parent == current:
      return None
    current = parent


def check_pin_path(run_dir: str, path: str) -> None:
  """An error if writing `path` (a file flanx adds to someone else's run folder) would land outside it."""
  if '://' in run_dir:
    return
  target = os.path.realpath(path)
  if not _inside(target, os.path.realpath(run_dir)):
    raise OutsideRunFolderError(f'{path} resolves to {target}, outside the run folder {run_dir} (a symbolic '
                                'link): remove the link, then rerun.')


def free_space(path: str) -> str:
  """'12.3 MB free on /mnt' for the disk holding local `path` (its nearest existing parent); '' for gs://."""
  if '://' in path:
    return ''
  current = os.path.abspath(path)
  while not os.path.isdir(current) and os.path.dirname(current) != current:
    current = os.path.dirname(current)
  try:
    free = shutil.disk_usage(current).free
  except OSError:
    return ''
  for unit, size in (('GB', 10**9), ('MB', 10**6), ('kB', 10**3)):
    if free >= size:
      return f'{free / size:.1f} {unit} free on {current}'
  return f'{free} bytes free on {current}'


_ERRNO_TEXT = re.compile(r'No space left on device|Disk quota exceeded|Read-only file system|Permission denied|'
                         r'Input/output error|File too large')


def _reason(error: BaseException) -> str:
  """The short reason of a storage error ('No space left on device'), whatever library raised it."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(error)
  found = _ERRNO_TEXT.search(text)
  if found:
    return found.group(0)
  lines = text.strip().splitlines()
  return f'{type(error).__name__}: {lines[-1][:300]}' if lines else type(error).__name__


def is_storage_error(text: str) -> bool:
  """Whether an error text says the storage refused a write (disk full, quota, read-only, I/O error)."""
  return bool(_ERRNO_TEXT.search(text))


def write_failed(path: str, error: BaseException, stopped: str = '') -> Exception:
  """The CheckpointWriteError to raise when writing `path` failed: one line with the path, the reason, the free
  space, and `stopped` (what was kept; default: how to resume)."""
  from flanx.training.checkpoints import CheckpointWriteError  # pylint: disable=g-import-not-at-top
  reason = _reason(error)
  space = free_space(path)
  stopped = stopped or ('Training stopped; free space (or fix the storage error) and rerun the same command to '
                        'resume from the newest checkpoint.')
  return CheckpointWriteError(f'writing {path} failed: {reason}{f" ({space})" if space else ""}. {stopped}')
