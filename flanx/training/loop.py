"""The training loop behind `python -m flanx.train` (gin-configurable `train`): set up, restore, loop, save.

Restarting the same command resumes from the newest checkpoint in MODEL_DIR with params, optimizer state,
step and data position restored; dropout keys derive from (seed, step), so a resumed run is bitwise identical
to an uninterrupted one on CPU. SIGTERM checkpoints and exits 0; a non-finite loss stops the run (exit 1)
with the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from typing import Any, Callable, Mapping

import gin
import jax
import numpy as np

from flanx import gin_config
from flanx.interop import curves, load_params
from flanx.model import peft as peft_lib
from flanx.model.peft import training as peft_run
from flanx.model.config import T5Config
from flanx.training import checkpoints, data, data_fingerprint, data_layout, partitioning, run_checks, run_lease, runtime
from flanx.training import compile_cache, goodput, inference_eval, profiling, run_folder, start_step, steps, stop_signal, train_metrics
from flanx.training import run_builder, step_cache
from flanx.training.checkpoint_meta import CheckpointMeta
from flanx.training.metrics_writer import MetricsWriter
from flanx.training.optimizer import Optimizer


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/inf; the run stopped without saving the bad state."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """What the loop reads: the task, its lengths and batch, and how the pipeline is built."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  pack: bool = True
  shuffle: bool = True
  seed: int = 42
  use_cached: bool = False
  prompt_tokens: int = 0  # prompt tuning: placeholders before every example's inputs

  def dataset(self, split: str, **kwargs):
    """This host's batches of `split` (see data.get_dataset)."""
    options = {'shuffle': self.shuffle, 'pack': self.pack, 'seed': self.seed, 'use_cached': self.use_cached,
               'prompt_tokens': self.prompt_tokens, **kwargs}
    return data.get_dataset(self.mixture_or_task_name, self.task_feature_lengths, split, self.batch_size, **options)


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
          optimizer: Callable[..., Optimizer] | None = None,
          initial_checkpoint_path: str | None = None,
          relative_steps: int | None = None,
          continue_step: bool | None = None,
          restore_optimizer_state: bool = False,
          checkpoint_period: int = 1000,
          keep_checkpoints: int | None = None,
          keep_best: Any = None,
          async_checkpointing: bool = True,
          eval_period: int = 0,
          eval_split: str = 'validation',
          eval_batches: int | None = None,
          inference_eval: bool = True,
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
          restore_data: bool = True,
          already_done_ok: bool = False,
          take_over_stale_lease: bool = False,
          peft: str | None = None,
          initial_adapter_path: str | None = None,
          truncation_examples: int = 1000,
          profile_steps: tuple[int, ...] | None = None,
          run_name: str = 'train') -> dict:
  """Trains (or resumes) a model on a seqio task/mixture and returns the final metrics.

  `optimizer` is a factory `(learning_rate=schedule, param_axes=axes) -> Optimizer` (default: t5x's Adafactor).
  `peft` (gin macro PEFT: 'lora', 'prompt', 'prefix' or 'ia3', flanx.model.peft) trains that method's params on a
  frozen base: only they and their optimizer state are in the checkpoints, which name the base
  (INITIAL_CHECKPOINT_PATH, or the seed); a resume on another base or with other PEFT settings is refused.
  Steps follow t5x (flanx.training.start_step): from a t5x initial checkpoint the step continues from the
  checkpoint's and TRAIN_STEPS is absolute (`continue_step`, `relative_steps`); `restore_optimizer_state` also
  continues its Adafactor state (default: fresh).
  Before any work the settings are checked, MODEL_DIR's lease taken (`take_over_stale_lease`: replace the lease of
  a run that stopped heart-beating) and the newest checkpoint's recorded settings compared with these; config.gin
  and the logs are written only once all of that passed. `restore_data=False` resumes without the saved data
  position (re-reading and skipping the batches used); `already_done_ok` accepts TRAIN_STEPS <= the restored step.
  `profile_steps=(start, count[, every])` traces those steps into MODEL_DIR/<run_name>/plugins/profile
  (flanx.training.profiling). Where the time goes is logged and kept in MODEL_DIR/goodput.json (goodput.py); JAX's
  persistent compilation cache is on, in MODEL_DIR/compile_cache unless compile_cache.directory says otherwise.
  """
  arguments = dict(locals())
  stop_signal.install()  # from here a SIGTERM means "stop cleanly" (the command line installs it even earlier)
  try:
    plan = _plan(arguments)
    tx = plan.optimizer(0)  # for shapes and shardings; rebuilt once the schedule offset is known
    shardings = plan.setup.shardings  # gin: make_mesh.data / make_mesh.model, axis_rules.fsdp
    run_folder.check_confined(model_dir)  # no link may lead a save, log or pruning outside MODEL_DIR
    folder = _RunFolder(model_dir, take_over_stale_lease)
  except BaseException:
    stop_signal.release_sigint()  # a start refused before any work gives Ctrl-C back (a notebook keeps it)
    raise
  ckpts = writer = None
  clock, cache = goodput.RunClock(), contextlib.ExitStack()  # cache: JAX's compile cache, and compiles under way
  try:
    cache_stats = cache.enter_context(compile_cache.enabled(model_dir))
    ckpts = checkpoints.RunCheckpoints(model_dir, keep=keep_checkpoints, async_save=async_checkpointing,
                                       keep_best=plan.keep_best)
    state, train_step, iterator, resumed, meta = _start(plan, ckpts, shardings, tx, cache)
    if runtime.PreemptionFlag().is_set():
      _log(f'{stop_signal.reason()} during setup: stopping cleanly before training, at step {int(state.step)} '
           '(nothing to save).')
      return {'step': int(state.step), 'status': 'preempted'}
    if runtime.is_first_host():
      gin_config.write_config(model_dir)  # only now: a start that failed its checks leaves the old one intact
    writer = MetricsWriter(model_dir, run_name, total_steps=plan.train_steps, progress=progress_bar,
                           resume_step=-1 if resumed is None else resumed)  # fresh: drop all earlier rows
    if resumed is None and truncation_examples:
      _report_truncation(writer, plan.settings, int(state.step), truncation_examples)
    ckpts.on_saved = lambda step, seconds: writer.log(f'Saved checkpoint_{step} ({seconds:.1f} s).')
    saver = _Saver(ckpts, iterator, meta, resumed, folder, clock)
    profiler = profiling.Profiler(profiling.parse_window(profile_steps, 'train.profile_steps'),
                                  f'{model_dir}/{run_name}', writer.log)
    clock.attach(model_dir, resumed is not None, int(state.step), plan.train_steps, writer.log, cache_stats)
    if isinstance(train_step, step_cache.CachedStep):
      train_step.log = writer.log  # (before: the first host's print, as the writer did not exist yet)
    with _step_context(shardings):
      result = _train_loop(plan, state, train_step, shardings, iterator, saver, writer, clock, profiler)
  finally:
    _shut_down(ckpts, writer, folder, clock, cache, failing=sys.exc_info()[1] is not None)
  curves.at_end_of_training(model_dir, _log)  # train_curves.png, checkpoints.png (first host)
  return result


