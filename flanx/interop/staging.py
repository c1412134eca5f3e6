"""Output folders that appear whole or not at all: written in a hidden folder beside the target, then renamed."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from typing import Iterator


def check_target(target: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
  """The absolute target folder; an error if it is a file, or a non-empty folder and not `overwrite`."""
  target = pathlib.Path(target).absolute()
  if target.exists() and not target.is_dir():
    raise FileExistsError(f'{target} exists and is not a directory')
  if target.exists() and any(target.iterdir()) and not overwrite:
    raise FileExistsError(f'{target} exists and is not empty (pass --overwrite to replace it)')
  return target


def replace_folder(staged: pathlib.Path, target: pathlib.Path) -> None:
  """Moves a complete `staged` folder to `target`, replacing an existing `target` only at that moment."""
  if target.exists():
    old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.old-', dir=target.parent))
    target.rename(old / target.name)
    staged.rename(target)
    shutil.rmtree(old)
  else:
    staged.rename(target)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, overwrite: bool = False, purpose: str = 'tmp') -> Iterator[pathlib.Path]:
  """Yields an empty hidden folder beside `target`; on success it becomes `target`, on any error it is removed."""
  target = check_target(target, overwrite)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{target.name}.{purpose}-', dir=target.parent))
  try:
    yield staging
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private
    replace_folder(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
