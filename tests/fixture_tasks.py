"""A tiny in-memory seqio task for engine tests: copy/reverse/sort of short letter strings, byte vocabulary."""

from __future__ import annotations


import numpy as np
import seqio
import tensorflow as tf

TASK = 'flanx_test_copy'


def _examples(split: str, n: int) -> dict[str, list[str]]:
  rng = np.random.RandomState({'train': 0, 'validation': 1}[split])
  inputs, targets = [], []
  for _ in range(n):
    word = ''.join(rng.choice(list('abcdef'), rng.randint(2, 7)))
    op = rng.choice(['copy', 'reverse', 'sort'])
    inputs.append(f'{op}: {word}')
    targets.append({'copy': word, 'reverse': word[::-1], 'sort': ''.join(sorted(word))}[op])
  return {'inputs': inputs, 'targets': targets}


def _source(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
  del shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices(_examples(split, {'train': 512, 'validation': 64}[split]))


def register() -> str:
  """Registers the task once; returns its name."""
  if TASK not in seqio.TaskRegistry.names():
    vocab = seqio.ByteVocabulary()
    seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(_source, splits=('train', 'validation')),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={'inputs': seqio.Feature(vocab, add_eos=True),
                         'targets': seqio.Feature(vocab, add_eos=True)},
        metric_fns=[lambda targets, predictions: {
            'exact_match': 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}])
  return TASK


register()
