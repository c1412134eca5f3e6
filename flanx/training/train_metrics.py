"""The training metrics a t5x user reads, with t5x's names and normalisation, over one logging interval.

t5x (models.compute_base_metrics, trainer.py) sums each step's values over the interval and then divides:
  loss, z_loss, cross_ent_loss                  per step: sum over the interval / steps (the loss is the summed,
                                                loss-normalizing-factor-divided batch loss, z-loss included)
  loss_per_nonpadding_target_token              sum of losses / sum of loss weights (non-padding target tokens)
  loss_per_all_target_tokens, z_loss_per_all_target_tokens, cross_ent_loss_per_all_target_tokens
                                                sums / all target token slots (batch x target length)
  accuracy                                      correct tokens / loss weights
  learning_rate, learning_rate/current          mean over the interval's steps, the last one (absolute step)
  timing/seconds, timing/steps_per_second, timing/seqs, timing/seqs_per_second(_per_core),
  timing/target_tokens_per_second(_per_core)   sequences are batch rows (packed rows when packing)
  non_padding_fraction/loss_weights             loss weights / target token slots
  effective_batch_size/{feature}, non_padding_fraction/{feature}, non_padding_fraction/overall
                                                from the segment ids ('encoder', 'decoder') when packed, else from
                                                the tokens ('encoder_input_tokens', 'decoder_target_tokens')
flanx adds grad_norm and param_norm (last step) and timing/mfu (when the device's peak is known). The progress
bar shows loss_per_nonpadding_target_token.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from flanx.model import flops
from flanx.model.config import T5Config

_DEVICE_SUMS = ('loss', 'z_loss', 'weight_sum', 'num_correct')
_DEVICE_LAST = ('grad_norm', 'param_norm')


def count_packed_examples(segment_ids: np.ndarray) -> int:
  """Examples in a [rows, length] segment-id (or non-padding mask) array: t5x's count (padding is trailing 0s)."""
  segment_ids = np.asarray(segment_ids).astype(np.int64)
  changes = int(np.sum(np.diff(segment_ids, axis=1) != 0))
  return changes + segment_ids.shape[0] - int(np.sum(segment_ids[:, -1] == 0))


def _features(host_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """t5x's feature name -> segment ids (packed batches) or non-padding masks (unpacked)."""
  packed = {k[:-len('_segment_ids')]: v for k, v in host_batch.items() if k.endswith('_segment_ids')}
  if packed:
    return packed
  return {k: np.asarray(host_batch[k]) != 0 for k in ('encoder_input_tokens', 'decoder_target_tokens')
          if k in host_batch}


class IntervalMetrics:
  """Accumulates steps (`add`) and returns the interval's metrics (`result`, which starts a new interval)."""

  def __init__(self, config: T5Config, batch_size: int, lengths: tuple[int, int], schedule: Callable[[int], Any]):
    self.batch_size, self.lengths, self.schedule = batch_size, lengths, schedule
    self.flops_per_step = flops.train_flops(config, *lengths) * batch_size
    self.peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
    self._reset()

  def _reset(self) -> None:
    self.start, self.steps, self.sums, self.last = time.perf_counter(), 0, dict.fromkeys(_DEVICE_SUMS, 0.0), {}
    self.learning_rates: list[float] = []
    self.examples: dict[str, int] = {}
    self.non_padding: dict[str, int] = {}
    self.slots: dict[str, int] = {}

  def add(self, host_batch: Mapping[str, np.ndarray], step_metrics: Mapping[str, Any], step: int) -> None:
    """One train step: its input batch (this host's rows), its metrics, and the step count after it."""
    values = jax.device_get({k: step_metrics[k] for k in _DEVICE_SUMS + _DEVICE_LAST if k in step_metrics})
    for key in _DEVICE_SUMS:
      self.sums[key] += float(values.get(key, 0.0))
    self.last = {k: float(values[k]) for k in _DEVICE_LAST if k in values}
    self.learning_rates.append(float(self.schedule(step - 1)))  # the update's step, as t5x's learning_rate_fn
    hosts = jax.process_count()
    for feature, ids in _features(host_batch).items():
      self.examples[feature] = self.examples.get(feature, 0) + count_packed_examples(ids) * hosts
      self.non_padding[feature] = self.non_padding.get(feature, 0) + int(np.sum(np.asarray(ids) != 0))
      self.slots[feature] = self.slots.get(feature, 0) + int(np.asarray(ids).size)
    self.steps += 1

  def result(self) -> dict[str, float]:
    """t5x's metrics for the steps added since the last call."""
    seconds = max(time.perf_counter() - self.start, 1e-9)
    steps, sums = max(self.steps, 1), self.sums
    seqs = self.steps * self.batch_size
    target_slots = seqs * self.lengths[1]
    weights = max(sums['weight_sum'], 1e-9)
    cross_ent = sums['loss'] - sums['z_loss']
    devices = jax.device_count()
    out = {
        'loss': sums['loss'] / steps,
        'z_loss': sums['z_loss'] / steps,
        'cross_ent_loss': cross_ent / steps,
        'loss_per_nonpadding_target_token': sums['loss'] / weights,
        'loss_per_all_target_tokens': sums['loss'] / max(target_slots, 1),
        'z_loss_per_all_target_tokens': sums['z_loss'] / max(target_slots, 1),
        'cross_ent_loss_per_all_target_tokens': cross_ent / max(target_slots, 1),
        'accuracy': sums['num_correct'] / weights,
        'non_padding_fraction/loss_weights': sums['weight_sum'] / max(target_slots, 1),
        'learning_rate': float(np.mean(self.learning_rates)) if self.learning_rates else 0.0,
        'learning_rate/current': self.learning_rates[-1] if self.learning_rates else 0.0,
        'timing/seconds': seconds,
        'timing/steps_per_second': self.steps / seconds,
        'timing/seqs': float(seqs),
        'timing/seqs_per_second': seqs / seconds,
        'timing/seqs_per_second_per_core': seqs / devices / seconds,
        'timing/target_tokens_per_second': target_slots / seconds,
        'timing/target_tokens_per_second_per_core': target_slots / devices / seconds,
        **self.last,
    }
    for feature in self.examples:
      out[f'effective_batch_size/{feature}'] = self.examples[feature] / steps
      out[f'non_padding_fraction/{feature}'] = self.non_padding[feature] / max(self.slots[feature], 1)
    if self.slots:
      out['non_padding_fraction/overall'] = sum(self.non_padding.values()) / max(sum(self.slots.values()), 1)
    if self.peak:
      out['timing/mfu'] = self.flops_per_step * self.steps / seconds / (self.peak * devices)
    self._reset()
    return out
