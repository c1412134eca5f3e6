"""Vocabularies: lossless newline ids (Python and TF paths agree), the Dolly convention, config."""

import os
import pathlib
import pickle
import random

import gin
import pytest
import seqio
import tensorflow as tf

from tasks import vocab as vocab_lib

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared'
DEV_VOCAB = SHARED / 'data' / 'vocab' / 'dev_8k.model'
SEQIO_VOCAB = (pathlib.Path(seqio.__file__).parent / 'test_data' / 'sentencepiece' /
               'sentencepiece.model')
WORDS = ('the', 'cat', 'sat', 'on', 'a', 'mat', '42', 'answer:', 'so,', 'step', '(A)', 'x=3.5',
         'Natalia', 'sold', 'clips', 'is', 'yes', 'no', '-', 'options', '?', 'é')


def needs_dev_vocab():
  if not DEV_VOCAB.exists():
    pytest.skip(f'shared dev vocabulary absent ({DEV_VOCAB}); it lives beside the repo')


def random_texts(n, seed):
  """Words joined by spaces, newlines and tabs; some lines empty or indented."""
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    parts = []
    for _ in range(rng.randint(0, 12)):
      parts.append(rng.choice(WORDS))
      parts.append(rng.choice([' ', ' ', ' ', '\n', '\t', '\n\n', '\n\t', ' \n']))
    texts.append(''.join(parts[:-1]) if rng.random() < 0.8 else ''.join(parts))
  return texts


def pieces_round_trip(base, text):
  return all(base.decode(base.encode(p)) == p for p in text.replace('\t', '\n').split('\n'))


@pytest.mark.parametrize('which', ['dev', 'seqio_test'])
def test_lossless_ids_and_size(which):
  if which == 'dev':
    needs_dev_vocab()
  path = str(DEV_VOCAB if which == 'dev' else SEQIO_VOCAB)
  vocab = vocab_lib.get_vocabulary(path, 'lossless')
  base = seqio.SentencePieceVocabulary(path, extra_ids=100)
  pieces = base.tokenizer.GetPieceSize()  # SentencePiece pieces plus the 100 sentinels
  assert vocab.newline_id == pieces and vocab.tab_id == pieces + 1
  assert vocab.vocab_size == pieces + 17  # newline, tab, runs of 2..16 spaces
  assert vocab_lib.newline_token_map(vocab) == {'\n': pieces, '\t': pieces + 1,
                                                **{' ' * k: pieces + k for k in range(2, 17)}}
  assert vocab.encode('a\nb\tc') == (base.encode('a') + [pieces] + base.encode('b') +
                                     [pieces + 1] + base.encode('c'))
  assert vocab.eos_id == 1 and vocab.pad_id == 0 and vocab.unk_id == 2


@pytest.mark.slow
def test_lossless_round_trip_python_and_tf():
  needs_dev_vocab()
  vocab = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  base = vocab.base_vocabulary
  texts = random_texts(300, seed=7)
  eligible = [t for t in texts if pieces_round_trip(base, t)]
  assert len(eligible) > 0.4 * len(texts)  # the property is not tested vacuously
  py_ids = [vocab.encode(t) for t in texts]
  for text, ids in zip(eligible, [vocab.encode(t) for t in eligible]):
    assert vocab.decode(ids) == text
  # TF, in graph mode inside tf.data as seqio runs it.
  ds = tf.data.Dataset.from_tensor_slices(texts).map(vocab.encode_tf)
  tf_ids = [x.tolist() for x in ds.as_numpy_iterator()]
  assert tf_ids == py_ids
  ids_with_eos = [ids + [1, 0, 0] for ids in py_ids]
  ragged = tf.ragged.constant(ids_with_eos, dtype=tf.int32)
  decoded = tf.data.Dataset.from_tensor_slices(ragged).map(vocab.decode_tf)
  assert [x.decode('utf-8') for x in decoded.as_numpy_iterator()] == [
      vocab.decode(ids) for ids in ids_with_eos]
  # Batched decode (seqio decodes [batch, length] in TF).
  batch = tf.ragged.constant(py_ids[:5], dtype=tf.int32).to_tensor()
  decoded = [b.decode('utf-8') for b in vocab.decode_tf(batch).numpy()]
  assert decoded == [vocab.decode(ids) for ids in py_ids[:5]]


def test_lossless_keeps_what_sentencepiece_loses():
  needs_dev_vocab()
  text = 'Step 1:\n\tadd 2\nStep 2:\n\tanswer'
  lossless = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  plain = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'none')
  assert lossless.decode(lossless.encode(text)) == text
  assert plain.decode(plain.encode(text)) == 'Step 1: add 2 Step 2: answer'


