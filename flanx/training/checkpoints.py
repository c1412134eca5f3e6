"""Orbax checkpoints of a run: MODEL_DIR/checkpoint_<step>/{params,opt_state,meta} plus the data position.

Orbax writes each step into a temporary folder and renames it when complete, so a crash (or kill -9) mid-save
never leaves a visible half-written checkpoint; the next start resumes from the newest complete one. The input
pipeline's position is written *before* the step's checkpoint is committed, so every visible checkpoint has it.

Each checkpoint's meta records a checksum per array (flanx.training.checksums) and `checkpoint_version` 2,
verified whenever it is restored (resume, export, eval, infer, an initial checkpoint). Checksums are not
optional: a version-2 meta without them was damaged or edited, and an unversioned one (a flanx from before
checksums, or a meta edited to look like one) is read only with `checkpoint_checksums.required = False`
(export: --allow_unverified). A damaged newest checkpoint is moved to MODEL_DIR/damaged/ and the run resumes from the
previous intact one, loudly; with none intact it stops. A background save that fails (disk full) is reported
by `check_for_errors()` at the next step, not at the next save.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Callable

import gin
import jax
import orbax.checkpoint as ocp

from flanx import gin_config
from flanx.training import checksums, keep_best as keep_best_lib, run_folder, storage_callbacks
from flanx.training.checkpoint_meta import CheckpointMeta

PyTree = Any
_PREFIX = 'checkpoint'
VERSION = 2  # meta['checkpoint_version']: 2 = checksums of every array recorded; absent = a flanx before them


class CheckpointRestoreError(RuntimeError):
  """A checkpoint (or its data position) cannot be read; the message names the file and what to do."""


class ChecksumMismatchError(CheckpointRestoreError):
  """Restored arrays differ from the checksums recorded when the checkpoint was written (damaged files)."""


class UnverifiedCheckpointError(ChecksumMismatchError):
  """The checkpoint records no checksums, so its arrays cannot be verified."""


@gin.configurable
def checkpoint_checksums(required: bool = True) -> bool:
  """gin: `checkpoint_checksums.required = False` reads checkpoints written before flanx recorded checksums
  (no checkpoint_version in their meta) unverified. Those that say they have checksums always need them."""
  return required


class CheckpointWriteError(RuntimeError):
  """A (background) checkpoint save failed; the previous checkpoints are untouched."""


def _data_state_prefix(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, 'data_state', f'{_PREFIX}_{step}', f'process_{jax.process_index()}')


class RunCheckpoints:
  """Saves/restores a run's train state and data position; keeps the newest `keep` checkpoints (None: all), or,
  with `keep_best`, those the policy keeps (flanx.training.keep_best), applied after each save commits."""

  def __init__(self, model_dir: str, keep: int | None = None, async_save: bool = True,
               keep_best: keep_best_lib.KeepBest | None = None):
    self.model_dir, self.keep_best = model_dir, keep_best
    keep = None if keep_best is not None else keep
    # cleanup_tmp_directories: a save killed mid-write leaves checkpoint_<step>.orbax-checkpoint-tmp; the
    # run folder's lease guarantees no other writer owns it, so the next start removes it.
    # Pruning keeps the newest `keep` and any checkpoint a reader (export) pinned while it reads it.
    from orbax.checkpoint import checkpoint_managers  # pylint: disable=g-import-not-at-top
    from flanx.training import checkpoint_pins  # pylint: disable=g-import-not-at-top
    policy = None if keep is None else checkpoint_managers.AnyPreservationPolicy(
        [checkpoint_managers.LatestN(n=keep), checkpoint_pins.Pinned(model_dir)])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, step_prefix=_PREFIX, create=True,
                                           enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    self._pending: int | None = None  # step of the save that may still be running in the background
    self._pending_since = 0.0
    self.on_saved: Callable[[int, float], None] | None = None  # (step, seconds) once a save is complete
    self._failed = False  # a save failed: the run is stopping
    for name in _NOISY_LOGGERS:  # a failed save is reported once, by _wait
      logging.getLogger(name).addFilter(_QUIET_STORAGE_ERRORS)
    self._quieted = storage_callbacks.quiet()  # and so are its writer threads' late callbacks
    self._manager = ocp.CheckpointManager(_local_or_remote(model_dir), options=options, item_names=('params', 'opt_state', 'meta'))

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, if any."""
    return self._manager.latest_step()

  def save(self, step: int, params: PyTree, opt_state: PyTree, meta: CheckpointMeta | dict,
           data_iterator=None) -> None:
    """Starts an (async) save of `step` with per-array checksums; the data position is written first."""
    self._wait()  # orbax would wait for the previous save anyway; this way its failure gets a clear message
    started = time.perf_counter()
    meta = CheckpointMeta.of(meta).replace(checkpoint_version=VERSION, checksums={
        'params': checksums.tree_checksums(params), 'opt_state': checksums.tree_checksums(opt_state)})
    if data_iterator is not None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      try:
        data_iterator.save(_data_state_prefix(self.model_dir, step))
      except (OSError, tf.errors.OpError) as e:  # disk full: one line, and no partial position left behind
        self._failed = True
        error = run_folder.write_failed(os.path.join(self.model_dir, 'data_state', f'{_PREFIX}_{step}'), e,
                                        self._stopped(step))  # the free space when it failed, then clean up
        self._drop_data_state(step)
        raise error from e
    try:
      self._manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
          meta=ocp.args.JsonSave(meta.to_json())), force=True)
    except Exception as e:  # pylint: disable=broad-except  (the synchronous part of the save)
      self._failed = True
      error = run_folder.write_failed(f'{self.model_dir}/{_PREFIX}_{step}', e, self._stopped(step))
      self._drop_data_state(step)  # written before the failed save: no position without its checkpoint
      raise error from e
    self._pending, self._pending_since = step, started
    self._prune_data_states(keep_from=min(self._manager.all_steps() + [step]))

  def _drop_data_state(self, step: int | None) -> None:
    """Deletes the data position of a save that failed (best effort: the storage may be failing)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    folder = os.path.join(self.model_dir, 'data_state', f'{_PREFIX}_{step}')
    if step is None or jax.process_index() != 0 or step in self._manager.all_steps():
      return
    try:
      if tf.io.gfile.isdir(folder):
        tf.io.gfile.rmtree(folder)
    except (OSError, tf.errors.OpError):
      pass

  def _prune_data_states(self, keep_from: int) -> None:
    """Drops data positions of checkpoints orbax no longer keeps (older than the oldest kept step)."""
    import tensorflow as tf
    root = os.path.join(self.model_dir, 'data_state')
    for name in tf.io.gfile.listdir(root) if tf.io.gfile.isdir(root) else []:
      name = name.rstrip('/')
      if name.startswith(_PREFIX + '_') and int(name.split('_')[-1]) < keep_from:
        tf.io.gfile.rmtree(os.path.join(root, name))

  def check_for_errors(self) -> None:
    """Raises CheckpointWriteError at once if a background save failed (cheap: call it every step)."""
    if self._pending is None or self._manager.is_saving_in_progress():
      return
    self._wait()

  def _wait(self) -> None:
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._failed = True
      error = run_folder.write_failed(f'{self.model_dir}/{_PREFIX}_{step}', e, self._stopped(step))
      self._drop_data_state(step)  # written before the failed save: no position without its checkpoint
      raise error from e
    if step is not None and self.on_saved is not None:
      self.on_saved(step, time.perf_counter() - self._pending_since)
    if step is not None and self.keep_best is not None:
      self._keep_best()

  def _stopped(self, failed_step: int | None) -> str:
    """What a failed save leaves: the newest intact checkpoint, and how to go on."""
    kept = [s for s in self._manager.all_steps() if s != failed_step]
    previous = f'{self.model_dir}/{_PREFIX}_{max(kept)}' if kept else 'none'
    return (f'Training stopped; the newest intact checkpoint is {previous}. Free space (or fix the storage error) '
            'and rerun the same command to resume from it.')

  def _keep_best(self) -> None:
    """Deletes the checkpoints (and data positions) the keep-best policy drops; records the decision."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    records = {s: self.read_meta(s).eval_metrics for s in self._manager.all_steps()}
    decision = keep_best_lib.decide(records, self.keep_best)
    from flanx.training import checkpoint_pins  # pylint: disable=g-import-not-at-top
    pinned = checkpoint_pins.pinned_steps(self.model_dir)  # an export is reading it: drop it at a later save
    for step, why in sorted(decision.items()):
      if why == 'deleted' and step not in pinned:
        self._manager.delete(step)
        data_state = os.path.join(self.model_dir, 'data_state', f'{_PREFIX}_{step}')
        if jax.process_index() == 0 and tf.io.gfile.isdir(data_state):
          tf.io.gfile.rmtree(data_state)
    if jax.process_index() == 0:
      keep_best_lib.write_record(self.model_dir, self.keep_best, records, decision)

  def read_meta(self, step: int) -> CheckpointMeta:
    """The metadata of checkpoint `step` (step, data position, checksums, settings) without its arrays."""
    return read_meta(os.path.join(self.model_dir, f'{_PREFIX}_{step}'))

  def restore(self, step: int, abstract_params: PyTree, abstract_opt_state: PyTree
              ) -> tuple[PyTree, PyTree, CheckpointMeta]:
    """Restores params, optimizer state (onto the shardings in the abstract trees) and metadata, verified
    against the checksums recorded at save (ChecksumMismatchError when they differ)."""
    where = f'{self.model_dir}/{_PREFIX}_{step}'
    meta = self.read_meta(step)
    recorded = {item: recorded_checksums(meta, item, where) for item in ('params', 'opt_state')}
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params), opt_state=ocp.args.StandardRestore(abstract_opt_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      storage_callbacks.read_failed()
      raise CheckpointRestoreError(
          f'cannot restore {where} (params/, opt_state/ or meta/): {_first_cause(e)}. If the model or '
          f'optimizer settings changed, use the ones it was written with (see {where}/meta) or a new MODEL_DIR; '
          f'if the checkpoint is damaged, move it aside (e.g. into {self.model_dir}/damaged/) to resume from the '
          'previous one.') from e
    for item in ('params', 'opt_state'):
      if recorded[item] is not None:
        _verify(recorded[item], out[item], f'{where}/{item}')
    return out['params'], out['opt_state'], meta

  def restore_newest_intact(self, abstract_params: PyTree, abstract_opt_state: PyTree,
                            log: Callable[[str], None] = print) -> tuple[int, PyTree, PyTree, CheckpointMeta] | None:
    """(step, params, opt_state, meta) of the newest checkpoint that restores and passes its checksums, or None
    when the run has no checkpoint. Newer ones that failed (checksums, or files that no longer decode) are moved to
    MODEL_DIR/damaged/, loudly, once an older one restored: had the settings been at fault, that one would have
    failed as well. With none intact, raises (the newest's error) and changes nothing."""
    damaged: list[tuple[int, CheckpointRestoreError]] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        params, opt_state, meta = self.restore(step, abstract_params, abstract_opt_state)
      except CheckpointRestoreError as e:
        log(f'WARNING: {e}')
        damaged.append((step, e))
        continue
      for bad, _ in damaged:
        moved = self._set_aside(bad)
        log(f'WARNING: {_PREFIX}_{bad} is damaged and was moved to {moved}; resuming from the previous intact '
            f'checkpoint, {self.model_dir}/{_PREFIX}_{step}: steps {step + 1}..{bad} will be trained again.')
      return step, params, opt_state, meta
    if damaged and not all(isinstance(e, ChecksumMismatchError) for _, e in damaged) or any(
        isinstance(e, UnverifiedCheckpointError) for _, e in damaged):
      raise next((e for _, e in damaged if isinstance(e, UnverifiedCheckpointError)), damaged[0][1])
    if damaged:
      names = ', '.join(f'{_PREFIX}_{s}' for s, _ in damaged)
      raise ChecksumMismatchError(f'every checkpoint in {self.model_dir} is damaged ({names}); nothing was '
                                  'changed. Restore them from a backup, or start over in a new MODEL_DIR '
                                  '(INITIAL_CHECKPOINT_PATH can point at a checkpoint you trust).')
    return None

  def _set_aside(self, step: int) -> str:
    """Moves checkpoint_<step> (and its data position) into MODEL_DIR/damaged/; deletes it where folders cannot
    be renamed (object stores)."""
    import tensorflow as tf  # gfile: local or gs://
    source = os.path.join(self.model_dir, f'{_PREFIX}_{step}')
    target = os.path.join(self.model_dir, 'damaged', f'{_PREFIX}_{step}.{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_index() == 0:
      try:
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.rename(source, target)
      except (tf.errors.OpError, OSError):
        self._manager.delete(step)
        target = 'nowhere (deleted: this storage cannot rename folders)'
      data_state = os.path.join(self.model_dir, 'data_state', f'{_PREFIX}_{step}')
      if tf.io.gfile.isdir(data_state):
        tf.io.gfile.rmtree(data_state)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'flanx_set_aside_{step}')
    self._manager.reload()
    return target

  def restore_data_position(self, iterator, step: int, batches_read: int, use_saved: bool = True) -> None:
    """Moves `iterator` past the `batches_read` batches of checkpoint `step`: from its saved data position, or
    (use_saved=False, or none saved) by re-reading and skipping them. A bad position file names itself."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    prefix = self.data_state_prefix(step) if use_saved else None
    try:
      iterator.restore(prefix, batches_read)
    except (tf.errors.OpError, ValueError, AssertionError) as e:
      other_pipeline = ''
      if 'dataset definition has not changed' in str(e):
        few_cores = gin_config.tasks_module('cached_reads').FEW_CORES
        other_pipeline = (' The input pipeline is not built as the one that saved it; if that host had another core '
                          'count, rerun with its choice of file reads for cached tasks: '
                          f'--gin.parallel_file_reads.enabled=True if it had more than {few_cores} cores, else False '
                          '(tasks/cached_reads.py).')
      raise CheckpointRestoreError(
          f'cannot read the data position of {self.model_dir}/{_PREFIX}_{step} ({prefix}.index / .data-*): '
          f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}.{other_pipeline} To resume without it, '
          f'rerun with --gin.train.restore_data=False: the input pipeline then re-reads and skips the {batches_read} '
          'batches already used (the same data order for an unchanged pipeline; a slower start).') from e

  def data_state_prefix(self, step: int) -> str:
    """Where the data position of `step` was saved (may not exist for non-serializable pipelines)."""
    return _data_state_prefix(self.model_dir, step)

  def wait(self) -> None:
    """Blocks until pending async saves are committed (CheckpointWriteError if one failed)."""
    self._wait()

  def close(self) -> None:
    """Waits for pending saves and releases resources (CheckpointWriteError if a save failed)."""
    self._wait()
    if self._failed:  # leave orbax's manager (and the quiet logs) as they are: its writer threads may still be
      return  # failing, and closing under them prints a traceback per thread ('Event loop is closed')
    self._manager.close()
    for name in _NOISY_LOGGERS:
      logging.getLogger(name).removeFilter(_QUIET_STORAGE_ERRORS)
    if self._quieted:
      storage_callbacks.unquiet()


def recorded_checksums(meta: CheckpointMeta, item: str, where: str) -> dict | None:
  """The checksums `meta` records for `item` ('params', 'opt_state'); None only for a checkpoint from before
  checksums when `checkpoint_checksums.required = False`; else UnverifiedCheckpointError."""
  recorded = (meta.checksums or {}).get(item)
  if recorded:
    return recorded
  if meta.checkpoint_version is not None:
    raise UnverifiedCheckpointError(
        f'{where}/meta records no checksums of {item}, though the flanx that wrote it (checkpoint_version '
        f'{meta.checkpoint_version}) records them for every array: its meta was damaged or edited, so its '
        'arrays cannot be verified. Use another checkpoint of the run.')
  if checkpoint_checksums():
    raise UnverifiedCheckpointError(
        f'{where}/meta records no checksums of {item} (written by a flanx from before checksums, or its meta was '
        'edited): its arrays cannot be verified. If you trust this checkpoint, accept it unverified with '
        '--allow_unverified (export) or --gin.checkpoint_checksums.required=False.')
  return None


class _QuietStorageErrors(logging.Filter):
  """Drops orbax's background-thread logs of a storage error (each with a traceback, one per writer thread, and
  asyncio's 'Future exception was never retrieved' for them): the failed save is reported once, as one
  CheckpointWriteError line naming the path and the free space."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or not ('orbax' in record.pathname or record.name == 'asyncio'):
      return True
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info and record.exc_info[1] else '')
    return not run_folder.is_storage_error(text)


