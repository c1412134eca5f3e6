"""The training loop behind `python -m flanx.train` (gin-configurable `train`).

Restarting the same command resumes from the newest checkpoint in MODEL_DIR with params, optimizer state,
step and data position restored; dropout keys derive from (seed, step), so a resumed run is bitwise identical
to an uninterrupted one on CPU. SIGTERM checkpoints and exits 0; a non-finite loss stops the run (exit 1)
with the last good checkpoint untouched.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np

from flanx import adafactor, checkpoint_import, checkpoints, data, flops, gin_utils, partitioning, runtime
from flanx import model as model_lib, schedules
from flanx import train_state as ts
from flanx.config import T5Config
from flanx.metrics_writer import MetricsWriter


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/inf; the run stopped without saving the bad state."""


@gin.configurable(denylist=['run_name'])
def train(*,
          model_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          train_steps: int = gin.REQUIRED,
          model_config: T5Config | None = None,
          mixture_or_task_module: str | None = None,
          learning_rate_schedule: Any = None,
          optimizer: Any = None,
          initial_checkpoint_path: str | None = None,
          checkpoint_period: int = 1000,
          keep_checkpoints: int | None = 3,
          async_checkpointing: bool = True,
          eval_period: int = 0,
          eval_split: str = 'validation',
          eval_batches: int | None = None,
          num_microbatches: int = 1,
          seed: int = 42,
          data_seed: int = 42,
          pack: bool = True,
          shuffle: bool = True,
          use_cached_tasks: bool = False,
          z_loss: float = 1e-4,
          label_smoothing: float = 0.0,
          loss_normalizing_factor: float | str | None = None,
          log_every: int = 10,
          progress_bar: bool = True,
          inject_nan_at_step: int | None = None,
          run_name: str = 'train') -> dict:
  """Trains (or resumes) a model on a seqio task/mixture and returns the final metrics."""
  config = model_config or T5Config()
  data.import_task_modules(mixture_or_task_module)
  if runtime.is_first_host():
    gin_utils.write_config(model_dir)
  mesh = partitioning.make_mesh()  # gin: make_mesh.data / make_mesh.model
  rules = partitioning.axis_rules()  # gin: axis_rules.fsdp
  schedule = learning_rate_schedule or schedules.constant()
  # Logical axes keep Adafactor's factoring/RMS per layer when layers are scanned (stacked kernels).
  tx = (optimizer or adafactor.adafactor)(learning_rate=schedule, param_axes=model_lib.logical_axes(config))
  shardings = ts.make_shardings(config, tx, mesh, rules)
  ckpts = checkpoints.RunCheckpoints(model_dir, keep=keep_checkpoints, async_save=async_checkpointing)
  writer = MetricsWriter(model_dir, run_name, total_steps=train_steps, progress=progress_bar)

  latest = ckpts.latest_step()
  batches_read = 0
  if latest is not None:
    target = ts.abstract_state(config, tx, shardings)
    params, opt_state, meta = ckpts.restore(latest, target['params'], target['opt_state'])
    step, batches_read = int(meta['step']), int(meta['batches_read'])
    writer.log(f'Resuming from {model_dir}/checkpoint_{latest} (step {step}).')
  else:
    if initial_checkpoint_path:
      params = checkpoint_import.load_sharded_params(initial_checkpoint_path, config, shardings.params)
      writer.log(f'Initialised from {initial_checkpoint_path}.')
    else:
      params = ts.init_params(config, seed, shardings)
    opt_state, step = ts.init_opt_state(tx, params, shardings), 0
  state = {'step': jax.device_put(np.int32(step), partitioning.replicated(mesh)), 'params': params,
           'opt_state': opt_state}

  dataset = data.get_dataset(mixture_or_task_name, task_feature_lengths, 'train', batch_size, shuffle=shuffle,
                             pack=pack, seed=data_seed, use_cached=use_cached_tasks)
  iterator = data.CheckpointableIterator(dataset)
  if batches_read:
    iterator.restore(ckpts.data_state_prefix(latest), batches_read)

  loss_config = ts.LossConfig(z_loss, label_smoothing, loss_normalizing_factor)
  with mesh, ts.activation_rules(shardings):
    train_step = ts.make_train_step(config, tx, shardings, loss_config, num_microbatches, dropout_seed=seed,
                                    inject_nan_at_step=inject_nan_at_step)
    eval_fn = _make_eval(config, shardings, loss_config, mixture_or_task_name, task_feature_lengths, eval_split,
                         batch_size, pack, data_seed, use_cached_tasks, eval_batches) if eval_period else None
    lengths = (task_feature_lengths['inputs'], task_feature_lengths['targets'])
    flops_per_step = flops.train_flops(config, *lengths) * batch_size
    peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
    preempted = runtime.PreemptionFlag().install()
    last_saved, metrics, status = (step if latest is not None else None), {}, 'finished'

    def save(at_step: int) -> None:
      nonlocal last_saved
      if last_saved != at_step:
        ckpts.save(at_step, state['params'], state['opt_state'],
                   {'step': at_step, 'batches_read': iterator.batches_read, 'seed': seed, 'data_seed': data_seed},
                   iterator)
        last_saved = at_step

    try:
      interval_start, interval_steps, fractions = time.perf_counter(), 0, []
      writer.advance(step)
      while step < train_steps:
        host_batch = next(iterator)
        fractions.append(data.non_padding_fraction(host_batch))
        state, step_metrics = train_step(state, data.to_global(host_batch, shardings.batch))
        step += 1
        interval_steps += 1
        loss = float(step_metrics['loss'])
        if not math.isfinite(loss):
          ckpts.wait()
          good = f'checkpoint_{last_saved}' if last_saved is not None else 'none yet'
          raise NonFiniteLossError(f'non-finite loss ({loss}) at step {step}; stopped without saving. '
                                   f'Last good checkpoint in {model_dir}: {good}')
        writer.advance()
        if step % log_every == 0 or step == train_steps:
          elapsed = time.perf_counter() - interval_start
          metrics = _timing_metrics(step_metrics, interval_steps, elapsed, batch_size, lengths, fractions,
                                    flops_per_step, peak, schedule(step - 1))
          writer.write(step, metrics)
          interval_start, interval_steps, fractions = time.perf_counter(), 0, []
        if eval_fn is not None and step % eval_period == 0:
          writer.write(step, eval_fn(state['params']))
        if step % checkpoint_period == 0:
          save(step)
        if preempted.is_set():
          writer.log(f'SIGTERM: saving checkpoint_{step} and exiting.')
          save(step)
          status = 'preempted'
          break
      else:
        save(step)
    finally:
      preempted.uninstall()
      ckpts.close()
      writer.close()
  return {'step': step, 'status': status, **{k: float(v) for k, v in metrics.items()}}


