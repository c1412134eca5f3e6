"""Vocabularies for flanx tasks: T5's SentencePiece model with a choice of newline handling.

T5's SentencePiece model has no piece for newline or tab: it folds them into spaces. Three modes:

- 'lossless' (default): `\\n`, `\\t` and runs of 2 to 16 spaces get dedicated ids in the unused
  embedding rows right after the SentencePiece ids (T5: 32,100 `\\n`, 32,101 `\\t`, 32,102..32,116 for
  runs of 2..16 spaces; Flan-T5 has 28 unused rows). Text is split at these strings, leftmost-longest
  (a run of 20 spaces is 16 + 4), and each remaining piece is encoded by SentencePiece on its own. So
  indentation, aligned columns and blank-padded lines round-trip. What is still lost, exactly: a single
  space at the start or end of a piece (next to a newline, tab, space run or the text's ends, e.g. one
  trailing space), one space of a run of 17, 33, ... spaces (16 + 1: the lone space is SentencePiece's),
  and whatever SentencePiece itself does not round-trip (characters it maps to unk, normalization such as
  NFKC). These are exactly the ids Hugging Face's T5 tokenizer assigns when the exporter adds the same
  strings as `AddedToken`s in this order (its added-token matching is leftmost-longest too);
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
from typing import Any, Dict, Mapping, Optional, Sequence

import gin
import seqio

T5_VOCAB_PATH = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
VOCAB_ENV = 'FLANX_VOCAB'
NEWLINE_MODE_ENV = 'FLANX_NEWLINE_MODE'
NEWLINE_MODES = ('lossless', 'dolly', 'none')
BYTE = 'byte'

# Strings with their own ids in lossless mode, in id order: newline, tab, then runs of 2..16 spaces.
WHITESPACE_TOKENS = ('\n', '\t') + tuple(' ' * k for k in range(2, 17))
# Longest first: Python's `re` and RE2 take the first alternative that matches, so this splits
# leftmost-longest, as Hugging Face's added-token matcher does.
_WHITESPACE_SPLIT = '|'.join(re.escape(t) for t in sorted(WHITESPACE_TOKENS, key=len, reverse=True))

LINE_BREAK_MARKER = '<_LB_>'
TAB_MARKER = '<_T_>'
# Whitespace both Python's `re` and TF's RE2 agree on (RE2's \s lacks \v and unicode spaces).
_WS = '[ \\t\\n\\r\\f\\v]+'
# Markers as a T5 model emits them: '<' is not in T5's vocabulary, so it may come back as the
# unk surface form '⁇' or vanish; the closing '>' may vanish too, but never both: a bare `_LB_` / `_T_`
# is left alone, so identifiers such as MAX_LB_VALUE or PY_SSIZE_T_MAX survive decoding.
_LB_OUT = '[ ]*(?:(?:<|\u2047)[ ]*_LB_>?|_LB_>)[ ]*'
_T_OUT = '[ ]*(?:(?:<|\u2047)[ ]*_T_>?|_T_>)[ ]*'


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
  """SentencePiece plus ids for newline, tab and runs of 2..16 spaces, right after SentencePiece's."""

  @property
  def newline_id(self) -> int:
    return self._base.vocab_size

  @property
  def tab_id(self) -> int:
    return self._base.vocab_size + 1

  @property
  def whitespace_ids(self) -> Dict[str, int]:
    """{'\\n': first free id, '\\t': next, '  ': next, ..., 16 spaces: last}."""
    return {t: self._base.vocab_size + i for i, t in enumerate(WHITESPACE_TOKENS)}

  @property
  def _base_vocab_size(self) -> int:
    return self._base.vocab_size + len(WHITESPACE_TOKENS)

  def _encode(self, s: str) -> Sequence[int]:
    ids, whitespace = [], self.whitespace_ids
    for piece in re.split(f'({_WHITESPACE_SPLIT})', s):
      if piece in whitespace:
        ids.append(whitespace[piece])
      elif piece:
        ids.extend(self._base.encode(piece))
    return ids

  def _decode(self, ids) -> str:
    first = self.newline_id
    out, segment = [], []
    for i in ids:
      i = int(i)
      if first <= i < first + len(WHITESPACE_TOKENS):
        out.append(self._base.decode(segment) + WHITESPACE_TOKENS[i - first])
        segment = []
      else:
        segment.append(i)
    out.append(self._base.decode(segment))
    return ''.join(out)

  def _encode_tf(self, s):
    return _plain_tf(self._encode_tf_impl)(s)

  def _encode_tf_impl(self, s):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_text as tf_text  # pylint: disable=g-import-not-at-top
    if s.shape.rank != 0:
      return tf.map_fn(self._encode_tf_impl, s,
                       fn_output_signature=tf.RaggedTensorSpec([None], tf.int32))
    # The text split as in _encode (RE2 keeps the matched whitespace strings as pieces), then each
    # piece is either one whitespace id or SentencePiece's ids for it.
    pieces = tf_text.regex_split(s[None], _WHITESPACE_SPLIT, _WHITESPACE_SPLIT).flat_values
    matches = tf.equal(pieces[:, None], tf.constant(WHITESPACE_TOKENS)[None, :])
    is_space = tf.reduce_any(matches, axis=1)
    text_ids = self._base.tf_tokenizer.tokenize(tf.where(is_space, '', pieces))
    space_ids = tf.cast(tf.argmax(tf.cast(matches, tf.int32), axis=1), text_ids.dtype) + self.newline_id
    space_ids = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(space_ids, is_space),
                                                 tf.cast(is_space, tf.int64))
    return tf.concat([text_ids, space_ids], axis=1).flat_values

  def _decode_tf(self, ids):
    return _plain_tf(self._decode_tf_impl)(ids)

  def _decode_tf_impl(self, ids):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if ids.shape.rank != 1:
      return tf.map_fn(self._decode_tf, ids, fn_output_signature=tf.string)
    offset = ids - self.newline_id
    is_sep = tf.logical_and(offset >= 0, offset < len(WHITESPACE_TOKENS))
    # Segment k holds the ids after the k-th separator.
    segment = tf.cumsum(tf.cast(is_sep, tf.int64))
    keep = tf.logical_not(is_sep)
    segments = tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(ids, keep), tf.boolean_mask(segment, keep),
        nrows=tf.reduce_sum(tf.cast(is_sep, tf.int64)) + 1)
    texts = self._base.tf_tokenizer.detokenize(segments)
    seps = tf.gather(tf.constant(WHITESPACE_TOKENS), tf.boolean_mask(offset, is_sep))
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
  """Whitespace strings with dedicated ids, in id order: for T5 lossless {'\\n': 32100, '\\t': 32101,
  '  ': 32102, ..., 16 spaces: 32116}; {} for the other modes."""
  if isinstance(vocabulary, LazyVocabulary):
    vocabulary = vocabulary.resolve()
  if isinstance(vocabulary, LosslessNewlineVocabulary):
    return vocabulary.whitespace_ids
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


