"""Reading a task's seqio cache without the input pipeline's threads, on hosts with few cores.

seqio's cached source opens 16 files at a time through a parallel interleave, and reads each through two parallel
maps (parse the record, cast its features back). The Flan mixture reads 14 cached tasks at once, so on a 2-core
host hundreds of threads hand examples to each other, and the hand-offs (futex wake-ups, context switches) took
about half of the pipeline's CPU (perf). A deterministic parallel interleave or map yields exactly what the
sequential one does, in the same order: this source gives seqio's examples in seqio's order, parsed and cast in one
map in the reading thread. BENCHMARKS.md "Flan at pod scale" has the rates.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import gin
import numpy as np
import seqio
from seqio import dataset_providers
from seqio import utils as seqio_utils

FEW_CORES = 4  # hosts with at most this many cores read without parallel threads (also tf.data's autotuner)


def few_cores() -> bool:
  """Whether this process may use at most FEW_CORES cores: the input pipeline's threads then cost more than they
  give (here and in flanx.training.data.tf_data_autotune)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
  return cores <= FEW_CORES


@gin.configurable
def parallel_file_reads(enabled: Optional[bool] = None) -> bool:
  """Whether cached tasks interleave and parse their files in parallel (seqio's way). None (default): on hosts with
  more than FEW_CORES cores (TPU VM and GPU hosts), off on smaller ones. The examples and their order are the same."""
  return not few_cores() if enabled is None else bool(enabled)


class SequentialCachedSource(dataset_providers._CachedDataSource):  # pylint: disable=protected-access
  """seqio's cached source (same files, shards and file shuffle) with a sequential interleave, and each file
  parsed and cast in one map in the reading thread (seqio's reader where the cache holds what that map does not
  describe)."""

  def __init__(self, cache_dir: str, split: str, file_shuffle_buffer_size: Optional[int] = None):
    super().__init__(cache_dir=cache_dir, split=split, file_shuffle_buffer_size=file_shuffle_buffer_size)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(seqio_utils.get_cached_info_path(cache_dir, split)) as f:
      self._reader = _reader_in_this_thread(json.load(f)) or self._reader

  def get_dataset(self, split: str = 'train', shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None, use_cached=False,
                  num_epochs=1):
    del sequence_length, use_cached, num_epochs  # unused, as in seqio
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    files = self.list_shards(split)
    if not files:
      raise ValueError(f'no cached file matches {self._split_to_filepattern[split]}')
    files_ds = tf.data.Dataset.from_tensor_slices(np.array(files, dtype=str))
    if shard_info:
      if len(files) < shard_info.num_shards:
        raise ValueError(f'{len(files)} cached files cannot be split into {shard_info.num_shards} shards '
                         f'({self._split_to_filepattern[split]})')
      files_ds = files_ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      files_ds = files_ds.shuffle(buffer_size=self._file_shuffle_buffer_size or len(files), seed=seed)
    return files_ds.interleave(self._reader, cycle_length=self._cycle_length, block_length=self._block_length)


def _reader_in_this_thread(info: dict[str, Any]) -> Optional[Callable[[str], Any]]:
  """A file's examples as seqio's cache reader gives them (tf.train.Example records parsed by the cache's
  info.{split}.json features, int32/bool stored as int64 and cast back), in one plain map; None for what it does
  not describe: features with more than one variable dimension, caches from before seqio kept true dtypes, or
  legacy "_plaintext" names."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = info['features']
  if (info.get('seqio_version', '0.pre') == '0.pre' or any(name.endswith('_plaintext') for name in features)
      or any(None in (f['shape'] or [])[1:] for f in features.values())):
    return None
  stored = {'int32': 'int64', 'bool': 'int64'}  # what tf.train.Example can hold
  spec = {}
  for name, feature in features.items():
    shape, dtype = feature['shape'], stored.get(feature['dtype'], feature['dtype'])
    spec[name] = (tf.io.FixedLenSequenceFeature(shape[1:], dtype, allow_missing=True) if shape and shape[0] is None
                  else tf.io.FixedLenFeature(shape, dtype))

  def parse(record):
    example = tf.io.parse_single_example(record, spec)
    return {name: tf.cast(value, features[name]['dtype']) for name, value in example.items()}

  return lambda path: tf.data.TFRecordDataset(path).map(parse)


def cached_source(task: seqio.Task, split: str, file_shuffle_buffer_size: Optional[int] = None):
  """The source `task` reads its cache of `split` through (seqio's Task._get_cached_source, or the sequential one)."""
  if parallel_file_reads():
    return seqio.Task._get_cached_source(task, split, file_shuffle_buffer_size)  # pylint: disable=protected-access
  task.assert_cached()
  placeholder = task._cache_dataset_placerholder  # pylint: disable=protected-access  (seqio's spelling)
  return SequentialCachedSource(cache_dir=task.cache_dir, split=split,
                                file_shuffle_buffer_size=file_shuffle_buffer_size
                                or placeholder.file_shuffle_buffer_size)
