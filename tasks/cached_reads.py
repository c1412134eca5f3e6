"""Reading a task's seqio cache with its files interleaved in the reading thread, on hosts with few cores.

seqio's cached source opens 16 files at a time through a parallel interleave: each open file gets a thread and a
buffer. The Flan mixture reads 14 cached tasks at once, so on a 2-core host over two hundred threads hand examples
to each other, and the hand-offs (futex wake-ups, context switches) took 37% of the pipeline's CPU (perf). A
deterministic parallel interleave yields exactly the elements of the sequential one, in the same order: this
reader gives seqio's examples in seqio's order; only where the interleaving runs changes (each file's records are
still parsed in seqio's parallel maps). BENCHMARKS.md "Flan at pod scale" has the rates.
"""

from __future__ import annotations

import os
from typing import Optional

import gin
import numpy as np
import seqio
from seqio import dataset_providers

FEW_CORES = 4  # hosts with at most this many cores read without parallel threads (also tf.data's autotuner)


def few_cores() -> bool:
  """Whether this process may use at most FEW_CORES cores: the input pipeline's threads then cost more than they
  give (here and in flanx.training.data.tf_data_autotune)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
  return cores <= FEW_CORES


@gin.configurable
def parallel_file_reads(enabled: Optional[bool] = None) -> bool:
  """Whether cached tasks interleave their files in parallel (seqio's way). None (default): on hosts with more
  than FEW_CORES cores (TPU VM and GPU hosts), off on smaller ones. The examples and their order are the same."""
  return not few_cores() if enabled is None else bool(enabled)


class SequentialCachedSource(dataset_providers._CachedDataSource):  # pylint: disable=protected-access
  """seqio's cached source (same files, shards, file shuffle and reader) with a sequential interleave."""

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


def cached_source(task: seqio.Task, split: str, file_shuffle_buffer_size: Optional[int] = None):
  """The source `task` reads its cache of `split` through (seqio's Task._get_cached_source, or the sequential one)."""
  if parallel_file_reads():
    return seqio.Task._get_cached_source(task, split, file_shuffle_buffer_size)  # pylint: disable=protected-access
  task.assert_cached()
  placeholder = task._cache_dataset_placerholder  # pylint: disable=protected-access  (seqio's spelling)
  return SequentialCachedSource(cache_dir=task.cache_dir, split=split,
                                file_shuffle_buffer_size=file_shuffle_buffer_size
                                or placeholder.file_shuffle_buffer_size)
