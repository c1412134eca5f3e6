"""Vocabularies for flanx tasks: T5's SentencePiece model with a choice of newline handling.

T5's SentencePiece model has no piece for newline or tab: it folds them into spaces. Three modes:

- 'lossless' (default): `\\n` and `\\t` get dedicated ids in the unused embedding rows right after
  the SentencePiece ids (32,100 and 32,101 for T5's vocabulary). Text is split at newlines and tabs
  and each remaining piece is encoded by SentencePiece on its own. "Round-trips" means exactly:
  `decode(encode(text)) == text` for every text whose newline- and tab-free pieces SentencePiece
  itself round-trips (SentencePiece drops leading, trailing and repeated spaces of each piece and
  maps characters it does not know to unk). The same ids are what Hugging Face's T5 tokenizer
  assigns when the exporter adds `AddedToken("\\n")` then `AddedToken("\\t")`;
  `newline_token_map()` returns the mapping the exporter carries over.
- 'dolly': the flant5-dolly-xxl convention, applied as text pre/postprocessing around
  SentencePiece: `\\n` -> ` <_LB_> `, `\\t` -> ` <_T_> `, whitespace runs joined to one space; on
  decode the markers (also the mangled forms a T5 model emits, e.g. `_LB_>` or `⁇ _LB_>`) become
  `\\n` / `\\t` again. Lossy for whitespace, compatible with that model.
- 'none': plain SentencePiece (newlines and tabs become spaces).

The path 'byte' selects seqio's ByteVocabulary (UTF-8 bytes, newlines included natively).
"""

import functools
import os
import re
from typing import Any, Mapping, Optional, Sequence

import gin
import seqio

T5_VOCAB_PATH = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
VOCAB_ENV = 'FLANX_VOCAB'
NEWLINE_MODE_ENV = 'FLANX_NEWLINE_MODE'
NEWLINE_MODES = ('lossless', 'dolly', 'none')
BYTE = 'byte'

LINE_BREAK_MARKER = '<_LB_>'
TAB_MARKER = '<_T_>'
# Whitespace both Python's `re` and TF's RE2 agree on (RE2's \s lacks \v and unicode spaces).
_WS = '[ \\t\\n\\r\\f\\v]+'
# Markers as a T5 model emits them: '<' is not in T5's vocabulary, so it may come back as the
# unk surface form '⁇' or vanish; the closing '>' may vanish too.
_LB_OUT = '[ ]*(?:<|\u2047)?[ ]*_LB_>?[ ]*'
_T_OUT = '[ ]*(?:<|\u2047)?[ ]*_T_>?[ ]*'


def dolly_escape(text: str) -> str:
  """Applies the flant5-dolly-xxl newline/tab convention to `text` (Python)."""
  text = text.replace('\n', f' {LINE_BREAK_MARKER} ').replace('\t', f' {TAB_MARKER} ')
  return re.sub(_WS, ' ', text).strip(' ')


def dolly_unescape(text: str) -> str:
  """Maps `<_LB_>` / `<_T_>` markers (and their mangled forms) back to newline / tab."""
  return re.sub(_T_OUT, '\t', re.sub(_LB_OUT, '\n', text))


def _dolly_escape_tf(text):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  text = tf.strings.regex_replace(text, '\n', f' {LINE_BREAK_MARKER} ')
  text = tf.strings.regex_replace(text, '\t', f' {TAB_MARKER} ')
  text = tf.strings.regex_replace(text, _WS, ' ')
  return tf.strings.regex_replace(text, '^ | $', '')


def _dolly_unescape_tf(text):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.strings.regex_replace(tf.strings.regex_replace(text, _LB_OUT, '\n'), _T_OUT, '\t')


class _Wrapper(seqio.Vocabulary):
  """A vocabulary delegating special ids to a SentencePiece base vocabulary."""

  def __init__(self, base: seqio.SentencePieceVocabulary):
    self._base = base
    super().__init__(extra_ids=0)

  @property
  def base_vocabulary(self) -> seqio.SentencePieceVocabulary:
    return self._base

  @property
  def sentencepiece_model_file(self) -> str:
    return self._base.sentencepiece_model_file

  @property
  def bos_id(self) -> Optional[int]:
    return self._base.bos_id

  @property
  def eos_id(self) -> Optional[int]:
    return self._base.eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self._base.unk_id

  def __eq__(self, other):
    return type(self) is type(other) and self._base == other._base  # pylint: disable=protected-access

  def __hash__(self):
    return hash((type(self).__name__, self.sentencepiece_model_file))

  def __str__(self) -> str:
    return f'{type(self).__name__}({self._base})'


