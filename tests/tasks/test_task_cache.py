"""seqio's offline cache (issue 23): `seqio.scripts.cache_tasks_main` on Apache Beam's DirectRunner writes the
caches of the shipped tasks, `USE_CACHED_TASKS=True` reads them (the same examples seqio's on-the-fly pipeline
makes), and asking for a cache that is missing is an error naming the task and the folders searched."""

import json
import os
import pathlib
import subprocess
import sys

import gin
import numpy as np
import pytest
import seqio

from flanx.training import data
from tasks import dolly

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_dolly(path: pathlib.Path, n: int = 200) -> None:
  rows = [{'instruction': f'Add {i} and {i + 1}.', 'context': '' if i % 3 else f'numbers {i}',
           'response': str(2 * i + 1), 'category': ('open_qa', 'closed_qa')[i % 2]} for i in range(n)]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))


def test_missing_cache_is_an_error_naming_task_and_folders(tmp_path, monkeypatch):
  monkeypatch.setenv(data.CACHE_DIRS_ENV, f'{tmp_path}/a,{tmp_path}/b')
  with pytest.raises(data.TaskCacheError) as info:
    data.check_cached('dolly', 'train')
  message = str(info.value)
  assert f"dolly: no completed cache (searched ['{tmp_path}/a/dolly', '{tmp_path}/b/dolly'" in message
  assert 'cache_tasks_main --module_import=<task module> --tasks=dolly ' in message


def test_uncacheable_task_is_an_error_not_a_fallback(tmp_path, monkeypatch):
  monkeypatch.setenv(data.CACHE_DIRS_ENV, str(tmp_path))
  name = 'no_placeholder_task'
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=['train']),
                           output_features={'targets': seqio.Feature(seqio.ByteVocabulary())})
  with pytest.raises(data.TaskCacheError, match=f'{name}: cannot be cached'):
    data.check_cached(name, 'train')


