"""The one loader of a PEFT run's frozen base, shared by the trainer, InferenceModel and export.

The base is what the run's INITIAL_CHECKPOINT_PATH names (a flanx checkpoint, a Hugging Face folder or a t5x
checkpoint; a checkpoint records it as its meta's `base`), else the base part of the PEFT model's initialisation from
the run's seed (what a fresh run without an initial checkpoint starts from).
The trainer refuses to resume on another base (flanx.training.run_checks), so training, inference and export all
read the same one.
"""

from __future__ import annotations

from typing import Any

from flanx.model import peft

PyTree = Any


def load(config: Any, source: str | None, seed: int, shardings: PyTree, cast: bool = False) -> PyTree:
  """The frozen base params of the PEFT model `config`, placed per `shardings` (a tree over the base's params);
  `cast` stores them in the method's base_dtype (training) instead of float32."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.interop import load_params  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  base = peft.base_config(config)
  if source:
    params = load_params.load_sharded_params(source, base, shardings)
  else:  # the base part of the PEFT model's own initialisation, as a fresh run starts (with scanned layers the
    # base model alone would draw other values once the method adds params inside a layer)
    init = lambda key: peft.split_trainable(network.init_params(config, key))[1]
    params = jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
  dtype = peft.base_dtype(config)
  if cast and dtype != 'float32':
    params = jax.jit(lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree), donate_argnums=0,
                     out_shardings=shardings)(params)  # on the step's shardings (as abstract_state says)
  return params


def load_model_params(checkpoint_path: str, config: Any, shardings: PyTree, frozen_shardings: PyTree) -> PyTree:
  """The whole model's params of a checkpoint: a PEFT run's trained params on the base its metadata names
  (`shardings` over the trained params, `frozen_shardings` over the base), or a full run's params."""
  from flanx.interop import load_params  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints, steps  # pylint: disable=g-import-not-at-top
  meta = checkpoints.read_meta(checkpoints.locate(checkpoint_path)[0]) if checkpoints.is_flanx_checkpoint(
      checkpoint_path) else None
  method = peft.method(config)
  if meta is not None and meta.peft in peft.METHODS and meta.peft != method.name:  # ('none' is no method)
    raise ValueError(f"{checkpoint_path} holds the trained params of a PEFT = {meta.peft!r} run, and this command's "
                     f"model has {method.name or 'no PEFT method'}: pass --gin.PEFT='{meta.peft}' with the run's "
                     f"{meta.peft} settings (or no model flags at all: the run's recorded config is read)")
  if method is peft.NO_PEFT:
    return load_params.load_sharded_params(checkpoint_path, config, shardings)
  trained, _ = peft.split_trainable(network.abstract_params(config))
  adapters = checkpoints.restore_params(checkpoint_path, steps.with_shardings(trained, shardings))
  return peft.combine(adapters, load(config, meta.base, meta.seed, frozen_shardings))
