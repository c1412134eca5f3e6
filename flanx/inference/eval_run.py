"""Which checkpoints `flanx.eval` evaluates, and where each one's results go (t5x's eval.py over a run).

`evaluate.checkpoints`:
- 'newest' (default): the checkpoint CHECKPOINT_PATH names, or a run folder's newest;
- 'all': every checkpoint of the run folder, in step order, skipping those already evaluated (their
  `<split>_metrics.json` exists);
- 'wait': 'all', then keeps polling for new checkpoints (`poll_seconds`) as a side job beside the trainer, until
  the trainer released the run (no MODEL_DIR/run_lease.json) and all are evaluated, or none appeared for
  `wait_timeout` seconds (also before the first checkpoint: the side job may start before the trainer). It only reads the run and writes under MODEL_DIR/eval/: it never takes the lease.

Results of checkpoint_<step> of a run go to `<output>/checkpoint_<step>/` (`<split>_metrics.json` with the
real step and path, `<split>_predictions.jsonl`), where <output> is EVAL_OUTPUT_DIR or MODEL_DIR/eval; the
TensorBoard scalars and `<split>_metrics.jsonl` at <output> have one point per checkpoint step. A single
checkpoint evaluated with an explicit EVAL_OUTPUT_DIR writes its files there directly (as before).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterator

from flanx.training import checkpoints

MODES = ('newest', 'all', 'wait')


@dataclasses.dataclass(frozen=True)
class Target:
  """One checkpoint to evaluate: its folder, step (None: not a flanx checkpoint), and output folders."""
  path: str
  step: int | None
  output_dir: str  # <split>_metrics.json, <split>_predictions.jsonl
  summary_dir: str  # TensorBoard + <split>_metrics.jsonl, one point per step


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  return tf.io.gfile


def targets(checkpoint_path: str, mode: str, output_dir: str | None, split: str, wait_timeout: float = 3600.0,
            poll_seconds: float = 30.0, log: Callable[[str], None] = print,
            sleep: Callable[[float], None] = time.sleep) -> Iterator[Target]:
  """The checkpoints to evaluate, in order (see the module doc); a bad mode or a missing path fails here, before
  the caller builds anything."""
  if mode not in MODES:
    raise ValueError(f'evaluate.checkpoints={mode!r}: expected one of {MODES}')
  if mode != 'wait' and not _gfile().exists(checkpoint_path):  # nothing to evaluate: an error, never an empty result
    raise FileNotFoundError(f'{checkpoint_path} does not exist (CHECKPOINT_PATH: a flanx run or checkpoint folder, '
                            'a Hugging Face folder or a t5x checkpoint)')
  return _targets(checkpoint_path, mode, output_dir, split, wait_timeout, poll_seconds, log, sleep)


def _targets(checkpoint_path: str, mode: str, output_dir: str | None, split: str, wait_timeout: float,
             poll_seconds: float, log: Callable[[str], None], sleep: Callable[[float], None]) -> Iterator[Target]:
  if mode != 'wait' and not checkpoints.is_flanx_checkpoint(checkpoint_path):  # a Hugging Face or t5x folder
    if mode != 'newest':
      raise ValueError(f'evaluate.checkpoints={mode!r} evaluates the checkpoints of a flanx run folder; '
                       f'{checkpoint_path} is not one')
    out = output_dir or os.path.join(checkpoint_path.rstrip('/'), 'eval')
    yield Target(checkpoint_path, None, out, out)
    return
  one = os.path.basename(checkpoint_path.rstrip('/')).startswith('checkpoint_') or mode == 'newest'
  if one:
    newest, run_dir, step = checkpoints.locate(checkpoint_path)
    summary_dir = output_dir or os.path.join(run_dir, 'eval')
    yield Target(newest, step, output_dir or os.path.join(summary_dir, f'checkpoint_{step}'), summary_dir)
    return
  from flanx.inference import checkpoint_table  # pylint: disable=g-import-not-at-top
  from flanx.training import run_lease  # pylint: disable=g-import-not-at-top
  run_dir = checkpoint_path.rstrip('/')
  summary_dir = output_dir or os.path.join(run_dir, 'eval')
  if mode == 'all':
    checkpoints.locate(run_dir)  # FileNotFoundError naming the folder when it holds no checkpoint
  gfile, seen, last_new = _gfile(), set(), time.time()
  while True:
    fresh = [s for s in checkpoint_table.existing_steps(run_dir) if s not in seen]
    for s in fresh:
      seen.add(s)
      out = os.path.join(summary_dir, f'checkpoint_{s}')
      if gfile.exists(os.path.join(out, f'{split}_metrics.json')):
        log(f'checkpoint_{s}: already evaluated ({out}/{split}_metrics.json), skipped')
        continue
      yield Target(os.path.join(run_dir, f'checkpoint_{s}'), s, out, summary_dir)
    if mode == 'all':
      return
    if fresh:
      last_new = time.time()
      continue
    if seen and not gfile.exists(os.path.join(run_dir, run_lease.LEASE_FILE)):
      if not [s for s in checkpoint_table.existing_steps(run_dir) if s not in seen]:
        log(f'{run_dir}: no trainer holds the run and every checkpoint is evaluated; done')
        return
      continue
    if time.time() - last_new > wait_timeout:
      log(f'{run_dir}: no new checkpoint for {wait_timeout:.0f} s; done')
      return
    sleep(poll_seconds)


def vanished(target: Target) -> bool:
  """Whether the checkpoint was deleted meanwhile (the trainer's keep_checkpoints / keep_best)."""
  return not _gfile().exists(os.path.join(target.path, 'params'))
