"""Learning-rate schedules with t5x semantics, as optax schedules (step -> float32 learning rate).

`step` is the optimizer step before the update (step 0 is the first update), as in t5x. `step_offset` makes
the schedule relative to a later start (e.g. the step of a restored pretraining checkpoint), and every
schedule is floored at `min_learning_rate` (t5x's create_learning_rate_scheduler does both).
"""

from __future__ import annotations

import gin
import jax.numpy as jnp
import optax


def _relative_step(step, step_offset: int):
  return jnp.maximum(0.0, jnp.asarray(step, jnp.float32) - step_offset)


@gin.configurable
def constant(learning_rate: float = 1e-3, min_learning_rate: float = 1e-8) -> optax.Schedule:
  """A constant learning rate (t5x fine-tuning default 1e-3; Flan-T5 used 5e-4)."""
  value = max(float(learning_rate), min_learning_rate)
  return lambda step: jnp.full((), value, jnp.float32)


@gin.configurable
def linear_warmup(learning_rate: float = 1e-3, warmup_steps: int = 1000, step_offset: int = 0,
                  min_learning_rate: float = 1e-8) -> optax.Schedule:
  """learning_rate * min(1, step / warmup_steps), then constant (t5x 'constant * linear_warmup')."""
  if warmup_steps <= 0:
    raise ValueError(f'linear_warmup: warmup_steps must be positive, got {warmup_steps}')

  def schedule(step):
    fraction = jnp.minimum(1.0, _relative_step(step, step_offset) / warmup_steps)
    return jnp.maximum(learning_rate * fraction, min_learning_rate).astype(jnp.float32)

  return schedule


@gin.configurable
def rsqrt_decay(learning_rate: float = 1.0, warmup_steps: int = 10000, step_offset: int = 0,
                min_learning_rate: float = 1e-8) -> optax.Schedule:
  """learning_rate / sqrt(max(step, warmup_steps)) (t5x 'constant * rsqrt_decay', T5 pretraining's)."""
  if warmup_steps <= 0:
    raise ValueError(f'rsqrt_decay: warmup_steps must be positive, got {warmup_steps}')

  def schedule(step):
    value = learning_rate / jnp.sqrt(jnp.maximum(_relative_step(step, step_offset), warmup_steps))
    return jnp.maximum(value, min_learning_rate).astype(jnp.float32)

  return schedule


@gin.configurable
def warmup_cosine_decay(init_value: float = 0.0, peak_value: float = 1e-4, warmup_steps: int = 1000,
                        decay_steps: int = 10000, end_value: float = 0.0, exponent: float = 1.0,
                        step_offset: int = 0) -> optax.Schedule:
  """optax.warmup_cosine_decay_schedule (t5x's optax-optimizer examples use it), from `step_offset` on.

  An optax schedule counts the optimizer's own updates; flanx's schedules see the train step, so a fresh optimizer
  started at a restored step N needs step_offset = N to give what optax would. No min_learning_rate floor (optax
  has none).
  """
  schedule = optax.warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value,
                                                exponent)
  return lambda step: jnp.asarray(schedule(_relative_step(step, step_offset)), jnp.float32)
