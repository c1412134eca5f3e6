"""The input pipeline's position across a restart (issue 23): saved where tf.data can serialize it; otherwise a
warning naming the checkpoint at save, and a restore that rebuilds the pipeline and replays the batches, so state
an earlier iterator left behind (a generator's epoch counter, a shuffle's seed generator) cannot leak in."""

import itertools

import numpy as np
import tensorflow as tf

from flanx.training import data


def generator_pipeline():
  """A source with hidden Python state, like the old Flan sources: every pass over it is a different 'epoch'."""
  epochs = itertools.count()

  def generate():
    epoch = next(epochs)
    yield from (10 * epoch + i for i in range(7))

  ds = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec([], tf.int64))
  return ds.repeat().shuffle(5, seed=3).batch(2).map(lambda x: {'x': x}).prefetch(2)


def native_pipeline():
  return tf.data.Dataset.range(50).shuffle(10, seed=3).repeat().batch(2).map(lambda x: {'x': x})


def stream(make, n):
  iterator = data.CheckpointableIterator(make, log=lambda m: None)
  out = [next(iterator)['x'] for _ in range(n)]
  iterator.close()
  return out


def test_unserializable_position_warns_and_replays_exactly(tmp_path):
  straight = stream(generator_pipeline, 12)
  logs = []
  first = data.CheckpointableIterator(generator_pipeline, log=logs.append)
  for _ in range(5):
    next(first)
  assert not first.save(str(tmp_path / 'data_state' / 'checkpoint_5' / 'process_0'))
  assert 'could not be saved with checkpoint_5' in logs[0] and 'PyFunc' in logs[0] and 'replays the 5 batches' in logs[0]
  assert not list(tmp_path.rglob('*.index'))
  resumed = data.CheckpointableIterator(generator_pipeline, log=logs.append)
  resumed.restore(str(tmp_path / 'data_state' / 'checkpoint_5' / 'process_0'), 5)
  assert 'Replayed 5 batches' in logs[-1]
  np.testing.assert_array_equal(np.stack([next(resumed)['x'] for _ in range(7)]), np.stack(straight[5:]))
  # What the old fallback did: skipping on the dataset an earlier iterator had used replays a different stream.
  used = generator_pipeline()
  next(iter(used))
  skipped = [b['x'].numpy() for b in itertools.islice(iter(used.skip(5)), 7)]
  assert any((a != b).any() for a, b in zip(skipped, straight[5:]))


def test_serializable_position_is_saved_and_restored(tmp_path):
  straight = stream(native_pipeline, 12)
  logs = []
  first = data.CheckpointableIterator(native_pipeline, log=logs.append)
  for _ in range(5):
    next(first)
  prefix = str(tmp_path / 'checkpoint_5' / 'process_0')
  assert first.save(prefix) and not logs
  resumed = data.CheckpointableIterator(native_pipeline, log=logs.append)
  resumed.restore(prefix, 5)
  assert not logs  # nothing replayed
  np.testing.assert_array_equal(np.stack([next(resumed)['x'] for _ in range(7)]), np.stack(straight[5:]))
