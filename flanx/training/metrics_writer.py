"""Run logging on the first host: a progress bar, TensorBoard scalars and a JSON-lines metrics file.

The progress bar is drawn only on a terminal; when its stream (stderr) is a file or a pipe, each logged interval
prints one plain line instead (`train step 40/800: loss/token …, ETA …`), so a log file gets one line per
`train.log_every` steps rather than one huge line of carriage returns.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
import threading
from typing import Mapping

from flanx.training import runtime


class MetricsWriter:
  """Writes scalars to MODEL_DIR/<name>/ (TensorBoard) and MODEL_DIR/<name>_metrics.jsonl; no-op off host 0."""

  def __init__(self, model_dir: str, name: str = 'train', total_steps: int | None = None, initial_step: int = 0,
               progress: bool = True, resume_step: int | None = None):
    """resume_step: the run resumed from this step: rows of later steps (written before a crash) are dropped
    from the JSONL file, and TensorBoard is told to hide its later events (they would be plotted twice)."""
    self.enabled = runtime.is_first_host()
    self._bar = self._tb = self._jsonl = None
    self.name, self.total_steps, self._lines = name, total_steps, False
    if not self.enabled:
      return
    import tensorflow as tf  # gfile: local or gs://
    from tensorboardX import SummaryWriter
    _catch_tensorboard_thread_errors()
    _tensorboard_errors.clear()  # a new run's writer
    self._path = jsonl = os.path.join(model_dir, f'{name}_metrics.jsonl')
    with _reported(jsonl):
      tf.io.gfile.makedirs(model_dir)
      if resume_step is not None:
        _truncate_jsonl(jsonl, resume_step)
      # purge_step: TensorBoard hides events at or after it from earlier event files (a resumed run's repeats).
      # max_queue: tensorboardX's put blocks once its queue is full, forever if its writer thread died (a full
      # disk); with room for many steps, the next write() sees that death and stops the run with one line.
      self._tb = SummaryWriter(os.path.join(model_dir, name), max_queue=_TENSORBOARD_QUEUE,
                               purge_step=None if resume_step is None else resume_step + 1)
      self._jsonl = tf.io.gfile.GFile(jsonl, 'a')
    if progress and total_steps is not None and _is_terminal(sys.stderr):  # where tqdm draws
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=initial_step, desc=name, unit='step', dynamic_ncols=True)
    else:
      self._lines = progress and total_steps is not None

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Records scalars for `step` (TensorBoard + JSONL) and refreshes the progress bar's postfix."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    if _tensorboard_errors:  # TensorBoard's writer thread failed (disk full): stop here, with one line
      raise _failed(os.path.dirname(self._path), _tensorboard_errors[-1])
    with _reported(self._path):  # a full disk stops the run here, at its first failed write
      self._jsonl.write(json.dumps({'step': step, **{k: v if math.isfinite(v) else str(v) for k, v in clean.items()}})
                        + '\n')
      self._jsonl.flush()
    for key, value in clean.items():
      if math.isfinite(value):
        self._tb.add_scalar(key, value, step)
    if 'loss_per_nonpadding_target_token' in clean:  # the summed loss would read as divergence
      status = progress_status(clean)
      if self._bar is not None:
        self._bar.set_postfix_str(status, refresh=False)
      elif self._lines:
        print(f'{self.name} step {step}/{self.total_steps}: {status}', flush=True)

  def advance(self, steps: int = 1) -> None:
    """Moves the progress bar."""
    if self._bar is not None:
      self._bar.update(steps)

  def log(self, message: str) -> None:
    """A line of text (above the progress bar)."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      print(message, flush=True)

  def close(self, after_error: bool = False) -> None:
    """Flushes and closes everything (CheckpointWriteError if that fails). `after_error`: the run is already
    stopping on an error, which must stay the one reported: close what can be closed, within seconds, silently."""
    if not self.enabled or self._tb is None:
      return
    if self._bar is not None:
      self._bar.close()
    tb, self._tb = self._tb, None
    if after_error:  # TensorBoard's writer thread may be dead on a full disk: never wait long for it
      closer = threading.Thread(target=_ignore_errors(tb.close), name='close_tensorboard', daemon=True)
      closer.start()
      closer.join(timeout=10)
      _ignore_errors(self._jsonl.close)()
      return
    with _reported(self._path):
      tb.close()
      self._jsonl.close()


def _ignore_errors(fn):
  def call():
    try:
      fn()
    except Exception:  # pylint: disable=broad-except
      pass
  return call


_TENSORBOARD_QUEUE = 1000  # events (one per scalar) waiting for TensorBoard's writer thread
_tensorboard_errors: list[BaseException] = []  # storage errors that ended a TensorBoard writer thread


def _catch_tensorboard_thread_errors() -> None:
  """A TensorBoard writer thread that dies on a storage error is recorded (write() then stops the run with one
  line) instead of printing its traceback; every other thread error goes to the previous hook."""
  previous = threading.excepthook
  if getattr(previous, 'flanx_tensorboard', False):
    return

  def hook(args):
    if type(args.thread).__name__ == '_EventLoggerThread' and isinstance(args.exc_value, OSError):
      _tensorboard_errors.append(args.exc_value)
      return
    previous(args)

  hook.flanx_tensorboard = True
  threading.excepthook = hook


def _failed(path: str, error: BaseException) -> Exception:
  from flanx.training import run_folder  # pylint: disable=g-import-not-at-top
  return run_folder.write_failed(path, error)


@contextlib.contextmanager
def _reported(path: str):
  """A storage error inside the block becomes one CheckpointWriteError line naming `path` and the free space."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from flanx.training import run_folder  # pylint: disable=g-import-not-at-top
  try:
    yield
  except (OSError, tf.errors.OpError) as e:
    raise run_folder.write_failed(path, e) from e


def progress_status(scalars: Mapping[str, float]) -> str:
  """The progress line's text: loss per target token, speed, goodput, device-hours so far and the ETA."""
  parts = [f"loss/token {scalars['loss_per_nonpadding_target_token']:.4f}"]
  if 'timing/steps_per_second' in scalars:
    parts.append(f"{scalars['timing/steps_per_second']:.3g} steps/s")
  if 'timing/goodput' in scalars:
    parts.append(f"goodput {scalars['timing/goodput']:.0%}")
  if 'timing/device_hours' in scalars:
    parts.append(f"{scalars['timing/device_hours']:.3g} device-h")
  if 'timing/eta_seconds' in scalars and math.isfinite(scalars['timing/eta_seconds']):
    parts.append(f"ETA {datetime.timedelta(seconds=int(round(scalars['timing/eta_seconds'])))}")
  return ', '.join(parts)


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


def _truncate_jsonl(path: str, last_step: int) -> None:
  """Keeps the rows of steps <= last_step (and drops a partial last line from a kill mid-write)."""
  import tensorflow as tf  # gfile: local or gs://
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    lines = f.read().splitlines(keepends=True)
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if line.endswith('\n') and isinstance(row, dict) and row.get('step', 0) <= last_step:
      kept.append(line)
  if len(kept) == len(lines):
    return
  staged = path + '.truncating'
  with tf.io.gfile.GFile(staged, 'w') as f:
    f.write(''.join(kept))
  tf.io.gfile.rename(staged, path, overwrite=True)