def _timing_metrics(step_metrics: Mapping[str, Any], steps: int, seconds: float, batch_size: int,
                    lengths: tuple[int, int], fractions: Sequence[Mapping[str, float]], flops_per_step: float,
                    peak: float | None, learning_rate: float) -> dict[str, float]:
  """t5x's timing and padding metrics plus tokens/s and MFU (when the device peak is known)."""
  out = {k: float(v) for k, v in step_metrics.items()}
  steps_per_second = steps / max(seconds, 1e-9)
  out['learning_rate'] = float(learning_rate)
  out['timing/steps_per_second'] = steps_per_second
  out['timing/seqs_per_second'] = steps_per_second * batch_size
  for feature, length in zip(('encoder_input_tokens', 'decoder_target_tokens'), lengths):
    fraction = float(np.mean([f[feature] for f in fractions])) if fractions else 0.0
    out[f'non_padding_fraction/{feature}'] = fraction
    out[f'timing/tokens_per_second/{feature}'] = steps_per_second * batch_size * length
    out[f'timing/non_padding_tokens_per_second/{feature}'] = steps_per_second * batch_size * length * fraction
  if peak:
    out['timing/mfu'] = flops_per_step * steps_per_second / (peak * jax.device_count())
  return out


def _make_eval(config, shardings, loss_config, task, lengths, split, batch_size, pack, seed, use_cached, max_batches):
  """Teacher-forced loss/accuracy over the eval split (one pass), as `fn(params) -> metrics`."""
  eval_step = ts.make_eval_step(config, shardings, loss_config)

  def run(params) -> dict[str, float]:
    ds = data.get_dataset(task, lengths, split, batch_size, shuffle=False, pack=pack, seed=seed, num_epochs=1,
                          use_cached=use_cached, drop_remainder=False)
    totals = {'loss_sum': 0.0, 'correct_sum': 0.0, 'weight_sum': 0.0}
    for i, batch in enumerate(ds.as_numpy_iterator()):
      if max_batches is not None and i >= max_batches:
        break
      batch, _ = data.pad_batch(batch, batch_size // jax.process_count())
      out = eval_step(params, data.to_global(batch, shardings.batch))
      totals = {k: totals[k] + float(out[k]) for k in totals}
    weights = max(totals['weight_sum'], 1e-9)
    return {f'eval/{split}/loss_per_nonpadding_target_token': totals['loss_sum'] / weights,
            f'eval/{split}/accuracy': totals['correct_sum'] / weights}

  return run
