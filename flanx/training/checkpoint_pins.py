"""Pins: a command reading a checkpoint of a live run (export) keeps the trainer from pruning it meanwhile.

While a run's lease is live (its heartbeat is recent), the reader writes MODEL_DIR/read_pins/
checkpoint_<step>.<host>-<pid>.json before reading and removes it after. The trainer keeps every pinned step on
top of its newest `keep_checkpoints` (`Pinned`, an orbax preservation policy). A pin left by a reader that was
killed stops counting once its process is gone (same host) or after PIN_TTL_S. Should the checkpoint vanish
anyway (a trainer from before pins), the reader says so plainly instead of failing on missing files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import time
from typing import Iterator, Sequence

from flanx.training import run_lease

PINS = 'read_pins'
PIN_TTL_S = 6 * 3600
LEASE_STALE_S = 300  # run_lease's default: a heartbeat older than this is not a live trainer
_PIN_NAME = re.compile(r'checkpoint_(\d+)\.(.+)-(\d+)\.json')


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  return tf.io.gfile


def live_holder(run_dir: str) -> str | None:
  """'host H, pid P' of the trainer holding `run_dir`'s lease with a recent heartbeat, else None."""
  path = os.path.join(run_dir, run_lease.LEASE_FILE)
  gfile = _gfile()
  try:
    with gfile.GFile(path) as f:
      holder = json.load(f)
    age = time.time() - float(holder['heartbeat'])
  except Exception:  # pylint: disable=broad-except  (no lease, or one being rewritten: no live trainer known)
    return None
  return f'host {holder.get("host")}, pid {holder.get("pid")}' if age < LEASE_STALE_S else None


def pinned_steps(run_dir: str, now: float | None = None) -> set[int]:
  """Steps with a pin that still counts (its process may be running, and it is younger than PIN_TTL_S)."""
  gfile, folder = _gfile(), os.path.join(run_dir, PINS)
  now = time.time() if now is None else now
  steps = set()
  try:
    names = gfile.listdir(folder) if gfile.isdir(folder) else []
  except Exception:  # pylint: disable=broad-except  (pins only ever keep more)
    return steps
  host = socket.gethostname()
  for name in names:
    match = _PIN_NAME.fullmatch(name)
    if not match:
      continue
    try:
      with gfile.GFile(os.path.join(folder, name)) as f:
        written = float(json.load(f)['time'])
    except Exception:  # pylint: disable=broad-except
      written = now  # unreadable (being written): count it
    if now - written > PIN_TTL_S or (match.group(2) == host and not run_lease.pid_running(int(match.group(3)))):
      continue
    steps.add(int(match.group(1)))
  return steps


@dataclasses.dataclass
class Pinned:
  """orbax preservation policy: keeps the checkpoints a reader has pinned (combine with LatestN)."""
  run_dir: str

  def should_preserve(self, checkpoints: Sequence, *, context=None) -> Sequence[bool]:
    del context  # orbax's PreservationContext: nothing in it matters here
    pinned = pinned_steps(self.run_dir) if checkpoints else set()
    return [info.step in pinned for info in checkpoints]


@contextlib.contextmanager
def reading(path: str) -> Iterator[str]:
  """Yields the checkpoint folder `path` names (a run folder: its newest), pinned while the run's trainer is live.

  A checkpoint pruned before its pin landed is replaced by the newest one when `path` is the run folder; when it
  names that checkpoint, or the files vanish while being read, a CheckpointRestoreError says what happened.
  """
  from flanx.training import checkpoints, run_folder  # pylint: disable=g-import-not-at-top
  checkpoint_path, run_dir, step = checkpoints.locate(path)
  holder = live_holder(run_dir)
  if holder is None:
    yield checkpoint_path
    return
  named = checkpoint_path.rstrip('/') == path.rstrip('/')
  gfile = _gfile()
  pin = None
  for _ in range(5):
    pin = os.path.join(run_dir, PINS, f'checkpoint_{step}.{socket.gethostname()}-{os.getpid()}.json')
    run_folder.check_pin_path(run_dir, pin)
    try:
      gfile.makedirs(os.path.dirname(pin))
      with gfile.GFile(pin, 'w') as f:
        f.write(json.dumps({'time': time.time(), 'host': socket.gethostname(), 'pid': os.getpid()}))
    except Exception as e:  # pylint: disable=broad-except  (a read-only run folder: read without a pin)
      print(f'Warning: could not pin {checkpoint_path} against pruning by the live trainer ({holder}): {e}',
            flush=True)
      pin = None
    if gfile.exists(os.path.join(checkpoint_path, 'params')):
      break
    _remove(pin)
    if named:
      raise checkpoints.CheckpointRestoreError(_vanished(checkpoint_path, run_dir, holder))
    checkpoint_path, run_dir, step = checkpoints.locate(run_dir)  # pruned meanwhile: the newest one instead
  try:
    yield checkpoint_path
  except Exception as e:  # pylint: disable=broad-except
    if not gfile.exists(os.path.join(checkpoint_path, 'params')):
      raise checkpoints.CheckpointRestoreError(_vanished(checkpoint_path, run_dir, holder)) from e
    raise
  finally:
    _remove(pin)


def _vanished(checkpoint_path: str, run_dir: str, holder: str) -> str:
  return (f'{checkpoint_path} was deleted while it was being read: the trainer running in {run_dir} ({holder}) '
          'pruned it. Rerun with --checkpoint_dir set to the run folder (its newest checkpoint is pinned while it '
          'is read), or stop the trainer first.')


def _remove(pin: str | None) -> None:
  if pin is None:
    return
  try:
    _gfile().remove(pin)
  except Exception:  # pylint: disable=broad-except  (already gone; a stale pin stops counting by itself)
    pass
