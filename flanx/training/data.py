"""Input pipeline: a seqio task/mixture → per-host numpy batches → globally sharded jax arrays."""

from __future__ import annotations

import functools
import importlib
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import gin
import jax
import numpy as np

from flanx import gin_config
from flanx.training.data_layout import DataLayout, data_layout

Batch = dict[str, np.ndarray]


def import_task_modules(module: str | None) -> None:
  """Imports MIXTURE_OR_TASK_MODULE (comma-separated allowed) so its registrations exist."""
  for name in filter(None, (module or '').split(',')):
    importlib.import_module(name.strip())


CACHE_DIRS_ENV = 'FLANX_TASK_CACHE_DIRS'


class TaskCacheError(FileNotFoundError):
  """USE_CACHED_TASKS=True, but a task has no (complete) seqio cache, or cannot be cached."""


@gin.configurable
def task_cache_dirs(dirs: Sequence[str] | None = None) -> list[str]:
  """Folders holding seqio task caches (what `seqio.scripts.cache_tasks_main --output_cache_dir` wrote): the gin
  binding, else $FLANX_TASK_CACHE_DIRS (comma-separated); seqio's own global cache dirs are searched as well."""
  if dirs is None:
    dirs = [d.strip() for d in os.environ.get(CACHE_DIRS_ENV, '').split(',') if d.strip()]
  return list(dirs)


@gin.configurable
def tf_data_autotune(enabled: bool | None = None) -> bool:
  """Whether tf.data's autotuner sizes the input pipeline's parallelism and buffers (tf.data.Options.autotune).

  None (default): on when the host has more than 4 cores (TPU VM and GPU hosts: tf.data's and t5x's default), off
  on smaller ones (tasks.cached_reads.few_cores, which also decides how cached tasks read their files). There the
  autotuner's bookkeeping over the Flan mixture's 14 task pipelines took about 30% of the CPU (2 cores, from the
  cache: a steady 2,632 packed examples/s without it, 1,929 with it; BENCHMARKS.md "Flan at pod scale"). Without
  it, each parallel step uses as many threads as there are cores. The batches are the same.
  """
  cached_reads = gin_config.tasks_module('cached_reads')
  return not cached_reads.few_cores() if enabled is None else bool(enabled)