class LosslessNewlineVocabulary(_Wrapper):
  """SentencePiece plus two ids for newline and tab, right after the SentencePiece ids."""

  @property
  def newline_id(self) -> int:
    return self._base.vocab_size

  @property
  def tab_id(self) -> int:
    return self._base.vocab_size + 1

  @property
  def _base_vocab_size(self) -> int:
    return self._base.vocab_size + 2

  def _encode(self, s: str) -> Sequence[int]:
    ids = []
    for piece in re.split('([\n\t])', s):
      if piece == '\n':
        ids.append(self.newline_id)
      elif piece == '\t':
        ids.append(self.tab_id)
      elif piece:
        ids.extend(self._base.encode(piece))
    return ids

  def _decode(self, ids) -> str:
    separators = {self.newline_id: '\n', self.tab_id: '\t'}
    out, segment = [], []
    for i in ids:
      i = int(i)
      if i in separators:
        out.append(self._base.decode(segment) + separators[i])
        segment = []
      else:
        segment.append(i)
    out.append(self._base.decode(segment))
    return ''.join(out)

  def _encode_tf(self, s):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_text as tf_text  # pylint: disable=g-import-not-at-top
    if s.shape.rank != 0:
      return tf.map_fn(self._encode_tf, s,
                       fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))
    # Pieces in order, separators kept as their own pieces.
    pieces = tf_text.regex_split(tf.reshape(s, [1]), '[\n\t]', '[\n\t]').flat_values
    is_newline = tf.equal(pieces, '\n')
    is_sep = tf.logical_or(is_newline, tf.equal(pieces, '\t'))
    text_ids = self._base.tf_tokenizer.tokenize(tf.where(is_sep, '', pieces))
    sep_ids = tf.where(is_newline, self.newline_id, self.tab_id)
    sep_rows = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(tf.cast(sep_ids, text_ids.dtype), is_sep), tf.cast(is_sep, tf.int64))
    return tf.concat([sep_rows, text_ids], axis=1).flat_values

  def _decode_tf(self, ids):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if ids.shape.rank != 1:
      return tf.map_fn(self._decode_tf, ids, fn_output_signature=tf.string)
    is_newline = tf.equal(ids, self.newline_id)
    is_sep = tf.logical_or(is_newline, tf.equal(ids, self.tab_id))
    # Segment k holds the ids after the k-th separator.
    segment = tf.cumsum(tf.cast(is_sep, tf.int64))
    keep = tf.logical_not(is_sep)
    segments = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(ids, keep), tf.boolean_mask(segment, keep),
        nrows=tf.reduce_sum(tf.cast(is_sep, tf.int64)) + 1)
    texts = self._base.tf_tokenizer.detokenize(segments)
    seps = tf.where(tf.boolean_mask(is_newline, is_sep), '\n', '\t')
    prefixes = tf.concat([[''], seps], axis=0)
    return tf.strings.reduce_join(tf.strings.join([prefixes, texts]))


class DollyNewlineVocabulary(_Wrapper):
  """SentencePiece with the flant5-dolly-xxl `<_LB_>` / `<_T_>` text convention around it."""

  @property
  def _base_vocab_size(self) -> int:
    return self._base.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._base.encode(dolly_escape(s))

  def _decode(self, ids) -> str:
    return dolly_unescape(self._base.decode(ids))

  def _encode_tf(self, s):
    return self._base.encode_tf(_dolly_escape_tf(s))

  def _decode_tf(self, ids):
    return _dolly_unescape_tf(self._base.decode_tf(ids))


def newline_token_map(vocabulary: seqio.Vocabulary) -> Mapping[str, int]:
  """Characters with dedicated ids in `vocabulary` ({'\\n': 32100, '\\t': 32101} for T5 lossless)."""
  if isinstance(vocabulary, LazyVocabulary):
    vocabulary = vocabulary.resolve()
  if isinstance(vocabulary, LosslessNewlineVocabulary):
    return {'\n': vocabulary.newline_id, '\t': vocabulary.tab_id}
  return {}