class SentencePieceFile(seqio.SentencePieceVocabulary):
  """seqio's SentencePiece vocabulary whose file, read on first use, fails as one error naming it and saying
  what to do (the default gs:// model on a machine without network), not as a TensorFlow error deep inside
  a tf.data trace."""

  def _model_context(self):
    try:
      return super()._model_context()
    except Exception as e:  # pylint: disable=broad-except  (tf.errors.*, OSError: all mean "cannot read it")
      path = self.sentencepiece_model_file
      reason = ' '.join(str(e).split())[:300]
      remote = ('; without network access to gs://, copy it to a local file and pass that'
                if path.startswith('gs://') else '')
      raise FileNotFoundError(f'cannot read the vocabulary {path} ({type(e).__name__}: {reason}){remote} '
                              f"(gin get_vocabulary.path, ${VOCAB_ENV}, or 'byte')") from e


@functools.lru_cache(maxsize=None)
def _build(path: str, newline_mode: str, extra_ids: int) -> seqio.Vocabulary:
  if path == BYTE:
    return seqio.ByteVocabulary()
  if newline_mode not in NEWLINE_MODES:
    raise ValueError(f'newline_mode must be one of {NEWLINE_MODES}, got {newline_mode!r}')
  base = SentencePieceFile(path, extra_ids=extra_ids)
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


def _settings_key() -> tuple:
  """What get_vocabulary reads besides its arguments: its gin bindings and the environment."""
  try:
    bound = tuple(sorted(gin.get_bindings(get_vocabulary).items()))
  except (ValueError, KeyError):
    bound = ()
  return bound, os.environ.get(VOCAB_ENV), os.environ.get(NEWLINE_MODE_ENV)


class LazyVocabulary(seqio.Vocabulary):
  """Stands for `get_vocabulary(**kwargs)`, resolved at use: a gin binding or environment variable set later
  (before the data is built) takes effect, never a stale earlier resolution."""

  def __init__(self, **kwargs: Any):
    self._kwargs = dict(kwargs)
    self._resolved = None
    self._key = None
    super().__init__(extra_ids=0)

  def resolve(self) -> seqio.Vocabulary:
    """Returns the concrete vocabulary for the current settings (built once per distinct setting)."""
    key = _settings_key()
    if self._resolved is None or key != self._key:
      self._resolved, self._key = get_vocabulary(**self._kwargs), key
    return self._resolved

  def __getattr__(self, name):
    if name.startswith('__') or name in ('_kwargs', '_resolved', '_key'):
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
    # Keeps the resolution and the settings it was made under: a copy re-resolves only if they change.
    return {'_kwargs': self._kwargs, '_resolved': self._resolved, '_key': self._key, '_extra_ids': 0}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __str__(self) -> str:
    return f'LazyVocabulary({self._kwargs}) -> {self.resolve()}'
