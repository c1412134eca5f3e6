"""Where a run's step count starts, and what it takes from its initial checkpoint: t5x's conventions.

t5x counts steps absolutely. Fine-tuning Flan-T5 XXL from `checkpoint_1114000` for 5k steps is
`TRAIN_STEPS = 1119000`: the step continues from the checkpoint, the learning-rate schedule sees the absolute
step, and checkpoints are named `checkpoint_<absolute step>`. flanx does the same when the initial checkpoint
is a t5x checkpoint (`train.continue_step`, default None: on for t5x checkpoints, off otherwise; off counts from
0 as before). TRAIN_STEPS at or below the checkpoint's step is then refused before anything starts, with the
number that was probably meant. `train.relative_steps` (t5x's TRAIN_STEPS_RELATIVE) trains that many steps past
the initial checkpoint's step instead (t5x counts them from the step restored at each start, so a resumed t5x
run trains further; flanx keeps the end step fixed across restarts).

Optimizer state: fresh by default. Its Adafactor count starts at 0, so the second-moment decay restarts
(rho = 0 on the first update) exactly as t5x with `Adafactor.step_offset = <checkpoint step>`, while the
learning-rate schedule is offset to keep seeing the absolute step. `train.restore_optimizer_state=True` continues
the checkpoint's Adafactor state and count instead, which is what t5x's RestoreCheckpointConfig (finetune.gin,
strict restore) does with a checkpoint that holds one: second moments then stay nearly frozen
(rho = 1 - 1114001^-0.8).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from flanx.model.config import T5Config

PyTree = Any


class StartStepError(ValueError):
  """TRAIN_STEPS / continue_step / restore_optimizer_state do not fit the initial checkpoint."""


@dataclasses.dataclass(frozen=True)
class StartPlan:
  """The step a fresh run starts at, the absolute step it stops at, and whether optimizer state is restored."""
  step: int
  train_steps: int
  restore_optimizer_state: bool

  @property
  def schedule_offset(self) -> int:
    """What to add to a fresh optimizer's update count to get the absolute step (0 when state is restored)."""
    return 0 if self.restore_optimizer_state else self.step


def plan_start(initial_checkpoint_path: str | None, train_steps: int, relative_steps: int | None = None,
               continue_step: bool | None = None, restore_optimizer_state: bool = False,
               train_steps_key: str = 'TRAIN_STEPS') -> StartPlan:
  """Decides the start step and the absolute end step; refuses inconsistent settings up front."""
  from flanx.interop import t5x_checkpoint  # pylint: disable=g-import-not-at-top
  is_t5x = bool(initial_checkpoint_path) and t5x_checkpoint.is_t5x_checkpoint(initial_checkpoint_path)
  if continue_step is None:
    continue_step = is_t5x
  if (continue_step or restore_optimizer_state) and not is_t5x:
    what = 'train.continue_step' if continue_step else 'train.restore_optimizer_state'
    raise StartStepError(f'{what} needs a t5x initial checkpoint (INITIAL_CHECKPOINT_PATH = '
                         f'{initial_checkpoint_path!r} is not one): other checkpoints carry no step or optimizer state')
  if restore_optimizer_state and not continue_step:
    raise StartStepError('train.restore_optimizer_state=True restores the checkpoint\'s step with its optimizer '
                         'state: it needs train.continue_step (t5x step semantics), not False')
  start = 0
  if continue_step:
    found = t5x_checkpoint.read_step(initial_checkpoint_path)
    if found is None:
      raise StartStepError(f'{initial_checkpoint_path}: the t5x checkpoint records no step; set '
                           'train.continue_step = False to count from 0')
    start = found
  if relative_steps is not None:
    if relative_steps <= 0:
      raise StartStepError(f'train.relative_steps = {relative_steps}: must be positive')
    return StartPlan(start, start + relative_steps, restore_optimizer_state)
  if continue_step and train_steps <= start:
    raise StartStepError(
        f'{train_steps_key} = {train_steps}, but t5x counts steps absolutely and {initial_checkpoint_path} is at '
        f'step {start}: nothing would be trained. For N fine-tuning steps set {train_steps_key} = {start} + N '
        f'(e.g. {start + train_steps} for {train_steps}), or train.relative_steps = N, or '
        'train.continue_step = False to count from 0.')
  return StartPlan(start, train_steps, restore_optimizer_state)


def shifted_schedule(schedule: Callable[[Any], Any], offset: int) -> Callable[[Any], Any]:
  """schedule(count + offset): a fresh optimizer's count mapped onto the absolute train step."""
  if not offset:
    return schedule
  return lambda count: schedule(count + offset)


def restore_optimizer_state(path: str, config: T5Config, optimizer: Any, opt_shardings: PyTree) -> PyTree:
  """The t5x checkpoint's Adafactor state (count = its step) in `config`'s layout, placed on the mesh."""
  from flanx.interop import t5x_checkpoint  # pylint: disable=g-import-not-at-top
  state, checkpoint_dir = t5x_checkpoint.read_state(path, optimizer_state=True, params=False)
  try:
    host = t5x_checkpoint.read_adafactor_state(state, config, optimizer)
  except t5x_checkpoint.T5XCheckpointError as e:
    raise t5x_checkpoint.T5XCheckpointError(f'{checkpoint_dir}: {e}') from None

  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, host, opt_shardings)