_QUIET_STORAGE_ERRORS = _QuietStorageErrors()
_NOISY_LOGGERS = ('absl', 'asyncio')  # orbax logs through absl; its unawaited futures through asyncio


def _verify(recorded: dict, tree: PyTree, where: str) -> None:
  """Raises ChecksumMismatchError naming the arrays of `tree` whose checksums differ from `recorded`."""
  bad = checksums.mismatches(recorded, checksums.tree_checksums(tree))
  if bad:
    shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
    raise ChecksumMismatchError(f'{where}: {len(bad)} array(s) differ from the checksums recorded when the '
                                f'checkpoint was written ({shown}): its files are damaged.')


def read_meta(checkpoint_dir: str) -> CheckpointMeta:
  """checkpoint_<step>/meta (flanx.training.checkpoint_meta; when the file is absent, every key as absent)."""
  import tensorflow as tf  # gfile: local or gs://
  path = os.path.join(checkpoint_dir, 'meta', 'metadata')
  if not tf.io.gfile.exists(path):
    return CheckpointMeta.from_json({}, path)
  try:
    with tf.io.gfile.GFile(path) as f:
      return CheckpointMeta.from_json(json.load(f), path)
  except ValueError as e:  # not JSON, or a key of the wrong type
    raise CheckpointRestoreError(f'{path} is not a valid checkpoint meta ({e}): the checkpoint is damaged; move '
                                 f'{checkpoint_dir} aside to use the previous one.') from None