def check_cached(mixture_or_task_name: str, split: str) -> None:
  """Registers `task_cache_dirs()` with seqio and raises TaskCacheError naming every task of the mixture that
  has no completed cache of `split` (and the folders searched) or cannot be cached: never a silent fallback
  to preprocessing on the fly, which is what seqio does for a task without a CacheDatasetPlaceholder."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seqio.add_global_cache_dirs(task_cache_dirs())
  provider = seqio.get_mixture_or_task(mixture_or_task_name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  missing = []
  for task in tasks:
    if not task.supports_caching:
      missing.append(f'{task.name}: cannot be cached (no seqio.CacheDatasetPlaceholder in its preprocessors)')
      continue
    cache_dir = task.cache_dir
    if cache_dir is None:
      searched = [os.path.join(d, seqio.utils.get_task_dir_from_name(task.name))
                  for d in seqio.utils.get_global_cache_dirs()]
      missing.append(f'{task.name}: no completed cache (searched {searched or "nothing: no cache folder is set"})')
    elif not tf.io.gfile.exists(seqio.utils.get_cached_info_path(cache_dir, split)):
      missing.append(f'{task.name}: the cache in {cache_dir} has no {split!r} split')
  if missing:
    names = ','.join(t.name for t in tasks)
    raise TaskCacheError(
        f'USE_CACHED_TASKS=True, but {len(missing)} of the {len(tasks)} tasks of {mixture_or_task_name!r} cannot be '
        'read from a cache:\n  ' + '\n  '.join(missing) + '\nWrite the caches with `python -m '
        f'seqio.scripts.cache_tasks_main --module_import=<task module> --tasks={names} --output_cache_dir=DIR '
        '--pipeline_options=--runner=DirectRunner` and point gin `flanx.training.data.task_cache_dirs.dirs` (or '
        f'${CACHE_DIRS_ENV}) at DIR, or set USE_CACHED_TASKS=False to preprocess on the fly.')


@gin.configurable
def get_dataset(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], split: str, batch_size: int,
                *, shuffle: bool, pack: bool, seed: int = 42, num_epochs: int | None = None,
                use_cached: bool = False, drop_remainder: bool = True, prompt_tokens: int = 0,
                layout: DataLayout | None = None):
  """This host's share of a seqio dataset, converted for the encoder-decoder and batched.

  `batch_size` is global. With a `layout` (flanx.training.data_layout: the mesh decides), the hosts of one
  replica set read the same shard and the others disjoint ones, each yielding layout.host_batch_size rows;
  without, each of the jax processes reads 1/process_count of the data (seqio ShardInfo) and yields
  batch_size/process_count rows. A fixed seed keeps shuffling and mixing reproducible (exact resume).
  `prompt_tokens` (prompt tuning): that many placeholders lead every example's inputs, before packing; the task
  is asked for inputs that much shorter so the converted length stays task_feature_lengths['inputs'].
  """
  import seqio  # heavy (tensorflow): imported on use
  import tensorflow as tf
  count, index = jax.process_count(), jax.process_index()
  if layout is not None:
    count, index = layout.num_shards, layout.shard_id
  if batch_size % count:
    raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by the {count} input shards (hosts)')
  if use_cached:
    check_cached(mixture_or_task_name, split)
  from flanx.training import packing  # pylint: disable=g-import-not-at-top  (seqio: heavy)
  lengths = dict(task_feature_lengths)
  converter = packing.EncDecFeatureConverter(pack=pack)
  if prompt_tokens:
    if lengths['inputs'] <= prompt_tokens:
      raise ValueError(f"TASK_FEATURE_LENGTHS['inputs']={lengths['inputs']} leaves no room for the inputs after "
                       f'the {prompt_tokens} prompt tokens (PromptConfig.num_virtual_tokens)')
    lengths['inputs'] -= prompt_tokens
    converter = _prompt_converter(prompt_tokens, pack)
  ds = seqio.get_dataset(
      mixture_or_task_name, task_feature_lengths=lengths, dataset_split=split,
      shuffle=shuffle, num_epochs=num_epochs, use_cached=use_cached, seed=seed,
      shard_info=seqio.ShardInfo(index=index, num_shards=count) if count > 1 else None,
      feature_converter=converter)
  ds = ds.batch(batch_size // count, drop_remainder=drop_remainder)
  options = tf.data.Options()
  options.autotune.enabled = tf_data_autotune()
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _prompt_converter(prompt_tokens: int, pack: bool):
  """seqio's encoder-decoder converter that first puts `prompt_tokens` placeholders before each example's inputs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from flanx.model.peft import PROMPT_PLACEHOLDER_ID  # pylint: disable=g-import-not-at-top
  from flanx.training import packing  # pylint: disable=g-import-not-at-top

  class PromptFeatureConverter(packing.EncDecFeatureConverter):
    """Placeholders + inputs, then packed or padded as EncDecFeatureConverter does (to inputs + prompt_tokens)."""

    def __call__(self, ds, task_feature_lengths):  # delegates to the checked conversion, as seqio's own wrappers do
      def prepend(ex):
        head = tf.fill([prompt_tokens], tf.cast(PROMPT_PLACEHOLDER_ID, ex['inputs'].dtype))
        return {**ex, 'inputs': tf.concat([head, ex['inputs']], axis=0)}
      lengths = {**task_feature_lengths, 'inputs': task_feature_lengths['inputs'] + prompt_tokens}
      return super().__call__(ds.map(prepend, num_parallel_calls=tf.data.AUTOTUNE), lengths)

  return PromptFeatureConverter(pack=pack)


class CheckpointableIterator:
  """A tf.data iterator whose position is saved with each checkpoint (exact resume).

  `make_dataset` builds the pipeline; it is called once per start (lazily, so a restore builds the only copy).
  tf.data serializes the iterator state of native ops (TFRecord reads, e.g. seqio caches); a pipeline with a
  Python-generator source cannot be serialized: the save says so (a warning naming the checkpoint) and a restore
  rebuilds the pipeline from scratch, so that no state of an earlier iterator (a source's epoch counter, a
  shuffle's seed generator) survives, and replays the batches already read: the same stream, at the cost of
  re-reading it (the log gives the number of batches and an estimate of the time).
  """

  def __init__(self, make_dataset: Callable[[], Any], log: Callable[[str], None] | None = None):
    if not callable(make_dataset):
      raise TypeError('CheckpointableIterator takes a function that builds the dataset (rebuilt on restore)')
    self._make_dataset = make_dataset
    self._iterator = None
    self._log = log or _first_host_print
    self.batches_read = 0
    self.unsaved_reason: str | None = None  # why the last save() could not write the position
    self._python_ops: list[str] = []

  def __iter__(self) -> Iterator[Batch]:
    return self

  def _tf_iterator(self):
    if self._iterator is None:
      dataset = self._make_dataset()
      self._python_ops = python_ops(dataset)
      self._iterator = iter(dataset)
    return self._iterator

  def __next__(self) -> Batch:
    batch = next(self._tf_iterator())
    self.batches_read += 1
    return {k: v.numpy() for k, v in batch.items()}

  def save(self, prefix: str) -> bool:
    """Writes the iterator state to files starting with `prefix`; False (and a warning naming the checkpoint)
    when the pipeline cannot be serialized: a resume from it then replays the batches read."""
    import tensorflow as tf
    try:
      iterator = self._tf_iterator()
      if self._python_ops:  # tf.data may write a state it cannot restore (a generator nested in an interleave)
        raise TypeError(f'the pipeline runs Python code ({", ".join(self._python_ops)})')
      tf.train.Checkpoint(iterator=iterator).write(prefix)
      self.unsaved_reason = None
      return True
    except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError, TypeError, ValueError) as e:
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      first = self.unsaved_reason is None
      self.unsaved_reason = reason
      where = _checkpoint_name(prefix)
      detail = (f' ({type(e).__name__}: {reason[:200]}; e.g. a Python-generator source)' if first else '')
      self._log(f'WARNING: the input pipeline position could not be saved with {where}{detail}: a resume from it '
                f'rebuilds the pipeline and replays the {self.batches_read} batches read.')
      return False

  def restore(self, prefix: str | None, batches_read: int) -> None:
    """Continues after `batches_read` batches: from saved state when present, else by rebuilding the pipeline
    and replaying them."""
    import tensorflow as tf
    self.close()
    if prefix is not None and tf.io.gfile.exists(prefix + '.index'):
      tf.train.Checkpoint(iterator=self._tf_iterator()).read(prefix).assert_consumed()
    else:
      self._replay(batches_read, 'not saved' if prefix is not None else 'not used (train.restore_data=False)')
    self.batches_read = batches_read

  def _replay(self, batches: int, why: str) -> None:
    """A fresh pipeline, advanced by `batches` batches (timed: the first few give the estimate)."""
    start = time.monotonic()
    iterator = self._tf_iterator()
    probe = min(batches, 8)
    for _ in range(probe):
      next(iterator)
    if batches > probe:
      estimate = (time.monotonic() - start) / probe * (batches - probe)
      self._log(f'Data position {why}: rebuilt the input pipeline and replaying {batches} batches '
                f'(~{estimate:.0f} s estimated) to continue where the checkpoint left off.')
      for _ in range(batches - probe):
        next(iterator)
    self._log(f'Replayed {batches} batches of the rebuilt input pipeline in {time.monotonic() - start:.1f} s.')

  def close(self) -> None:
    """Releases the tf.data iterator now (Python-generator sources can stall interpreter exit otherwise)."""
    self._iterator = None