def _shut_down(ckpts: checkpoints.RunCheckpoints | None, writer: MetricsWriter | None, folder: '_RunFolder',
               clock: goodput.RunClock, cache: contextlib.ExitStack, failing: bool) -> None:
  """Waits for the last save, closes the logs and gives the lease back, each whatever the others did. When the run
  is already `failing`, the error in flight stays the one reported (closing quietly, within seconds)."""
  first_error = None

  def wait_for_last_save():
    if ckpts is not None:
      with clock.part('checkpoint'):  # waits for the last save's background write
        ckpts.close()

  for step in (wait_for_last_save,
               clock.finish,  # logs where the time went (once the run started) and stops listening
               lambda: writer is not None and writer.close(after_error=failing or first_error is not None),
               cache.close, lambda: folder.release(started=writer is not None), stop_signal.release_sigint):
    try:
      step()
    except Exception as e:  # pylint: disable=broad-except
      first_error = first_error or e
  if first_error is not None and not failing:
    raise first_error


@dataclasses.dataclass(frozen=True)
class _Plan:
  """A run's checked settings: its set-up (run_builder: arguments, model, optimizer, shardings), the data, and
  where its steps start."""
  setup: run_builder.TrainSetup
  settings: DataSettings
  start: start_step.StartPlan
  keep_best: Any = None  # keep_best.KeepBest or None

  @property
  def arguments(self) -> Mapping[str, Any]:
    return self.setup.arguments

  @property
  def config(self) -> T5Config:
    return self.setup.config

  @property
  def schedule(self) -> Callable[[int], Any]:
    return self.setup.schedule

  @property
  def train_steps(self) -> int:
    return self.start.train_steps  # absolute

  def optimizer(self, schedule_offset: int) -> Optimizer:
    """The optimizer, its schedule seeing the absolute step (a fresh optimizer's count lags it by the offset)."""
    return self.setup.make_optimizer(schedule_offset)


