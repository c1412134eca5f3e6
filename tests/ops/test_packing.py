"""flanx's vectorized packing yields exactly seqio's packed rows.

Reference: seqio.utils.trim_and_pack_dataset (its tf-ops packer) and seqio.EncDecFeatureConverter(pack=True), run
on the same datasets: random lengths with the edge cases seqio's rule meets (empty features, a zero token inside a
sequence, examples longer than the row, several windows and a short last one), and real Flan CoT rows tokenized
with the dev vocabulary.
"""

import csv

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')
seqio = pytest.importorskip('seqio')

from flanx.training import packing  # pylint: disable=g-import-not-at-top


def _dataset(examples, dtype=tf.int32):
  return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={'inputs': tf.TensorSpec([None], dtype),
                                                'targets': tf.TensorSpec([None], dtype)})


def _random_examples(n, max_inputs, max_targets, seed):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    inputs = rng.integers(1, 500, rng.integers(0, max_inputs + 1))
    targets = rng.integers(1, 500, rng.integers(0, max_targets + 1))
    if len(inputs) > 3 and rng.random() < 0.1:
      inputs[1] = 0  # seqio counts non-zero tokens: the example's length is then one shorter
    out.append({'inputs': inputs, 'targets': targets})
  return out


def _assert_same_rows(want, got):
  want, got = list(want.as_numpy_iterator()), list(got.as_numpy_iterator())
  assert len(got) == len(want) and want
  for w, g in zip(want, got):
    assert sorted(w) == sorted(g)
    for key in w:
      assert g[key].dtype == w[key].dtype, key
      np.testing.assert_array_equal(g[key], w[key], err_msg=key)


@pytest.mark.parametrize('n, max_inputs, max_targets, lengths, dtype', [
    (1500, 80, 24, {'inputs': 64, 'targets': 16}, tf.int32),  # 24 windows of 64 (the last short), some too long
    (700, 20, 40, {'inputs': 32, 'targets': 32}, tf.int64),
    (3, 6, 0, {'inputs': 8, 'targets': 4}, tf.int32),  # one short window; every targets empty
])
def test_trim_and_pack_equals_seqio(n, max_inputs, max_targets, lengths, dtype):
  examples = _random_examples(n, max_inputs, max_targets, seed=n)
  ds = _dataset(examples, dtype).cache()
  _assert_same_rows(seqio.utils.trim_and_pack_dataset(ds, lengths), packing.trim_and_pack(ds, lengths))


def test_converter_equals_seqio_on_flan_cot(shared_dir):
  folder = shared_dir / 'data' / 'flan_cot'
  if not folder.is_dir():
    pytest.skip(f'{folder} is absent (../shared beside the repo holds the Flan CoT files)')
  vocab = seqio.SentencePieceVocabulary(str(shared_dir / 'data' / 'vocab' / 'dev_8k.model'))
  with open(folder / 'gsm8k_train.tsv', newline='') as f:
    rows = [row for _, row in zip(range(600), csv.reader(f, delimiter='\t'))]
  lengths = {'inputs': 256, 'targets': 128}
  examples = [{'inputs': np.array(vocab.encode(question)[:lengths['inputs'] - 1] + [1], np.int32),
               'targets': np.array(vocab.encode(f'{rationale} So the answer is {answer}.')[:lengths['targets'] - 1]
                                   + [1], np.int32)}
              for question, answer, rationale in rows]  # trimmed as a seqio task's pipeline trims them
  ds = _dataset(examples).cache()
  _assert_same_rows(seqio.EncDecFeatureConverter(pack=True)(ds, lengths),
                    packing.EncDecFeatureConverter(pack=True)(ds, lengths))
  _assert_same_rows(seqio.EncDecFeatureConverter(pack=False)(ds, lengths),
                    packing.EncDecFeatureConverter(pack=False)(ds, lengths))