_PYTHON_OPS = ('PyFunc', 'PyFuncStateless', 'EagerPyFunc')


def python_ops(dataset) -> list[str]:
  """The Python-calling ops (from_generator, py_function, numpy_function) anywhere in a dataset's graph, its
  nested functions included: their state lives in Python, so no saved iterator position can restore it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())  # pylint: disable=protected-access
  ops = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
  return sorted({op for op in ops if op in _PYTHON_OPS})


def _checkpoint_name(prefix: str) -> str:
  """'checkpoint_N' from a data-state prefix (…/data_state/checkpoint_N/process_i), else the prefix."""
  parent = os.path.basename(os.path.dirname(prefix))
  return parent if parent.startswith('checkpoint_') else prefix


def _first_host_print(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def to_global(batch: Batch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """Assembles per-host batches into global arrays sharded over the mesh's 'data' axis (a replica set's hosts
  hold the same rows: the global batch is host rows x input shards)."""
  count = input_shards(sharding.mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count,) + v.shape[1:])
          for k, v in batch.items()}


@functools.lru_cache(maxsize=8)
def input_shards(mesh: jax.sharding.Mesh) -> int:
  """How many disjoint input shards the hosts read on `mesh` (its replica sets; data_layout)."""
  return data_layout(mesh, mesh.shape['data']).num_shards


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> tuple[Batch, int]:
  """Pads a final partial batch with zero rows to `batch_size`; returns it and the number of real rows."""
  n = len(next(iter(batch.values())))
  if n == batch_size:
    return dict(batch), n
  pad = lambda v: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
  return {k: pad(v) for k, v in batch.items()}, n


def non_padding_fraction(batch: Mapping[str, Any]) -> dict[str, float]:
  """Share of non-zero tokens per token feature (t5x's non_padding_fraction/{feature})."""
  out = {}
  for key in ('encoder_input_tokens', 'decoder_target_tokens'):
    if key in batch:
      out[key] = float(np.mean(np.asarray(batch[key]) != 0))
  return out


def truncation_report(name: str, lengths: Mapping[str, int], split: str, examples: int
                      ) -> tuple[list[str], dict[str, float]]:
  """(log lines, scalars `truncation/{task}/{feature}`): the share of each task's first `examples` examples
  whose inputs/targets the lengths cut (a cut target is lost signal). Never raises: a failure is one line."""
  truncation = gin_config.tasks_module('truncation')
  lengths = dict(lengths)
  try:
    reports = truncation.mixture_truncation(name, lengths, split, examples)
  except Exception as e:  # pylint: disable=broad-except  (a report must never stop the run; say why it is missing)
    return [f'Truncation report skipped ({type(e).__name__}: {e}).'], {}
  lines, scalars = [], {}
  for task, report in reports.items():
    cut = ', '.join(f'{100 * report[f]:.1f}% of {f} (longest {report[f"max_{f}"]})' for f in lengths if f in report)
    lines.append(f'Truncation at {lengths} in {task} {split} ({report["examples"]} examples): {cut} cut.')
    scalars.update({f'truncation/{task}/{f}': report[f] for f in lengths if f in report})
  return lines, scalars