def _plan(a: Mapping[str, Any]) -> _Plan:
  """Checks train()'s arguments, the task and the PEFT/step settings and builds the run (mesh, shardings) before
  anything is read or written."""
  setup = run_builder.build_train(a)  # the same set-up as the compile-only check's (aot.check_train)
  config = setup.config
  if a['use_cached_tasks']:
    data.check_cached(a['mixture_or_task_name'], 'train')  # USE_CACHED_TASKS: every task's cache exists, now
  settings = DataSettings(a['mixture_or_task_name'], a['task_feature_lengths'], a['batch_size'], a['pack'],
                          a['shuffle'], a['data_seed'], a['use_cached_tasks'], peft_lib.prompt_length(config))
  start = start_step.plan_start(a['initial_checkpoint_path'], a['train_steps'], a['relative_steps'],
                                a['continue_step'], a['restore_optimizer_state'],
                                gin_config.binding_source('train', 'train_steps'))
  peft_run.check_settings(config, a['initial_checkpoint_path'], a['initial_adapter_path'], start.restore_optimizer_state)
  return _Plan(setup, settings, start, run_checks.check_keep_best(a))


def _start(plan: _Plan, ckpts: checkpoints.RunCheckpoints, shardings: steps.Shardings, tx: Optimizer,
           compiles: contextlib.ExitStack
           ) -> tuple[steps.TrainState, Callable, data.CheckpointableIterator, int | None, CheckpointMeta]:
  """Restores or initialises the state: (state, train step with the schedule offset of the run, positioned data
  iterator, step resumed from or None, checkpoint metadata to save). On a restart the step's stored program is
  read and its executable loaded in the background meanwhile (step_cache.CachedStep.compile_ahead); closing
  `compiles` waits for that (a start that stops before its first step)."""
  a, config = plan.arguments, plan.config
  signature = plan.setup.run_signature()  # PEFT: with the frozen base
  sources = data_fingerprint.fingerprint(a['mixture_or_task_name'])
  _check_existing_run(ckpts, signature, plan.train_steps, a['restore_data'], a['already_done_ok'], sources)
  latest = ckpts.latest_step()
  offset = ckpts.read_meta(latest).schedule_offset if latest is not None else plan.start.schedule_offset
  train_step = _train_step(plan, offset, tx, compiles)
  state, batches_read, resumed = _restore_or_init(ckpts, config, tx, shardings, a['initial_checkpoint_path'],
                                                  a['seed'], _log, plan.start,
                                                  _prompt_vocabulary(config, a['mixture_or_task_name']),
                                                  a['initial_adapter_path'])
  if resumed is not None and resumed != latest and ckpts.read_meta(resumed).schedule_offset != offset:
    offset = ckpts.read_meta(resumed).schedule_offset  # an older checkpoint, with another offset (rare)
    train_step = _train_step(plan, offset, tx)
  layout = data_layout.data_layout(shardings.mesh, a['batch_size'])  # a replica set's hosts read the same rows
  iterator = data.CheckpointableIterator(lambda: plan.settings.dataset('train', layout=layout), log=_log)
  if batches_read:
    ckpts.restore_data_position(iterator, resumed, batches_read, use_saved=a['restore_data'])
  meta = CheckpointMeta(seed=a['seed'], data_seed=a['data_seed'], run=signature, config_gin=gin.config_str(),
                        schedule_offset=offset, peft=a['peft'], base=a['initial_checkpoint_path'],
                        initial_adapter=a['initial_adapter_path'], data_sources=sources)
  return state, train_step, iterator, resumed, meta


