"""One set-up of a run from its gin values, shared by every command that builds one.

- `model_config`: the model with the run's PEFT method applied (the macro `PEFT = '<method>'`, bound to the
  `peft` argument of train, evaluate and infer; export reads the same binding through `bound_model_config`). Every
  command takes its model from here, so the same `PEFT` flag selects the same model on train, eval, infer, export
  and their compile-only checks.
- `build_train`: from train()'s arguments, the checks (arguments, task), the optimizer over the trained part, the
  mesh and axis rules, the batch checks, the shardings and the loss config; the TrainSetup it returns makes the
  jitted train step, the abstract state and the abstract batch. The trainer (flanx.training.loop) and its
  compile-only check (flanx.training.aot) both call it: the check passes its TPU devices, host count and memory
  levers, and lowers exactly the step the run runs.
- `build_inference`: the params-only shardings and the jitted predict/score functions of InferenceModel (eval,
  infer, the trainer's generation eval), and of the compile-only check of eval and infer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax

from flanx import gin_config
from flanx.model import peft as peft_lib
from flanx.model.config import T5Config
from flanx.training import data, partitioning, run_checks, schedules, start_step, step_cache, steps
from flanx.training.optimizer import Optimizer


def model_config(config: T5Config | None = None, peft: str | None = None, remat: str | None = None) -> T5Config:
  """The run's model: `config` (default: T5Config() as gin binds it) with the PEFT method `peft` (None, or a
  flanx.model.peft.METHODS name, with that method's gin-bound settings); `remat` is the compile-only check's lever."""
  config = peft_lib.configure(config or T5Config(), peft)
  return config if remat is None else config.replace(remat=remat)


def bound_model_config(config: T5Config | None = None) -> T5Config:
  """The model of the parsed gin config (export): `config`, else the model_config bound to train, evaluate or
  infer, with the PEFT method bound to their `peft` (the PEFT macro of the run gins and of a recorded config), else
  the PEFT macro itself (model gin files alone bind no `peft`)."""
  peft = gin_config.run_value('peft')
  return model_config(config or gin_config.run_value('model_config'),
                      gin_config.macro_value('PEFT') if peft is None else peft)


def mesh_and_rules(devices: Sequence[Any] | None = None, model_axis: int | None = None, fsdp: bool | None = None
                   ) -> tuple[jax.sharding.Mesh, tuple]:
  """The ('data', 'model') mesh and logical-axis rules gin configures (make_mesh, axis_rules), on `devices`
  (default: all of this process's view), with a compile-only lever's `model_axis` / `fsdp` instead of gin's."""
  mesh_options = {'devices': devices} if devices is not None else {}
  if model_axis is not None:
    mesh_options['model'] = model_axis
  rules = partitioning.axis_rules() if fsdp is None else partitioning.axis_rules(fsdp=fsdp)
  return partitioning.make_mesh(**mesh_options), rules


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """What a training run compiles, from train()'s (checked) arguments."""
  arguments: Mapping[str, Any]
  config: T5Config
  schedule: Callable[[Any], Any]  # the learning rate at an absolute train step
  optimizer: Optimizer  # over the trained part; its count is the train step (no schedule offset)
  shardings: steps.Shardings
  loss_config: steps.LossConfig

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return self.shardings.mesh

  def make_optimizer(self, schedule_offset: int = 0) -> Optimizer:
    """The optimizer, its schedule seeing the absolute step (a fresh optimizer's count lags it by the offset)."""
    if not schedule_offset:
      return self.optimizer
    return steps.make_optimizer(self.config, self.arguments['optimizer'],
                                start_step.shifted_schedule(self.schedule, schedule_offset))

  def train_step(self, optimizer: Optimizer | None = None, log: Callable[[str], None] | None = None) -> Callable:
    """The jitted `step(state, batch) -> (state, metrics)` (steps.make_train_step) with `optimizer` (default: ours).
    With `log` (the trainer), its traced program is kept in the compile cache folder across starts (step_cache)."""
    a = self.arguments
    make = steps.make_train_step if log is None else functools.partial(step_cache.make_train_step, log=log)
    return make(self.config, optimizer or self.optimizer, self.shardings, self.loss_config, a['num_microbatches'],
                dropout_seed=a['seed'], inject_nan_at_step=a['inject_nan_at_step'])

  def abstract_state(self) -> steps.TrainState:
    """The step's state argument as sharded ShapeDtypeStructs (a PEFT run's frozen base included)."""
    return steps.abstract_state(self.config, self.optimizer, self.shardings, with_frozen=True)

  def abstract_batch(self) -> dict:
    """The step's batch argument as sharded ShapeDtypeStructs (what the input pipeline yields)."""
    from flanx.training import aot  # pylint: disable=g-import-not-at-top  (aot is light: no jax at import)
    a = self.arguments
    return aot.abstract_batch(a['batch_size'], a['task_feature_lengths'], a['pack'], self.shardings.batch)

  def run_signature(self) -> dict[str, Any]:
    """The settings a checkpoint of this run resumes only with (run_checks), a PEFT run's base included."""
    a = self.arguments
    signature = run_checks.run_signature(self.config, a['batch_size'], a['task_feature_lengths'],
                                         a['mixture_or_task_name'], a['pack'])
    signature.update(peft_lib.resume_signature(self.config, a['initial_checkpoint_path']))
    return signature


def build_train(arguments: Mapping[str, Any], *, devices: Sequence[Any] | None = None, hosts: int | None = None,
                remat: str | None = None, model_axis: int | None = None, fsdp: bool | None = None) -> TrainSetup:
  """Checks train()'s `arguments` (and its task, importing MIXTURE_OR_TASK_MODULE) and builds the run on `devices`
  of `hosts` processes (default: this job's). `remat`, `model_axis`, `fsdp`: the compile-only check's levers."""
  a = dict(arguments)
  config = model_config(a['model_config'], a['peft'], remat)
  run_checks.check_args(a, run_checks.TRAIN_ARG_RULES)
  data.import_task_modules(a['mixture_or_task_module'])
  run_checks.check_task_name(a['mixture_or_task_name'])
  schedule = a['learning_rate_schedule'] or schedules.constant()
  optimizer = steps.make_optimizer(config, a['optimizer'], schedule)  # for shapes and shardings too
  mesh, rules = mesh_and_rules(devices, model_axis, fsdp)
  run_checks.check_batch_fits(a['batch_size'], a['num_microbatches'], mesh.shape['data'],
                              jax.process_count() if hosts is None else hosts)
  shardings = steps.make_shardings(config, optimizer, mesh, rules)
  loss_config = steps.LossConfig(a['z_loss'], a['label_smoothing'], a['loss_normalizing_factor'])
  return TrainSetup(a, config, schedule, optimizer, shardings, loss_config)


@dataclasses.dataclass(frozen=True)
class InferenceSetup:
  """A model's params-only shardings and its jitted decode and teacher-forced scoring."""
  config: T5Config
  shardings: steps.Shardings
  predict: Callable  # predict.make_predict_fn: (params, encoder tokens, batch index, prompt) -> (tokens, scores)
  score: Callable  # steps.make_eval_step(per_example=True): (params, batch) -> {loss, num_correct, weight_sum}

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return self.shardings.mesh


def build_inference(config: T5Config, decode_options: Mapping[str, Any], *, mesh: jax.sharding.Mesh | None = None,
                    shardings: steps.Shardings | None = None, devices: Sequence[Any] | None = None,
                    model_axis: int | None = None, fsdp: bool | None = None) -> InferenceSetup:
  """Inference of `config`: on `shardings` (e.g. the trainer's), else params-only shardings on `mesh` (default: the
  gin-configured mesh on `devices`, with the compile-only check's levers `model_axis` / `fsdp`)."""
  from flanx.inference import predict  # pylint: disable=g-import-not-at-top
  if shardings is None:
    mesh, rules = mesh_and_rules(devices, model_axis, fsdp) if mesh is None else (mesh, partitioning.axis_rules())
    shardings = steps.make_shardings(config, None, mesh, rules)  # params only: no optimizer state
  return InferenceSetup(config, shardings,
                        predict.make_predict_fn(config, partitioning.replicated(shardings.mesh), **decode_options),
                        steps.make_eval_step(config, shardings, per_example=True))