def saved_config(path: str) -> str | None:
  """The gin config a checkpoint was written with (run folder: newest checkpoint), or None if not recorded."""
  return read_meta(locate(path)[0]).config_gin


def recorded_config(path: str) -> tuple[str, str] | None:
  """(text, where) of the config a checkpoint (run folder: newest) recorded: its own, else the run's config.gin
  (which describes the newest start, and may differ); None if neither exists. Data only: see recorded_config.py."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  checkpoint, run_dir, _ = locate(path)
  text = read_meta(checkpoint).config_gin
  if text is not None:
    return text, f'{checkpoint}/meta'
  config_gin = os.path.join(run_dir, 'config.gin')
  if not tf.io.gfile.exists(config_gin):
    return None
  with tf.io.gfile.GFile(config_gin) as f:
    return f.read(), config_gin


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
  checkpoint_dir = locate(path)[0]
  recorded = recorded_checksums(read_meta(checkpoint_dir), 'params', checkpoint_dir)  # before reading the arrays
  item = _local_or_remote(os.path.join(checkpoint_dir, 'params'))
  with ocp.StandardCheckpointer() as checkpointer:
    if target is None:
      one_device = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
      metadata = checkpointer.metadata(item)
      tree = getattr(metadata, 'item_metadata', metadata)
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), tree)
    try:
      params = checkpointer.restore(item, target)
    except Exception as e:  # pylint: disable=broad-except
      storage_callbacks.read_failed()
      raise CheckpointRestoreError(f'cannot read {item}: {_first_cause(e)}. Its files are damaged or were written by '
                                   'another model; use another checkpoint of the run.') from e
  if recorded is not None:
    _verify(recorded, params, f'{checkpoint_dir}/params')
  return params


def _first_cause(error: BaseException) -> str:
  """The innermost cause's message: orbax wraps TensorStore's reason ('Error reading "<array>" ...: Requested byte
  range ... is not valid') in a message that prints the whole TensorStore spec, dozens of lines."""
  while error.__cause__ is not None:
    error = error.__cause__
  return f'{type(error).__name__}: {" ".join(str(error).split())[:1000]}'


def write_params_checkpoint(run_dir: str, step: int, params: PyTree, meta: CheckpointMeta | dict) -> None:
  """A params-only checkpoint RUN/checkpoint_<step>/{params, meta} (e.g. an import), written synchronously."""
  options = ocp.CheckpointManagerOptions(step_prefix=_PREFIX, create=True, enable_async_checkpointing=False)
  meta = CheckpointMeta.of(meta).replace(checkpoint_version=VERSION,
                                         checksums={'params': checksums.tree_checksums(params)})
  with ocp.CheckpointManager(_local_or_remote(run_dir), options=options, item_names=('params', 'meta')) as manager:
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                               meta=ocp.args.JsonSave(meta.to_json())))
    manager.wait_until_finished()
