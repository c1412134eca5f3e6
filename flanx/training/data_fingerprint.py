"""What the training data was when a checkpoint was written, so a resume notices when it changed.

A saved data position counts batches of a particular input pipeline; if the files under it changed (records
added, removed, edited), restoring it silently trains on a different stream. Each checkpoint records, per task
of the mixture, its source files with their size and a cheap content sample: sha256 of the first and last
64 KiB of a local file (a copy or `touch` does not count as a change, an edit almost always does), or the
modification time of a gs:// object (reading it would cost a download). Tasks whose sources are not files
(in-memory functions, TFDS) are not fingerprinted. A task source says which files it reads through a
`source_files()` method (tasks.spec.SpecSource, tasks.flan.FlanFileSource) or seqio's FileDataSource shards.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

_SAMPLE_BYTES = 64 * 1024
_MAX_HASHED_FILES = 1000  # beyond this, a task's local files are compared by size and modification time


def _files(source: Any, split: str) -> list[str] | None:
  import seqio  # pylint: disable=g-import-not-at-top
  if hasattr(source, 'source_files'):
    return list(source.source_files())
  if isinstance(source, seqio.FileDataSource):
    return list(source.list_shards(split))
  return None


def _describe(path: str, hashed: bool) -> list:
  """[size, content sample or modification time] of one file."""
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    stat = tf.io.gfile.stat(path)
    return [int(stat.length), f'mtime:{int(stat.mtime_nsec)}']
  size = os.path.getsize(path)
  if not hashed:
    return [size, f'mtime:{os.stat(path).st_mtime_ns}']
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    digest.update(f.read(_SAMPLE_BYTES))
    if size > 2 * _SAMPLE_BYTES:
      f.seek(size - _SAMPLE_BYTES)
    digest.update(f.read(_SAMPLE_BYTES))
  return [size, 'sha256:' + digest.hexdigest()[:32]]


def fingerprint(mixture_or_task_name: str, split: str = 'train') -> dict[str, dict[str, list]]:
  """{task: {file: [size, sample]}} for the tasks of the mixture whose sources are files."""
  import seqio  # pylint: disable=g-import-not-at-top
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  out, seen = {}, {}  # seen: a file several tasks read (Flan's template variants) is described once
  for task in sorted(tasks, key=lambda t: t.name):
    try:
      files = _files(task.source, split)
    except Exception:  # pylint: disable=broad-except  (the pipeline reports a missing source with its own message)
      files = None
    if files is None:
      continue
    hashed = len(files) <= _MAX_HASHED_FILES
    out[task.name] = {path: seen.get(path) or seen.setdefault(path, _describe(path, hashed))
                      for path in sorted(set(files))}
  return out


def changes(recorded: Mapping[str, Mapping[str, list]], current: Mapping[str, Mapping[str, list]]) -> list[str]:
  """Lines naming each file that was removed, added or changed (size, or content sample) between the two."""
  lines = []
  for task in sorted(set(recorded) & set(current)):
    before, now = recorded[task], current[task]
    for path in sorted(set(before) | set(now)):
      if path not in now:
        lines.append(f'{task}: {path} is gone')
      elif path not in before:
        lines.append(f'{task}: {path} is new')
      elif list(before[path]) != list(now[path]):
        (old_size, old_sample), (size, sample) = before[path], now[path]
        if old_size != size:
          lines.append(f'{task}: {path} changed size ({old_size:,} -> {size:,} bytes)')
        elif old_sample.split(':')[0] == sample.split(':')[0] == 'sha256':
          lines.append(f'{task}: {path} changed (same size, different content)')
        elif old_sample.split(':')[0] == sample.split(':')[0]:
          lines.append(f'{task}: {path} was rewritten (same size, new modification time)')
  return lines


def check_unchanged(recorded: Mapping[str, Any] | None, current: Mapping[str, Any], where: str,
                    restore_data: bool) -> None:
  """RunConfigError when the data changed since checkpoint `where` and its saved position would be restored."""
  if not recorded or not restore_data:
    return
  found = changes(recorded, current)
  if found:
    from flanx.training import run_checks  # pylint: disable=g-import-not-at-top
    shown = '; '.join(found[:10]) + (f'; and {len(found) - 10} more' if len(found) > 10 else '')
    raise run_checks.RunConfigError(
        f'the training data changed since {where} was written ({shown}): its saved data position counts batches '
        'of the old data. To resume anyway, rerun with --gin.train.restore_data=False (the input pipeline then '
        're-reads and skips as many batches of the new data), or restore the old files, or start a new MODEL_DIR.')
