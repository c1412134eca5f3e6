"""Orbax checkpoints of a run: MODEL_DIR/checkpoint_<step>/{params,opt_state,meta} plus the data position.

Orbax writes each step into a temporary folder and renames it when complete, so a crash (or kill -9) mid-save
never leaves a visible half-written checkpoint; the next start resumes from the newest complete one. The input
pipeline's position is written *before* the step's checkpoint is committed, so every visible checkpoint has it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any
_PREFIX = 'checkpoint'


def _data_state_prefix(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, 'data_state', f'{_PREFIX}_{step}', f'process_{jax.process_index()}')


class RunCheckpoints:
  """Saves/restores a run's train state and data position; keeps the newest `keep` checkpoints."""

  def __init__(self, model_dir: str, keep: int | None = 3, async_save: bool = True):
    self.model_dir = model_dir
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, step_prefix=_PREFIX, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(os.path.abspath(model_dir) if '://' not in model_dir else model_dir,
                                          options=options, item_names=('params', 'opt_state', 'meta'))

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, if any."""
    return self._manager.latest_step()

  def save(self, step: int, params: PyTree, opt_state: PyTree, meta: dict, data_iterator=None) -> None:
    """Starts an (async) save of `step`; the data position is written first, synchronously."""
    if data_iterator is not None:
      data_iterator.save(_data_state_prefix(self.model_dir, step))
    self._manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(meta)), force=True)
    self._prune_data_states(keep_from=min(self._manager.all_steps() + [step]))

  def _prune_data_states(self, keep_from: int) -> None:
    """Drops data positions of checkpoints orbax no longer keeps (older than the oldest kept step)."""
    import tensorflow as tf
    root = os.path.join(self.model_dir, 'data_state')
    for name in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(root) else []:
      name = name.rstrip('/')
      if name.startswith(_PREFIX + '_') and int(name.split('_')[-1]) < keep_from:
        tf.io.gfile.rmtree(os.path.join(root, name))

  def restore(self, step: int, abstract_params: PyTree, abstract_opt_state: PyTree) -> tuple[PyTree, PyTree, dict]:
    """Restores params, optimizer state (onto the shardings in the abstract trees) and metadata."""
    out = self._manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), opt_state=ocp.args.StandardRestore(abstract_opt_state),
        meta=ocp.args.JsonRestore()))
    return out['params'], out['opt_state'], out['meta']

  def data_state_prefix(self, step: int) -> str:
    """Where the data position of `step` was saved (may not exist for non-serializable pipelines)."""
    return _data_state_prefix(self.model_dir, step)

  def wait(self) -> None:
    """Blocks until pending async saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases resources."""
    self._manager.wait_until_finished()
    self._manager.close()


def restore_params(path: str, abstract_params: PyTree) -> PyTree:
  """Params from a flanx checkpoint (run folder: newest step; or one checkpoint_<step> folder) onto the
  shardings carried by `abstract_params`."""
  item = params_item_path(path)
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.abspath(item) if '://' not in item else item, abstract_params)


def params_item_path(path: str) -> str:
  """The `params` folder of a run folder's newest checkpoint, or of one checkpoint_<step> folder."""
  path = path.rstrip('/')
  if os.path.basename(path).startswith(_PREFIX + '_'):
    return os.path.join(path, 'params')
  manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(step_prefix=_PREFIX, read_only=True),
                                  item_names=('params', 'opt_state', 'meta'))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'no flanx checkpoint under {path}')
  return os.path.join(path, f'{_PREFIX}_{step}', 'params')


def restore_params_on_one_device(path: str, device: jax.Device | None = None) -> PyTree:
  """Params of a checkpoint written on any mesh/topology, restored whole onto one device (e.g. the CPU)."""
  item = params_item_path(path)
  item = os.path.abspath(item) if '://' not in item else item
  sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(item)
    tree = getattr(metadata, 'item_metadata', metadata)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)
    return checkpointer.restore(item, target)


def is_flanx_checkpoint(path: str) -> bool:
  """Whether `path` is a flanx run folder or checkpoint folder (as opposed to an HF or t5x one)."""
  import tensorflow as tf
  if tf.io.gfile.exists(os.path.join(path, 'params')):
    return True
  return any(name.rstrip('/').startswith(_PREFIX + '_') and tf.io.gfile.exists(os.path.join(path, name, 'params'))
             for name in (tf.io.gfile.listdir(path) if tf.io.gfile.isdir(path) else []))
