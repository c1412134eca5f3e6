"""Orbax checkpoints of a run: MODEL_DIR/checkpoint_<step>/{params,opt_state,meta} plus the data position.

Orbax writes each step into a temporary folder and renames it when complete, so a crash (or kill -9) mid-save
never leaves a visible half-written checkpoint; the next start resumes from the newest complete one. The input
pipeline's position is written *before* the step's checkpoint is committed, so every visible checkpoint has it.
"""

from __future__ import annotations

import os
import re
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
    self._manager = ocp.CheckpointManager(_local_or_remote(model_dir), options=options, item_names=('params', 'opt_state', 'meta'))

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


def locate(path: str) -> tuple[str, str, int]:
  """(checkpoint_<step> folder, run folder, step) for a run folder (newest step) or one checkpoint folder."""
  import tensorflow as tf  # gfile: local or gs://
  path = path.rstrip('/')
  match = re.fullmatch(_PREFIX + r'_(\d+)', os.path.basename(path))
  if match:
    if not tf.io.gfile.exists(os.path.join(path, 'params')):
      raise FileNotFoundError(f'{path} is not a flanx checkpoint (no params/ inside)')
    return path, os.path.dirname(path), int(match.group(1))
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(f'{path} does not exist')
  steps = [int(m.group(1)) for name in tf.io.gfile.listdir(path)
           if (m := re.fullmatch(_PREFIX + r'_(\d+)/?', name))
           and tf.io.gfile.exists(os.path.join(path, name.rstrip('/'), 'params'))]
  if not steps:
    raise FileNotFoundError(f'no flanx checkpoint ({_PREFIX}_<step>/params) under {path}')
  return os.path.join(path, f'{_PREFIX}_{max(steps)}'), path, max(steps)


def is_flanx_checkpoint(path: str) -> bool:
  """Whether `path` is a flanx run folder or checkpoint folder (as opposed to an HF or t5x one)."""
  try:
    locate(path)
  except FileNotFoundError:
    return False
  return True


def _local_or_remote(path: str) -> str:
  return os.path.abspath(path) if '://' not in path else path


def restore_params(path: str, target: PyTree = None, *, device: jax.Device | None = None) -> PyTree:
  """Params of a flanx run (newest step) or checkpoint folder, onto the shardings `target` carries.

  `target`: the params' ShapeDtypeStructs with shardings (steps.with_shardings), or None to restore every array
  whole onto `device` (default: the first local device; the CPU for export), whatever mesh wrote it.
  """
  item = _local_or_remote(os.path.join(locate(path)[0], 'params'))
  with ocp.StandardCheckpointer() as checkpointer:
    if target is None:
      one_device = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
      metadata = checkpointer.metadata(item)
      tree = getattr(metadata, 'item_metadata', metadata)
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), tree)
    return checkpointer.restore(item, target)


def write_params_checkpoint(run_dir: str, step: int, params: PyTree, meta: dict) -> None:
  """A params-only checkpoint RUN/checkpoint_<step>/{params, meta} (e.g. an import), written synchronously."""
  options = ocp.CheckpointManagerOptions(step_prefix=_PREFIX, create=True, enable_async_checkpointing=False)
  with ocp.CheckpointManager(_local_or_remote(run_dir), options=options, item_names=('params', 'meta')) as manager:
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()