def test_dolly_convention_python_and_tf():
  needs_dev_vocab()
  vocab = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'dolly')
  base = vocab.base_vocabulary
  text = 'List:\n- one\t(first)\n\n- two  '
  escaped = 'List: <_LB_> - one <_T_> (first) <_LB_> <_LB_> - two'
  assert vocab_lib.dolly_escape(text) == escaped
  assert vocab.encode(text) == base.encode(escaped)
  assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == base.encode(escaped)
  ids = vocab.encode(text)
  assert vocab.decode(ids) == 'List:\n- one\t(first)\n\n- two'
  assert vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == vocab.decode(ids)
  # What a T5 model emits: '<' lost or turned into the unk surface form.
  assert vocab_lib.dolly_unescape('a _LB_> b \u2047 _T_> c \u2047_LB_> d') == 'a\nb\tc\nd'


def test_precedence_argument_gin_env_default(monkeypatch):
  needs_dev_vocab()
  monkeypatch.delenv(vocab_lib.VOCAB_ENV, raising=False)
  monkeypatch.delenv(vocab_lib.NEWLINE_MODE_ENV, raising=False)
  default = vocab_lib.get_vocabulary()
  assert default.sentencepiece_model_file == vocab_lib.T5_VOCAB_PATH  # not loaded: no network
  assert isinstance(default, vocab_lib.LosslessNewlineVocabulary)
  monkeypatch.setenv(vocab_lib.VOCAB_ENV, str(SEQIO_VOCAB))
  assert vocab_lib.get_vocabulary().sentencepiece_model_file == str(SEQIO_VOCAB)
  with gin.unlock_config():
    gin.bind_parameter('tasks.vocab.get_vocabulary.path', str(DEV_VOCAB))
  try:
    assert vocab_lib.get_vocabulary().sentencepiece_model_file == str(DEV_VOCAB)
    explicit = vocab_lib.get_vocabulary(str(SEQIO_VOCAB), newline_mode='none')
    assert explicit.sentencepiece_model_file == str(SEQIO_VOCAB)
    assert isinstance(explicit, seqio.SentencePieceVocabulary)
  finally:
    gin.clear_config()
  assert isinstance(vocab_lib.get_vocabulary('byte'), seqio.ByteVocabulary)
  with pytest.raises(ValueError, match='newline_mode'):
    vocab_lib.get_vocabulary(str(DEV_VOCAB), newline_mode='crlf')


def test_lazy_vocabulary_resolves_at_first_use(monkeypatch):
  needs_dev_vocab()
  monkeypatch.delenv(vocab_lib.VOCAB_ENV, raising=False)
  lazy = vocab_lib.LazyVocabulary()
  monkeypatch.setenv(vocab_lib.VOCAB_ENV, str(DEV_VOCAB))  # set after construction
  assert lazy.sentencepiece_model_file == str(DEV_VOCAB)
  assert lazy.newline_id == 8100 and lazy.vocab_size == 8117
  assert lazy == vocab_lib.get_vocabulary(str(DEV_VOCAB))
  assert lazy.encode('a\nb') == vocab_lib.get_vocabulary(str(DEV_VOCAB)).encode('a\nb')
  assert list(vocab_lib.newline_token_map(lazy).items())[:3] == [('\n', 8100), ('\t', 8101), ('  ', 8102)]
  # Pickles without the resolved model (gin deep-copies configurable arguments).
  restored = pickle.loads(pickle.dumps(lazy))
  assert restored == lazy
  assert os.environ[vocab_lib.VOCAB_ENV] == str(DEV_VOCAB)


def test_a_lazy_vocabulary_follows_settings_changed_after_first_use(monkeypatch):
  """A setting made after an earlier resolution takes effect (no stale vocabulary is kept)."""
  lazy = vocab_lib.LazyVocabulary()
  monkeypatch.setenv(vocab_lib.VOCAB_ENV, 'byte')
  assert isinstance(lazy.resolve(), seqio.ByteVocabulary)
  monkeypatch.setenv(vocab_lib.VOCAB_ENV, str(SEQIO_VOCAB))
  monkeypatch.setenv(vocab_lib.NEWLINE_MODE_ENV, 'none')
  assert lazy.vocab_size == vocab_lib.get_vocabulary(str(SEQIO_VOCAB), 'none').vocab_size != 259
  gin.clear_config()
  try:
    gin.bind_parameter('get_vocabulary.path', 'byte')
    assert isinstance(lazy.resolve(), seqio.ByteVocabulary)
  finally:
    gin.clear_config()
