"""Newline modes on text nobody here wrote (issue 11, section 4): Python's own source, a calendar table and
the Zen of Python round-trip in lossless mode (indentation and space runs included), Python and TF agree;
the dolly clean-up leaves identifiers such as MAX_LB_VALUE / PY_SSIZE_T_MAX alone."""

import calendar
import codecs
import inspect
import pathlib
import random
import textwrap
import this

import pytest
import seqio
import tensorflow as tf

from tasks import vocab as vocab_lib

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared'
DEV_VOCAB = SHARED / 'data' / 'vocab' / 'dev_8k.model'
SEQIO_VOCAB = (pathlib.Path(seqio.__file__).parent / 'test_data' / 'sentencepiece' / 'sentencepiece.model')


@pytest.fixture(scope='module')
def lossless():
  if not DEV_VOCAB.exists():
    pytest.skip(f'shared dev vocabulary absent ({DEV_VOCAB})')
  return vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')


def real_texts():
  return {
      'python_source': inspect.getsource(textwrap.dedent),  # CPython's Lib/textwrap.py, 4-space indents
      'python_class': inspect.getsource(textwrap.TextWrapper._split),
      'zen_of_python': codecs.decode(this.s, 'rot13'),
  }


def encode_both(vocabulary, text):
  py = vocabulary.encode(text)
  tf_ids = vocabulary.encode_tf(tf.constant(text)).numpy().tolist()
  in_graph = next(tf.data.Dataset.from_tensors(text).map(vocabulary.encode_tf).as_numpy_iterator()).tolist()
  assert py == tf_ids == in_graph
  return py


@pytest.mark.parametrize('name', sorted(real_texts()))
def test_lossless_round_trips_real_text(lossless, name):
  text = real_texts()[name]
  ids = encode_both(lossless, text)
  assert lossless.decode(ids) == text
  assert lossless.decode_tf(tf.constant(ids)).numpy().decode() == text
  if name.startswith('python'):  # indentation is what plain SentencePiece loses
    plain = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'none')
    assert plain.decode(plain.encode(text)) != text
    assert any(i in ids for i in (lossless.whitespace_ids[' ' * 4], lossless.whitespace_ids[' ' * 8]))


def test_lossless_table_loses_exactly_single_edge_spaces(lossless):
  table = calendar.TextCalendar().formatmonth(2024, 2)  # right-aligned day columns
  ids = encode_both(lossless, table)
  # The documented loss: a lone space at a line start (next to a newline) is SentencePiece's to drop.
  expected = '\n'.join(l[1:] if l.startswith(' ') and not l.startswith('  ') else l for l in table.split('\n'))
  assert lossless.decode(ids) == expected != table
  assert '  1  2  3  4' in expected  # runs inside lines survive


def test_whitespace_ids_and_leftmost_longest_split(lossless):
  base = lossless.base_vocabulary.vocab_size  # 8000 pieces + 100 sentinels
  assert vocab_lib.newline_token_map(lossless) == {t: base + i for i, t in enumerate(
      ['\n', '\t'] + [' ' * k for k in range(2, 17)])}
  assert lossless.vocab_size == base + 17
  space = lambda k: base + k  # the run of k spaces (k >= 2) has id base + k
  assert lossless.encode('a' + ' ' * 20 + 'b') == (
      lossless.base_vocabulary.encode('a') + [space(16), space(4)] + lossless.base_vocabulary.encode('b'))
  assert lossless.decode(lossless.encode('a' + ' ' * 17 + 'b')) == 'a' + ' ' * 16 + 'b'  # 16 + a lone 1


def test_lossless_python_and_tf_agree_on_random_whitespace(lossless):
  rng = random.Random(11)
  words = ('def', 'x', 'return', 'the', 'cat', '42', '(a)', 'é', 'so,')
  texts = []
  for _ in range(150):
    parts = []
    for _ in range(rng.randint(0, 10)):
      parts += [rng.choice(words), rng.choice([' ', '\n', '\t', ' ' * rng.randint(1, 40), '\n' + ' ' * 4])]
    texts.append(''.join(parts))
  ids = [lossless.encode(t) for t in texts]
  ds = tf.data.Dataset.from_tensor_slices(texts).map(lossless.encode_tf)
  assert [x.tolist() for x in ds.as_numpy_iterator()] == ids
  batch = tf.ragged.constant(ids[:8], dtype=tf.int32).to_tensor()
  assert [b.decode() for b in lossless.decode_tf(batch).numpy()] == [lossless.decode(i) for i in ids[:8]]


def test_seqio_test_vocabulary_sizes():
  vocabulary = vocab_lib.get_vocabulary(str(SEQIO_VOCAB), 'lossless')
  pieces = seqio.SentencePieceVocabulary(str(SEQIO_VOCAB), extra_ids=100).vocab_size
  assert vocabulary.vocab_size == pieces + 17 and vocabulary.newline_id == pieces


IDENTIFIERS = 'if (n > PY_SSIZE_T_MAX) n = MAX_LB_VALUE; use _T_ and _LB_ as names'


def test_dolly_unescape_leaves_identifiers_alone():
  assert vocab_lib.dolly_unescape(IDENTIFIERS) == IDENTIFIERS
  # Every form the model emits still becomes a newline / tab.
  emitted = 'a <_LB_> b _LB_> c \u2047 _LB_> d \u2047_LB_> e <_LB_ f <_T_> g _T_> h \u2047 _T_> i'
  assert vocab_lib.dolly_unescape(emitted) == 'a\nb\nc\nd\ne\nf\tg\th\ti'
  for text in (IDENTIFIERS, emitted):
    got = vocab_lib._dolly_unescape_tf(tf.constant(text)).numpy().decode()  # pylint: disable=protected-access
    assert got == vocab_lib.dolly_unescape(text)


def test_dolly_vocabulary_round_trips_identifiers():
  if not DEV_VOCAB.exists():
    pytest.skip(f'shared dev vocabulary absent ({DEV_VOCAB})')
  dolly = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'dolly')
  text = 'if n > PY_SSIZE_T_MAX:\n\tn = MAX_LB_VALUE'
  base = dolly.base_vocabulary
  escaped = vocab_lib.dolly_escape(text)
  assert base.decode(base.encode(escaped)) == escaped  # SentencePiece itself keeps this text
  assert dolly.decode(dolly.encode(text)) == text
  assert dolly.decode_tf(tf.constant(dolly.encode(text))).numpy().decode() == text
