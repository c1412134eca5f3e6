"""tasks.cached_reads.SequentialCachedSource against seqio's own cached source, on cache folders written here in
seqio's layout (info/stats JSON, sharded TFRecords of tf.train.Example): the same examples, dtypes, shapes and
order, whether its own record parsing runs or it falls back to seqio's reader (legacy caches)."""

import json

import numpy as np
import pytest
import seqio
import tensorflow as tf
from seqio import dataset_providers

from tasks import cached_reads

ROWS = [{'inputs': [5, 6, 7], 'targets': [9], 'inputs_pretokenized': 'a b c', 'task_size': 3},
        {'inputs': [8], 'targets': [2, 3, 4, 1], 'inputs_pretokenized': 'd', 'task_size': 3},
        {'inputs': [], 'targets': [1], 'inputs_pretokenized': '', 'task_size': 3}]


def _write_cache(folder, version, text_name='inputs_pretokenized', shards=2):
  folder.mkdir(parents=True)
  features = {'inputs': {'dtype': 'int32', 'shape': [None]}, 'targets': {'dtype': 'int32', 'shape': [None]},
              text_name: {'dtype': 'string', 'shape': []}, 'task_size': {'dtype': 'int64', 'shape': []}}
  info = {'features': features, 'num_shards': shards}
  if version:
    info['seqio_version'] = version
  (folder / 'info.train.json').write_text(json.dumps(info))
  (folder / 'stats.train.json').write_text(json.dumps({'examples': len(ROWS)}))
  for shard in range(shards):
    with tf.io.TFRecordWriter(str(folder / f'train.tfrecord-{shard:05d}-of-{shards:05d}')) as writer:
      for row in ROWS[shard::shards]:
        ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
        feature = {'inputs': ints(row['inputs']), 'targets': ints(row['targets']), 'task_size': ints([row['task_size']]),
                   text_name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[row['inputs_pretokenized'].encode()]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _examples(source, shard_info=None):
  ds = source.get_dataset('train', shuffle=True, seed=3, shard_info=shard_info)
  return [{k: (np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tolist()) for k, v in ex.items()}
          for ex in ds.as_numpy_iterator()]


@pytest.mark.parametrize('version,text_name,own_parsing', [
    ('0.0.20', 'inputs_pretokenized', True),
    ('0.pre', 'inputs_pretokenized', False),  # int64 features read back as int32 by seqio's legacy rule
    ('0.0.20', 'inputs_plaintext', False),  # renamed to _pretokenized by seqio
])
def test_sequential_source_reads_what_seqio_reads(tmp_path, version, text_name, own_parsing):
  cache = tmp_path / 'cache'
  _write_cache(cache, version, text_name)
  ours = cached_reads.SequentialCachedSource(str(cache), 'train')
  seqios = dataset_providers._CachedDataSource(str(cache), 'train')  # pylint: disable=protected-access
  assert (ours._reader is not seqios._reader) and (ours._reader.__qualname__.startswith(  # pylint: disable=protected-access
      '_reader_in_this_thread') == own_parsing)
  for shard_info in (None, seqio.ShardInfo(0, 2), seqio.ShardInfo(1, 2)):
    expected = _examples(seqios, shard_info)
    assert expected and _examples(ours, shard_info) == expected
  assert 'inputs_pretokenized' in expected[0] and expected[0]['inputs'][0] == '<i4'


def test_two_variable_dimensions_are_left_to_seqio():
  info = {'features': {'grid': {'dtype': 'int32', 'shape': [None, None]}}, 'seqio_version': '0.0.20'}
  assert cached_reads._reader_in_this_thread(info) is None  # pylint: disable=protected-access
