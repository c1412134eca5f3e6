"""What the trainer (flanx.training.loop) does differently for a PEFT run, behind calls that every run makes."""

from __future__ import annotations

from typing import Any, Callable

from flanx.model import peft
from flanx.model.peft import frozen_base as frozen_base_lib

PyTree = Any


def check_settings(config: Any, initial_checkpoint_path: str | None, initial_adapter_path: str | None,
                   restore_optimizer_state: bool) -> None:
  """Refuses train() settings a PEFT run (or a full run) cannot use, before any work."""
  from flanx.training import run_checks, start_step  # pylint: disable=g-import-not-at-top
  method = peft.method(config)
  if initial_adapter_path and (method is peft.NO_PEFT or not initial_checkpoint_path):
    raise run_checks.RunConfigError(
        f'train.initial_adapter_path={initial_adapter_path!r} continues a peft adapter: it needs PEFT = the '
        'adapter\'s method (e.g. \'lora\') and INITIAL_CHECKPOINT_PATH = the base the adapter was trained on (its '
        'base_model_name_or_path)')
  if restore_optimizer_state and method is not peft.NO_PEFT:
    raise start_step.StartStepError('train.restore_optimizer_state=True restores a t5x optimizer state of the full '
                                    'params; a PEFT run trains adapters only (leave it False)')


def frozen_base(config: Any, initial_checkpoint_path: str | None, seed: int, shardings: Any) -> PyTree:
  """A PEFT run's frozen base on the mesh in its storage dtype (None for a full run)."""
  if not peft.is_peft(config):
    return None
  return frozen_base_lib.load(config, initial_checkpoint_path, seed, shardings.frozen, cast=True)


def initial_params(config: Any, initial_checkpoint_path: str, initial_adapter_path: str | None, seed: int,
                   shardings: Any, log: Callable[[str], None]) -> PyTree:
  """The whole model at a fresh start on a pretrained base: fresh trained params (or a peft folder's) on it."""
  from flanx.training import steps  # pylint: disable=g-import-not-at-top
  method = peft.method(config)
  if initial_adapter_path:
    trained = _read_adapter(initial_adapter_path, config, shardings)
    log(f'{method.describe()} read from {initial_adapter_path}.')
  else:
    trained = steps.init_adapters(config, seed, shardings)
  params = peft.combine(trained, frozen_base_lib.load(config, initial_checkpoint_path, seed, shardings.frozen))
  log(f'{method.describe()} on the frozen base {initial_checkpoint_path}.')
  return params


def init_from_base(params: PyTree, config: Any, seed: int, vocabulary: Any, shardings: Any,
                   initial_adapter_path: str | None = None) -> PyTree:
  """`params` with the method's base-derived start (prompt tuning: rows of the token embedding), on the mesh;
  unchanged for a full run or trained params read from a peft folder."""
  import jax  # pylint: disable=g-import-not-at-top
  method = peft.method(config)
  if method is peft.NO_PEFT or initial_adapter_path:
    return params
  encode = None if vocabulary is None else vocabulary.encode
  return jax.device_put(method.init_from_base(params, seed, encode), shardings.model_params)


def _read_adapter(folder: str, config: Any, shardings: Any) -> PyTree:
  """A peft folder's trained params on the mesh; they must be what this run's PEFT settings train."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.interop import peft_adapter  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import run_checks  # pylint: disable=g-import-not-at-top
  trained, read = peft_adapter.read_adapter(folder, config)
  expected = peft.split_trainable(network.abstract_params(config))[0]
  got = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), trained)
  try:
    if type(read) is not type(peft.method(config)):
      raise ValueError(f'{folder}: a {read.peft_type} adapter; this run trains {peft.method(config).peft_type} '
                       f'(set PEFT = {read.name!r})')
    peft.method(config).check_same_as(read, folder)
    if jax.tree.structure(got) != jax.tree.structure(expected) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected))):
      raise ValueError(f'{folder}: its tensors do not have the shapes of this model\'s {read.name} params')
  except ValueError as e:
    raise run_checks.RunConfigError(str(e)) from e
  return jax.device_put(trained, shardings.params)
