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


def _plain_tf(fn):
  """`fn` marked for AutoGraph to leave alone: plain TF ops, static Python control flow only
  (converting it would only cost tracing time inside tf.data maps)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.autograph.experimental.do_not_convert(fn)


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
    # pylint: disable-next=protected-access
    return type(self) is type(other) and self._base == other._base

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
    return _plain_tf(self._encode_tf_impl)(s)

  def _encode_tf_impl(self, s):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if s.shape.rank != 0:
      return tf.map_fn(self._encode_tf_impl, s,
                       fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))
    # Lines, then tab-separated cells: every piece is followed by a tab, or by a newline when
    # it ends its line; the last piece of the text by nothing. (tf.strings.split is much
    # cheaper than a regex split.)
    cells = tf.strings.split(tf.strings.split(s, '\n'), '\t')
    pieces = cells.flat_values
    line_ends = tf.cast(cells.row_limits() - 1, tf.int32)[:, None]
    ends_line = tf.scatter_nd(line_ends, tf.ones_like(line_ends[:, 0], tf.bool),
                              tf.shape(pieces))
    separators = tf.where(ends_line, self.newline_id, self.tab_id)
    ids = self._base.tf_tokenizer.tokenize(pieces)
    separators = tf.RaggedTensor.from_tensor(tf.cast(separators, ids.dtype)[:, None])
    return tf.concat([ids, separators], axis=1).flat_values[:-1]

  def _decode_tf(self, ids):
    return _plain_tf(self._decode_tf_impl)(ids)

  def _decode_tf_impl(self, ids):
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
    return _plain_tf(lambda x: self._base.encode_tf(_dolly_escape_tf(x)))(s)

  def _decode_tf(self, ids):
    return _plain_tf(lambda x: _dolly_unescape_tf(self._base.decode_tf(x)))(ids)


def newline_token_map(vocabulary: seqio.Vocabulary) -> Mapping[str, int]:
  """Characters with dedicated ids: {'\\n': 32100, '\\t': 32101} for T5 lossless, else {}."""
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
    resolved = self.resolve()
    return hash((type(resolved).__name__, getattr(resolved, 'sentencepiece_model_file', None)))

  def __getstate__(self):
    # Keeps the resolution, so a copy elsewhere (another process) means the same vocabulary.
    return {'_kwargs': self._kwargs, '_resolved': self._resolved, '_extra_ids': 0}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __str__(self) -> str:
    return f'LazyVocabulary({self._kwargs}) -> {self.resolve()}'
