"""`few_shot.fit_exemplars`: exemplars fit the run's inputs length, dropped from the end, never the query."""

import functools

import pytest
import seqio

from tasks import few_shot

BYTES = seqio.ByteVocabulary()  # one id per byte: lengths are plain arithmetic
FEATURES = {'inputs': seqio.Feature(BYTES, add_eos=True), 'targets': seqio.Feature(BYTES, add_eos=True)}
PIECES = {'prefix': 'Task.\n\n', 'exemplars': ['Q: 1+1\nA: 2\n\n', 'Q: 2+2\nA: 4\n\n', 'Q: 3+3\nA: 6\n\n'],
          'query': 'Q: 4+4\nA:', 'targets': '8'}


def _task(name, counts=None, **kwargs):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def dataset_fn(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    text = tf.TensorSpec([], tf.string)
    signature = {'prefix': text, 'exemplars': tf.TensorSpec([None], tf.string), 'query': text, 'targets': text}
    rows = [PIECES, dict(PIECES, exemplars=[])]
    if counts is not None:  # token counts claimed by the source: (fixed, per exemplar)
      signature.update(fixed_length=tf.TensorSpec([], tf.int32), exemplar_lengths=tf.TensorSpec([None], tf.int32))
      rows = [dict(rows[0], fixed_length=counts[0], exemplar_lengths=counts[1]),
              dict(rows[1], fixed_length=counts[0], exemplar_lengths=[])]
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

  task = seqio.Task(name, source=seqio.FunctionDataSource(dataset_fn, splits=('test',)), output_features=FEATURES,
                    preprocessors=[functools.partial(few_shot.fit_exemplars, task_name=name, **kwargs),
                                   seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim])
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add_provider(name, task)
  return name


def _inputs(name, length):
  ds = seqio.get_dataset(name, {'inputs': length, 'targets': 4} if length else None, dataset_split='test',
                         shuffle=False, feature_converter=seqio.PassThroughFeatureConverter())
  return [BYTES.decode(list(ex['inputs'])) for ex in ds.as_numpy_iterator()]


@pytest.mark.slow
def test_exemplars_follow_the_run_length():
  name = _task('t_fit_bytes')
  fixed = len('Task.\n\n') + len('Q: 4+4\nA:')  # 16 bytes; each exemplar 13; EOS takes one more
  assert fixed == 16 and all(len(e) == 13 for e in PIECES['exemplars'])
  whole = few_shot.join(PIECES['prefix'], PIECES['exemplars'], PIECES['query'])
  for length, kept in ((16 + 39 + 1, 3), (16 + 39, 2), (16 + 26 + 1, 2), (16 + 26, 1), (16 + 13 + 1, 1), (16 + 1, 0)):
    first, zero_shot = _inputs(name, length)
    assert first == few_shot.join(PIECES['prefix'], PIECES['exemplars'][:kept], PIECES['query']), length
    assert zero_shot == 'Task.\n\nQ: 4+4\nA:'
  assert _inputs(name, None)[0] == whole  # no length given: every exemplar


def test_source_counts_are_used_and_checked_on_the_joined_text():
  exact = _task('t_fit_bytes_counted', counts=(16, [13, 13, 13]))
  assert _inputs(exact, 16 + 26 + 1)[0] == few_shot.join(PIECES['prefix'], PIECES['exemplars'][:2], PIECES['query'])
  # Counts that undercount (as SentencePiece without newline ids may, the joined text being longer than the
  # sum of its pieces): the joined prompt is measured and exemplars dropped until it really fits.
  low = _task('t_fit_bytes_undercounted', counts=(1, [1, 1, 1]))
  assert _inputs(low, 16 + 26 + 1)[0] == few_shot.join(PIECES['prefix'], PIECES['exemplars'][:2], PIECES['query'])
  with pytest.raises(Exception, match='t_fit_bytes_undercounted'):
    _inputs(low, 16)


def test_max_tokens_caps_below_the_run_length():
  name = _task('t_fit_bytes_capped', max_tokens=16 + 13)
  assert _inputs(name, 512)[0] == 'Task.\n\nQ: 1+1\nA: 2\n\nQ: 4+4\nA:'


def test_zero_shot_that_does_not_fit():
  with pytest.raises(Exception, match=r't_fit_bytes_raise.*\b15 input tokens.*TASK_FEATURE_LENGTHS'):
    _inputs(_task('t_fit_bytes_raise'), 16)
  # 'keep': the zero-shot prompt goes on and seqio truncates it (a truncation count sees it).
  assert _inputs(_task('t_fit_bytes_keep', on_overflow='keep'), 10)[0] == 'Task.\n\nQ:'
  with pytest.raises(ValueError, match='on_overflow'):
    _inputs(_task('t_fit_bytes_bad', on_overflow='drop'), 10)