def _train_step(plan: _Plan, schedule_offset: int, tx: Optimizer, compiles: contextlib.ExitStack | None = None
                ) -> Callable:
  """The jitted train step of the run whose schedule starts at `schedule_offset` (as the compile-only check lowers
  it; its traced program kept across starts). With `compiles`, a stored program starts compiling in the background
  (closing `compiles` waits for it)."""
  step = plan.setup.train_step(plan.optimizer(schedule_offset) if schedule_offset else tx, log=_log)
  if compiles is not None and isinstance(step, step_cache.CachedStep):
    step.compile_ahead(plan.setup.abstract_state(), plan.setup.abstract_batch(),
                       lambda: _step_context(plan.setup.shardings))
    compiles.callback(step.wait)
  return step


def _step_context(shardings: steps.Shardings) -> contextlib.ExitStack:
  """The mesh and activation rules the step is traced and run under (thread-local: entered by each thread)."""
  stack = contextlib.ExitStack()
  stack.enter_context(shardings.mesh)
  stack.enter_context(steps.activation_rules(shardings))
  return stack


def _evaluates(eval_period: int, step: int, train_steps: int) -> bool:
  """Whether an eval step falls in (step, train_steps]: only then is the eval set up (reading the eval split; a
  short run on a small file may have none, and a run that never evaluates must not need one)."""
  return bool(eval_period) and (step // eval_period + 1) * eval_period <= train_steps


def _train_loop(plan: _Plan, state: steps.TrainState, train_step: Callable, shardings: steps.Shardings,
                iterator: data.CheckpointableIterator, saver: '_Saver', writer: MetricsWriter,
                clock: goodput.RunClock, profiler: profiling.Profiler) -> dict:
  """Sets up the eval, then loops until TRAIN_STEPS or SIGTERM (the first step compiles, or takes the compile
  started ahead)."""
  a, config = plan.arguments, plan.config
  eval_fn = (inference_eval.make_eval(_make_eval(config, shardings, plan.settings, a['eval_split'], a['eval_batches']),
                                      inference_eval.from_arguments(config, shardings, a), writer.log)
             if _evaluates(a['eval_period'], int(state.step), plan.train_steps) else None)
  lengths = (plan.settings.task_feature_lengths['inputs'], plan.settings.task_feature_lengths['targets'])
  timing = train_metrics.IntervalMetrics(config, plan.settings.batch_size, lengths, plan.schedule)
  periods = {'train_steps': plan.train_steps, 'log_every': a['log_every'], 'eval_period': a['eval_period'],
             'checkpoint_period': a['checkpoint_period']}
  return _loop(state, train_step, iterator, shardings, eval_fn, saver, writer, timing, periods, a['model_dir'], clock,
               profiler)


def _prompt_vocabulary(config: T5Config, mixture_or_task_name: str) -> Any:
  """The task's input vocabulary when the PEFT method starts from a text (PromptConfig.init='text'), else None."""
  if not peft_lib.method(config).needs_vocabulary():
    return None
  import seqio  # pylint: disable=g-import-not-at-top
  return seqio.get_mixture_or_task(mixture_or_task_name).output_features['inputs'].vocabulary


def _report_truncation(writer: MetricsWriter, settings: DataSettings, step: int, examples: int) -> None:
  """Logs (and writes to TensorBoard) how much of each task TASK_FEATURE_LENGTHS cut (data.truncation_report)."""
  lengths = dict(settings.task_feature_lengths)
  if settings.prompt_tokens:  # prompt tuning: the task's inputs are that much shorter (data.get_dataset)
    lengths['inputs'] -= settings.prompt_tokens
  lines, scalars = data.truncation_report(settings.mixture_or_task_name, lengths, 'train', examples)
  for line in lines:
    writer.log(line)
  if scalars:
    writer.write(step, scalars)


def _log(message: str) -> None:
  if runtime.is_first_host():
    print(message, flush=True)


class _RunFolder:
  """MODEL_DIR for one start: its lease (held by the first host), and the folder's removal when a start that
  created it stops before training (nothing may remain from a start that failed its checks)."""

  def __init__(self, model_dir: str, take_over_stale: bool):
    import tensorflow as tf  # gfile: local or gs://
    self.model_dir, self.existed, self.lease = model_dir, tf.io.gfile.exists(model_dir), None
    refusal = ''
    if runtime.is_first_host():
      try:
        self.lease = run_lease.RunLease(model_dir, takeover_hint='--gin.train.take_over_stale_lease=True')
        self.lease.acquire(take_over_stale)
      except run_lease.LeaseHeldError as e:
        refusal, self.lease = str(e), None
      if self.lease is not None and self.lease.took_over is not None:
        _log(f'Took over the lease of {model_dir} from {self.lease.took_over.describe()}.')
    if jax.process_count() > 1:  # every host stops if the first could not take the lease
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      refused = multihost_utils.broadcast_one_to_all(np.int32(bool(refusal)))
      refusal = refusal or (f'{model_dir} is in use (see the first host\'s message)' if int(refused) else '')
    if refusal:
      raise run_lease.LeaseHeldError(refusal)

  def lost(self) -> bool:
    """Whether another process took the lease over while this run held it."""
    return self.lease is not None and self.lease.lost()

  def release(self, started: bool) -> None:
    """Gives the lease back; removes MODEL_DIR if this start created it and left it empty."""
    import tensorflow as tf  # gfile: local or gs://
    if self.lease is not None:
      self.lease.release()
      self.lease = None
    if not started and not self.existed and runtime.is_first_host() and tf.io.gfile.isdir(self.model_dir):
      if {name.rstrip('/') for name in tf.io.gfile.listdir(self.model_dir)} <= {compile_cache.FOLDER}:
        tf.io.gfile.rmtree(self.model_dir)  # (programs compiled by a start that failed go with it)


def _check_existing_run(ckpts: checkpoints.RunCheckpoints, signature: Mapping[str, Any], train_steps: int,
                        restore_data: bool, already_done_ok: bool, sources: Mapping[str, Any] | None = None) -> None:
  """Before any restore: the newest checkpoint's settings must match this run's, and steps must remain."""
  latest = ckpts.latest_step()
  if latest is None:
    return
  where = f'{ckpts.model_dir}/checkpoint_{latest}'
  meta = ckpts.read_meta(latest)
  run_checks.check_resumable(meta.run, signature, where, restore_data)
  data_fingerprint.check_unchanged(meta.data_sources, sources or {}, where, restore_data)
  step = latest if meta.step is None else meta.step
  if train_steps <= step and not already_done_ok:
    key = gin_config.binding_source('train', 'train_steps')
    raise run_checks.RunConfigError(
        f'{key} = {train_steps}, but {ckpts.model_dir} is already at step {step} ({where}): nothing to train. '
        'Raise TRAIN_STEPS to continue, or pass --gin.train.already_done_ok=True to accept the finished run.')


def _restore_or_init(ckpts: checkpoints.RunCheckpoints, config: T5Config, tx: Optimizer,
                     shardings: steps.Shardings, initial_checkpoint_path: str | None, seed: int,
                     log: Callable[[str], None], start: start_step.StartPlan | None = None,
                     prompt_vocabulary: Any = None, initial_adapter_path: str | None = None
                     ) -> tuple[steps.TrainState, int, int | None]:
  """(state, batches already read, step resumed from or None): the newest intact checkpoint, else a fresh start
  (at `start.step`, with the initial checkpoint's optimizer state when `start.restore_optimizer_state`)."""
  if ckpts.latest_step() is not None:
    target = steps.abstract_state(config, tx, shardings)
    latest, params, opt_state, meta = ckpts.restore_newest_intact(target.params, target.opt_state, log)
    step = latest if meta.step is None else meta.step
    log(f'Resuming from {ckpts.model_dir}/checkpoint_{latest} (step {step}).')
    state = steps.TrainState(step=jax.device_put(np.int32(step), target.step.sharding), params=params,
                             opt_state=opt_state, frozen=peft_run.frozen_base(config, initial_checkpoint_path, seed, shardings))
    return state, meta.batches_read, latest
  start = start or start_step.StartPlan(0, 0, False)
  if initial_checkpoint_path and peft_lib.is_peft(config):  # pretrained base, fresh (or read) adapters
    params = peft_run.initial_params(config, initial_checkpoint_path, initial_adapter_path, seed, shardings, log)
  elif initial_checkpoint_path:
    params = load_params.load_sharded_params(initial_checkpoint_path, config, shardings.params)
    continuing = f', continuing at step {start.step}' if start.step else ''
    log(f'Initialised from {initial_checkpoint_path}{continuing}.')
    if start.restore_optimizer_state:
      opt_state = start_step.restore_optimizer_state(initial_checkpoint_path, config, tx, shardings.opt_state)
      log(f'Restored its optimizer state (count {start.step}).')
      step = jax.device_put(np.int32(start.step), partitioning.replicated(shardings.mesh))
      return steps.TrainState(step=step, params=params, opt_state=opt_state), 0, None
  else:
    params = steps.init_params(config, seed, shardings)
  params = peft_run.init_from_base(params, config, seed, prompt_vocabulary, shardings, initial_adapter_path)
  return steps.new_state(params, tx, shardings, step=start.step, base_dtype=peft_lib.base_dtype(config)), 0, None


class _Saver:
  """Saves a step once (periodic, final and SIGTERM saves may coincide) with the data position and metadata."""

  def __init__(self, ckpts: checkpoints.RunCheckpoints, iterator: data.CheckpointableIterator, meta: CheckpointMeta,
               last_saved: int | None, folder: _RunFolder, clock: goodput.RunClock):
    self.ckpts, self.iterator, self.meta, self.last_saved, self.folder = ckpts, iterator, meta, last_saved, folder
    self.clock = clock

  def check(self) -> None:
    """Every step: a failed background save, or a lease taken over by another process, stops the run now."""
    with self.clock.part('checkpoint'):  # a finished background save is waited for (and reported) here
      self.ckpts.check_for_errors()
    if self.folder.lost():
      raise run_lease.LeaseHeldError(f'another process took over the lease of {self.folder.model_dir}; this run '
                                     f'stopped without saving (last checkpoint: {self.last_good()}).')

  def save(self, state: steps.TrainState, step: int, eval_metrics: Mapping[str, float] | None = None) -> None:
    """`eval_metrics`: the in-training eval of this very step (keep-best ranks checkpoints by them)."""
    if self.last_saved != step:
      meta = self.meta.replace(step=step, batches_read=self.iterator.batches_read, eval_metrics={
          k: float(v) for k, v in eval_metrics.items() if not k.startswith('timing/')} if eval_metrics else None)
      with self.clock.part('checkpoint'):  # the blocking part: the write goes on in the background
        self.ckpts.save(step, state.params, state.opt_state, meta, self.iterator)
      self.last_saved = step

  def last_good(self) -> str:
    return f'checkpoint_{self.last_saved}' if self.last_saved is not None else 'none yet'


def _loop(state: steps.TrainState, train_step: Callable, iterator: data.CheckpointableIterator,
          shardings: steps.Shardings, eval_fn: Callable | None, saver: _Saver, writer: MetricsWriter,
          timing: train_metrics.IntervalMetrics, periods: Mapping[str, int], model_dir: str,
          clock: goodput.RunClock, profiler: profiling.Profiler = profiling.OFF) -> dict:
  """Steps until train_steps (or SIGTERM), logging, evaluating and checkpointing on their periods."""
  step, metrics, status, evaluated = int(state.step), {}, 'finished', {}
  preempted = runtime.PreemptionFlag().install()
  try:
    writer.advance(step)
    while step < periods['train_steps']:
      with clock.part('data_wait'):
        host_batch = next(iterator)
      # Dispatch is asynchronous, but this loop already waits for every step's loss (the NaN check below), so
      # dispatch -> loss on the host is the step's device time, measured without adding a synchronisation.
      with profiler.step(step), clock.part('device_step'):
        state, step_metrics = train_step(state, data.to_global(host_batch, shardings.batch))
        timing.add(host_batch, step_metrics, step + 1)
        loss = float(step_metrics['loss'])
      step += 1
      if not math.isfinite(loss):
        saver.ckpts.wait()
        raise NonFiniteLossError(f'non-finite loss ({loss}) at step {step}; stopped without saving. '
                                 f'Last good checkpoint in {model_dir}: {saver.last_good()}')
      saver.check()
      writer.advance()
      if step % periods['log_every'] == 0 or step == periods['train_steps']:
        metrics = {**timing.result(), **clock.interval(step)}  # t5x's names and normalisation over the interval
        writer.write(step, metrics)
      if eval_fn is not None and step % periods['eval_period'] == 0:
        with clock.part('eval'):
          evaluated = {step: eval_fn(state.model_params, step)}
        writer.write(step, evaluated[step])
      if step % periods['checkpoint_period'] == 0:
        saver.save(state, step, evaluated.get(step))
      if preempted.is_set():
        writer.log(f'{stop_signal.reason()}: saving checkpoint_{step} and exiting (rerun the same command to resume).')
        saver.save(state, step, evaluated.get(step))
        status = 'preempted'
        break
    else:
      saver.save(state, step, evaluated.get(step))
  finally:
    profiler.stop()
    preempted.uninstall()
    iterator.close()  # now, not at interpreter exit (a Python-generator source can stall it there)
  return {'step': step, 'status': status, **{k: float(v) for k, v in metrics.items()}}


def _make_eval(config: T5Config, shardings: steps.Shardings, settings: DataSettings, split: str,
               max_batches: int | None) -> Callable[[Any], dict[str, float]]:
  """Teacher-forced loss/accuracy over one pass of the eval split, batched as in training (packed)."""
  eval_step = steps.make_eval_step(config, shardings)
  layout = data_layout.data_layout(shardings.mesh, settings.batch_size)
  rows = layout.host_batch_size

  def run(params) -> dict[str, float]:
    ds = settings.dataset(split, shuffle=False, num_epochs=1, drop_remainder=False, layout=layout)
    batches = ds.as_numpy_iterator()
    if max_batches is not None:
      batches = (b for i, b in zip(range(max_batches), batches))
    outputs = (eval_step(params, data.to_global(data.pad_batch(b, rows)[0], shardings.batch)) for b in batches)
    return {f'eval/{split}/{k}': v for k, v in steps.teacher_forced_metrics(outputs).items()}

  return run
