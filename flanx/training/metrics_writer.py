"""Run logging on the first host: a progress bar, TensorBoard scalars and a JSON-lines metrics file.

The progress bar is drawn only on a terminal; when its stream (stderr) is a file or a pipe, each logged interval
prints one plain line instead (`train step 40/800: loss/token …, ETA …`), so a log file gets one line per
`train.log_every` steps rather than one huge line of carriage returns.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
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
    tf.io.gfile.makedirs(model_dir)
    jsonl = os.path.join(model_dir, f'{name}_metrics.jsonl')
    if resume_step is not None:
      _truncate_jsonl(jsonl, resume_step)
    # purge_step: TensorBoard hides events at or after it from earlier event files (a resumed run's repeats).
    self._tb = SummaryWriter(os.path.join(model_dir, name), purge_step=None if resume_step is None else resume_step + 1)
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
    for key, value in clean.items():
      if math.isfinite(value):
        self._tb.add_scalar(key, value, step)
    self._jsonl.write(json.dumps({'step': step, **{k: v if math.isfinite(v) else str(v) for k, v in clean.items()}})
                      + '\n')
    self._jsonl.flush()
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

  def close(self) -> None:
    """Flushes and closes everything."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._tb.close()
    self._jsonl.close()


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