def newline_mode_of(vocabulary: seqio.Vocabulary) -> str:
  """The newline mode a vocabulary implements: 'lossless', 'dolly', 'none' or 'byte'."""
  if isinstance(vocabulary, LazyVocabulary):
    vocabulary = vocabulary.resolve()
  if isinstance(vocabulary, LosslessNewlineVocabulary):
    return 'lossless'
  if isinstance(vocabulary, DollyNewlineVocabulary):
    return 'dolly'
  if isinstance(vocabulary, seqio.ByteVocabulary):
    return 'byte'
  return 'none'


@functools.lru_cache(maxsize=None)
def _build(path: str, newline_mode: str, extra_ids: int) -> seqio.Vocabulary:
  if path == BYTE:
    return seqio.ByteVocabulary()
  if newline_mode not in NEWLINE_MODES:
    raise ValueError(f'newline_mode must be one of {NEWLINE_MODES}, got {newline_mode!r}')
  base = seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
  if newline_mode == 'lossless':
    return LosslessNewlineVocabulary(base)
  if newline_mode == 'dolly':
    return DollyNewlineVocabulary(base)
  return base


@gin.configurable
def get_vocabulary(path: Optional[str] = None, newline_mode: Optional[str] = None,
                   extra_ids: int = 100) -> seqio.Vocabulary:
  """The task vocabulary: argument > gin binding > $FLANX_VOCAB > T5's gs:// model ('byte' too)."""
  path = path or os.environ.get(VOCAB_ENV) or T5_VOCAB_PATH
  newline_mode = newline_mode or os.environ.get(NEWLINE_MODE_ENV) or 'lossless'
  return _build(path, newline_mode, extra_ids)


class LazyVocabulary(seqio.Vocabulary):
  """Stands for `get_vocabulary(**kwargs)`, resolved at first use (after gin and env are set)."""

  def __init__(self, **kwargs: Any):
    self._kwargs = dict(kwargs)
    self._resolved = None
    super().__init__(extra_ids=0)

  def resolve(self) -> seqio.Vocabulary:
    """Returns the concrete vocabulary, building it on first call."""
    if self._resolved is None:
      self._resolved = get_vocabulary(**self._kwargs)
    return self._resolved

  def __getattr__(self, name):
    if name.startswith('__') or name in ('_kwargs', '_resolved'):
      raise AttributeError(name)
    return getattr(self.resolve(), name)

  @property
  def bos_id(self):
    return self.resolve().bos_id

  @property
  def eos_id(self):
    return self.resolve().eos_id

  @property
  def unk_id(self):
    return self.resolve().unk_id

  @property
  def pad_id(self):
    return self.resolve().pad_id

  @property
  def extra_ids(self):
    return self.resolve().extra_ids

  @property
  def vocab_size(self):
    return self.resolve().vocab_size

  @property
  def _base_vocab_size(self):
    return self.resolve()._base_vocab_size  # pylint: disable=protected-access

  def encode(self, s):
    return self.resolve().encode(s)

  def decode(self, ids):
    return self.resolve().decode(ids)

  def encode_tf(self, s):
    return self.resolve().encode_tf(s)

  def decode_tf(self, ids):
    return self.resolve().decode_tf(ids)

  def _encode(self, s):
    return self.resolve()._encode(s)  # pylint: disable=protected-access

  def _decode(self, ids):
    return self.resolve()._decode(ids)  # pylint: disable=protected-access

  def _encode_tf(self, s):
    return self.resolve()._encode_tf(s)  # pylint: disable=protected-access

  def _decode_tf(self, ids):
    return self.resolve()._decode_tf(ids)  # pylint: disable=protected-access

  def __eq__(self, other):
    if isinstance(other, LazyVocabulary):
      other = other.resolve()
    return self.resolve() == other

  def __hash__(self):
    return hash(self.resolve())

  def __getstate__(self):
    return {'_kwargs': self._kwargs, '_resolved': None, '_extra_ids': 0}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __str__(self) -> str:
    return f'LazyVocabulary({self._kwargs}) -> {self.resolve()}'