@pytest.mark.slow
def test_cache_script_writes_what_training_reads(tmp_path, monkeypatch):
  pytest.importorskip('apache_beam')
  path = tmp_path / 'dolly.jsonl'
  write_dolly(path)
  env = dict(os.environ, PYTHONPATH=str(REPO), FLANX_DOLLY_PATH=str(path), FLANX_VOCAB='byte', JAX_PLATFORMS='cpu',
             TF_CPP_MIN_LOG_LEVEL='3')
  cache = tmp_path / 'cache'
  proc = subprocess.run([sys.executable, '-m', 'seqio.scripts.cache_tasks_main', '--module_import=tasks.dolly',
                         '--tasks=dolly', f'--output_cache_dir={cache}', '--pipeline_options=--runner=DirectRunner'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (cache / 'dolly' / 'COMPLETED').exists()
  monkeypatch.setenv('FLANX_DOLLY_PATH', str(path))
  monkeypatch.setenv('FLANX_VOCAB', 'byte')
  monkeypatch.setenv(data.CACHE_DIRS_ENV, str(cache))
  data.check_cached('dolly', 'train')
  task = seqio.get_mixture_or_task('dolly')
  lengths = {'inputs': 64, 'targets': 16}

  def examples(use_cached):
    ds = task.get_dataset(lengths, 'train', use_cached=use_cached, shuffle=False, num_epochs=1)
    return sorted((tuple(ex['inputs']), tuple(ex['targets'])) for ex in ds.as_numpy_iterator())

  fly = examples(False)
  assert len(fly) == task.num_input_examples('train') and examples(True) == fly  # seqio's own uncached pipeline
  batches = data.get_dataset('dolly', lengths, 'train', 4, shuffle=True, pack=True, use_cached=True)
  batch = next(batches.as_numpy_iterator())
  assert batch['encoder_input_tokens'].shape == (4, 64) and np.any(batch['decoder_target_tokens'])


@pytest.mark.slow
def test_flan_cache_gives_the_same_capped_epochs(tmp_path, monkeypatch):
  """The 14 Flan 2022 variant tasks of a mirror-layout folder, cached by the script; each epoch read from the cache
  keeps exactly the examples the on-the-fly pipeline keeps (the capping runs after the cache)."""
  pytest.importorskip('apache_beam')
  sys.path.insert(0, str(REPO / 'tests' / 'tasks'))
  from test_tasks_flan_mirrors import CAPS, write_openorca  # pylint: disable=g-import-not-at-top
  from tasks import flan  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'flan'
  folder.mkdir()
  write_openorca(folder)
  env = dict(os.environ, PYTHONPATH=str(REPO), FLANX_FLAN_DATA=str(folder), FLANX_VOCAB='byte', JAX_PLATFORMS='cpu',
             TF_CPP_MIN_LOG_LEVEL='3')
  cache = tmp_path / 'cache'
  proc = subprocess.run([sys.executable, '-m', 'seqio.scripts.cache_tasks_main', '--module_import=tasks.flan',
                         '--tasks=flan2022_.*', f'--output_cache_dir={cache}', '--min_shards=2',
                         '--pipeline_options=--runner=DirectRunner'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(list(cache.glob('flan2022_*/COMPLETED'))) == 14
  monkeypatch.setenv(data.CACHE_DIRS_ENV, str(cache))
  try:  # the shipped names, with caps small enough to cap the mirror's tasks
    flan.register_flan2022(pattern=str(folder), caps=CAPS, vocabulary=seqio.ByteVocabulary())
    data.check_cached('flan2022_submix', 'train')
    for name in ('flan2022_flan2021_zs_opt', 'flan2022_t0_fs_opt', 'flan2022_cot_zs_opt'):
      task = seqio.get_mixture_or_task(name)

      def epochs(use_cached):
        ds = task.get_dataset(None, 'train', use_cached=use_cached, shuffle=False, num_epochs=2)
        texts = [ex['inputs_pretokenized'].decode() for ex in ds.as_numpy_iterator()]
        per_epoch = task.source.num_input_examples('train')
        return sorted(texts[:per_epoch]), sorted(texts[per_epoch:])

      assert epochs(True) == epochs(False), name
    batches = data.get_dataset('flan2022_submix', {'inputs': 32, 'targets': 16}, 'train', 4, shuffle=True,
                               pack=True, use_cached=True)
    assert next(batches.as_numpy_iterator())['encoder_input_tokens'].shape == (4, 32)
    assert_cache_is_read_by_file(seqio.get_mixture_or_task('flan2022_flan2021_zs_opt'), monkeypatch)
    assert_sequential_reads_are_seqios(seqio.get_mixture_or_task('flan2022_t0_fs_opt'))
  finally:
    flan.register_flan2022()


def assert_cache_is_read_by_file(task, monkeypatch):
  """Hosts read the cache by file: with at least as many cache files as shards, seqio hands the ShardInfo to its
  cached TFRecord source (which keeps every N-th file: seqio's FileDataSource), and nothing counts the Flan files."""
  from tasks import flan  # pylint: disable=g-import-not-at-top
  cached_source = type(task._get_cached_source('train'))  # pylint: disable=protected-access
  assert issubclass(cached_source, seqio.dataset_providers._CachedDataSource)  # pylint: disable=protected-access
  received = []
  original = cached_source.get_dataset

  def get_dataset(self, *args, **kwargs):  # wraps seqio's own, to see the ShardInfo it is given
    received.append(kwargs.get('shard_info'))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(cached_source, 'get_dataset', get_dataset)
  flan._SCANS.clear()  # pylint: disable=protected-access
  assert len(task._get_cached_source('train').list_shards('train')) >= 2  # pylint: disable=protected-access

  def texts(shard_info):
    ds = task.get_dataset(None, 'train', use_cached=True, shuffle=False, shard_info=shard_info)
    return [ex['inputs_pretokenized'] for ex in ds.as_numpy_iterator()]

  shards = [texts(seqio.ShardInfo(i, 2)) for i in range(2)]
  assert received[:2] == [seqio.ShardInfo(0, 2), seqio.ShardInfo(1, 2)]
  assert sorted(shards[0] + shards[1]) == sorted(texts(None))
  assert not flan._SCANS  # pylint: disable=protected-access


def assert_sequential_reads_are_seqios(task):
  """tasks.cached_reads: the sequential interleave and its own record parsing yield seqio's own examples (every
  feature, its dtype and shape) in seqio's order (files shuffled, sharded by host or not, two epochs with the
  per-epoch caps)."""
  from tasks import cached_reads  # pylint: disable=g-import-not-at-top

  def examples(parallel, shard_info):
    gin.bind_parameter('parallel_file_reads.enabled', parallel)
    source = task._get_cached_source('train')  # pylint: disable=protected-access
    assert isinstance(source, cached_reads.SequentialCachedSource) != parallel
    assert parallel or source._reader.__qualname__.startswith('_reader_in_this_thread')  # pylint: disable=protected-access
    ds = task.get_dataset(None, 'train', use_cached=True, shuffle=True, seed=7, shard_info=shard_info, num_epochs=2)
    return [{k: (np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tolist()) for k, v in ex.items()}
            for ex in ds.as_numpy_iterator()]

  try:
    for shard_info in (None, seqio.ShardInfo(1, 2)):
      sequential = examples(False, shard_info)
      assert sequential and sequential == examples(True, shard_info)
  finally:
    gin.bind_parameter('parallel_file_reads.enabled', None)  # back to the default (by core count)
