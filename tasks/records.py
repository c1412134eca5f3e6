"""Reading record files (JSONL, TSV, Parquet, TFRecord; local or gs://) with validation.

Every bad record (malformed, missing fields, not UTF-8, longer than `max_record_bytes()`, JSON nested too
deep, numbers too long for Python, lone UTF-16 surrogates such as "\\ud800") is either an error naming file
and line (on_error='raise') or counted in a `ReadReport` and logged (on_error='skip'); nothing is dropped
silently. Blank lines are not records; a UTF-8 byte-order mark at the start of a file is not part of the
first one. Over-long lines are skipped in chunks, never held in memory whole.

A `Share` reads one reader's part of a file (every count-th record, or whole Parquet row groups when the file
has enough), choosing records by their number before parsing them, so hosts split a file without each parsing
all of it.
"""

import collections
import dataclasses
import glob
import gzip
import hashlib
import io
import json
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gin

ON_ERROR = ('raise', 'skip')
MAX_RECORD_BYTES_ENV = 'FLANX_MAX_RECORD_BYTES'
DEFAULT_MAX_RECORD_BYTES = 4 << 20  # far above any real Flan / Dolly record (tens of KB)


# Records this process has parsed (turned into Python values), by format: what a read cost (tests check that a
# shared read parses only its share).
PARSED = collections.Counter()


@dataclasses.dataclass(frozen=True)
class Share:
  """One reader's share of a file: records number `index`, `index + count`, `index + 2 count`, ... (numbered
  from 0 in file order, bad records included), chosen before they are parsed. A Parquet file with at least
  `count` row groups is shared by whole row groups instead (group g goes to reader g mod count), so a reader
  decodes only its own groups. The shares 0..count-1 of a file are disjoint and together hold all of it."""
  index: int
  count: int

  def __post_init__(self):
    if not 0 <= self.index < self.count:
      raise ValueError(f'share {self.index} of {self.count} does not exist')

  def has(self, number: int) -> bool:
    return number % self.count == self.index


class RecordError(ValueError):
  """Bad input data: a malformed record, with its location (file:line) in the message, or a data file
  without records. `hint` says what to do about it (command lines print it after the message)."""

  def __init__(self, message: str, hint: str = ''):
    super().__init__(message)
    self.hint = hint


SKIP_HINT = ("fix or remove that record, or skip bad records (counted in the log) with the task's "
             "on_error='skip' (e.g. --gin.register_dolly.on_error=\"'skip'\")")


@dataclasses.dataclass
class ReadReport:
  """What a read kept and what it skipped, by kind of problem."""
  source: str
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  samples: List[str] = dataclasses.field(default_factory=list)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def add_skip(self, kind: str, message: str) -> None:
    """Counts one skipped record (keeps the first few messages for the log)."""
    self.skipped[kind] += 1
    if len(self.samples) < 5:
      self.samples.append(message)

  def log(self) -> None:
    """Reports the skips (warning) or a clean read (info)."""
    if self.skipped:
      logging.warning('%s: kept %d records, skipped %d %s; first: %s', self.source, self.kept,
                      self.num_skipped, dict(self.skipped), self.samples)
    else:
      logging.info('%s: read %d records', self.source, self.kept)


def check_on_error(on_error: str) -> str:
  if on_error not in ON_ERROR:
    raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
  return on_error


def reject(where: str, problem: Tuple[str, str], on_error: str, report: Optional[ReadReport]) -> None:
  """A bad record: RecordError naming its location under 'raise'; else counted in `report` (if any)."""
  kind, message = problem
  if on_error == 'raise':
    raise RecordError(f'{where}: {message}', '' if kind == 'gzip_bytes' else SKIP_HINT)
  if report is not None:
    report.add_skip(kind, f'{where}: {message}')


@gin.configurable
def max_record_bytes(limit: Optional[int] = None) -> int:
  """Longest record (line, or a row's text) read: argument / gin binding, else $FLANX_MAX_RECORD_BYTES,
  else 4 MiB. Longer records are bad records (an error, or a counted skip), never loaded whole."""
  limit = limit or int(os.environ.get(MAX_RECORD_BYTES_ENV) or DEFAULT_MAX_RECORD_BYTES)
  if limit <= 0:
    raise ValueError(f'max record bytes must be positive, got {limit}')
  return limit


def _too_long(size: int, limit: int) -> Tuple[str, str]:
  return ('record_too_long', f'record is {size:,} bytes, over the {limit:,}-byte limit (gin '
                             f'tasks.records.max_record_bytes.limit / ${MAX_RECORD_BYTES_ENV})')


def _is_remote(path: str) -> bool:
  return '://' in path


def has_glob(pattern: str) -> bool:
  return any(c in pattern for c in '*?[')


def is_dir(path: str) -> bool:
  """Whether a local or gs:// path is a directory."""
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.isdir(path)
  return os.path.isdir(os.path.expanduser(path))


def walk_files(folder: str) -> List[str]:
  """Sorted files under a local or gs:// folder, skipping hidden entries (.cache, .gitattributes)."""
  if _is_remote(folder):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    walk = ((d, sub, names) for d, sub, names in tf.io.gfile.walk(folder))
  else:
    walk = os.walk(os.path.expanduser(folder))
  files = []
  for directory, subdirs, names in walk:
    subdirs[:] = [d for d in subdirs if not d.startswith('.')]
    files += [os.path.join(directory, n) for n in names if not n.startswith('.')]
  if not files:
    raise FileNotFoundError(f'no files in {folder!r}')
  return sorted(files)


def expand(pattern: str) -> List[str]:
  """Sorted files matching a path or glob (local or gs://); an error when none match."""
  if _is_remote(pattern):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    files = sorted(tf.io.gfile.glob(pattern))
  else:
    files = sorted(f for f in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(f))
  if not files:
    raise FileNotFoundError(f'no files match {pattern!r}')
  return files


def open_binary(path: str):
  """Opens a local or gs:// file for binary reading (gunzips *.gz)."""
  f = open_binary_raw(path)
  return gzip.GzipFile(fileobj=f) if path.endswith('.gz') else f


class _Joined(io.RawIOBase):
  """The bytes of several files, one after the other (parts of one split file)."""

  def __init__(self, paths: Sequence[str]):
    super().__init__()
    self._paths = list(paths)
    self._file = None

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    while self._paths or self._file:
      if self._file is None:
        path = self._paths.pop(0)
        self._file = open_binary_raw(path)
      n = self._file.readinto(buffer)
      if n:
        return n
      self._file.close()
      self._file = None
    return 0

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    super().close()


def open_binary_raw(path: str):
  """Opens a local or gs:// file for binary reading, as stored (no gunzip)."""
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, 'rb')
  return open(path, 'rb')


def _read_lines(f, limit: int) -> Iterator[Tuple[int, Optional[bytes], int]]:
  """(line number, bytes without the newline or None when longer than `limit`, length) for a binary file;
  a long line is skipped in chunks, never held whole."""
  number = 0
  while True:
    raw = f.readline(limit + 1)
    if not raw:
      return
    number += 1
    size = len(raw)
    if len(raw) > limit and not raw.endswith(b'\n'):
      while raw and not raw.endswith(b'\n'):
        raw = f.readline(1 << 20)
        size += len(raw)
      yield number, None, size
      continue
    yield number, raw.rstrip(b'\n').rstrip(b'\r'), size


def iter_lines(path: str, where: Optional[str] = None, file=None
               ) -> Iterator[Tuple[str, Optional[str], Optional[Tuple[str, str]]]]:
  """(location, line or None, problem or None) for a UTF-8 text file: a line that is not UTF-8 or is over
  `max_record_bytes()` is a problem naming file and line."""
  limit = max_record_bytes()
  with (file if file is not None else open_binary(path)) as f:
    for number, raw, size in _read_lines(f, limit):
      location = f'{where or path}:{number}'
      if raw is None:
        yield location, None, _too_long(size, limit)
        continue
      if number == 1 and raw.startswith(_BOM):  # editors on Windows write one; it is not text
        raw = raw[len(_BOM):]
      try:
        yield location, raw.decode('utf-8'), None
      except UnicodeDecodeError as e:
        gzip_hint = _gzip_hint(path, number, raw)
        yield location, None, ('gzip_bytes' if gzip_hint else 'invalid_utf8',
                               f'not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}){gzip_hint}')


_BOM = b'\xef\xbb\xbf'
_GZIP_MAGIC = b'\x1f\x8b'


def _gzip_hint(path: str, number: int, raw: bytes) -> str:
  """A compressed file under a plain name reads as garbage: say what it is."""
  if number == 1 and raw.startswith(_GZIP_MAGIC) and not path.endswith('.gz'):
    return '; the file is gzip-compressed: name it *.gz (e.g. .jsonl.gz) or gunzip it'
  return ''


def validate(record: Any, required: Sequence[str], optional: Sequence[str] = ()
             ) -> Optional[Tuple[str, str]]:
  """(kind, message) for the first problem of a record, or None when it is valid.

  `required` fields must be non-empty strings (after stripping whitespace); `optional` fields
  must be strings and may be empty.
  """
  if not isinstance(record, dict):
    return 'not_an_object', f'expected a JSON object, got {type(record).__name__}'
  for name in list(required) + list(optional):
    if name not in record:
      return 'missing_field', f'missing field {name!r}'
    if not isinstance(record[name], str):
      return 'non_string_field', f'field {name!r} is {type(record[name]).__name__}, not a string'
  for name in required:
    if not record[name].strip():
      return 'empty_field', f'field {name!r} is empty'
  return None


def _iter_jsonl(path: str, where: Optional[str] = None, file=None, share: Optional[Share] = None
                ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  number = -1
  for where, line, problem in iter_lines(path, where, file):
    if not problem and not line.strip():
      continue
    number += 1
    if share is not None and not share.has(number):  # another reader's: never parsed here
      continue
    if problem:
      yield number, where, None, problem
      continue
    record, problem = parse_json_line(line)
    PARSED['jsonl'] += 1
    yield number, where, record, problem


# A JSON escape that may decode to half of a UTF-16 surrogate pair (then the record is checked).
_SURROGATE_ESCAPE = re.compile(r'\\u[dD][89a-fA-F]')
_SURROGATE = re.compile('[\ud800-\udfff]')


def parse_json_line(line: str) -> Tuple[Any, Optional[Tuple[str, str]]]:
  """(value, None) for one line of JSON text, or (None, problem): malformed JSON, nesting deeper than Python
  parses, integers over Python's digit limit, and lone surrogates ("\\ud800": no UTF-8 text can hold them,
  so they would fail later, far from the line) are problems of the line, never exceptions."""
  try:
    value = json.loads(line)
  except json.JSONDecodeError as e:
    return None, ('malformed_json', f'malformed JSON ({e.msg} at column {e.colno})')
  except RecursionError:
    return None, ('malformed_json', 'JSON nested too deeply to read')
  except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
    return None, ('malformed_json', f'unreadable JSON value ({str(e).split(";")[0]})')
  if _SURROGATE_ESCAPE.search(line):
    surrogate = _find_surrogate(value)
    if surrogate is not None:
      return None, ('invalid_unicode', f'{surrogate} (a lone UTF-16 surrogate escape) is not Unicode text')
  return value, None


def _find_surrogate(value: Any) -> Optional[str]:
  """The first lone surrogate in a parsed JSON value's strings (keys included), as its escape; iterative,
  so a deeply nested value cannot exhaust the stack."""
  stack = [value]
  while stack:
    item = stack.pop()
    if isinstance(item, dict):
      stack.extend(item.keys())
      stack.extend(item.values())
    elif isinstance(item, list):
      stack.extend(item)
    elif isinstance(item, str):
      found = _SURROGATE.search(item)
      if found:
        return f'\\u{ord(found.group()):04x}'
  return None


def iter_joined_jsonl(paths: Sequence[str]) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  """Records of a JSONL file split into byte chunks (`cat parts | gunzip`), located by joined line."""
  return _unnumbered(iter_joined_jsonl_numbered(paths))


def iter_joined_jsonl_numbered(paths: Sequence[str], share: Optional[Share] = None
                               ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  """(number, location, record or None, problem or None) of `iter_joined_jsonl`'s records (`share`'s only)."""
  raw = io.BufferedReader(_Joined(paths))
  file = gzip.GzipFile(fileobj=raw) if paths[0].endswith('.gz') else raw
  return _iter_jsonl(paths[0], f'{paths[0]} (+{len(paths) - 1} parts)', file, share)


def _unnumbered(numbered):
  for _, where, record, problem in numbered:
    yield where, record, problem


def _iter_tsv(path: str, columns: Sequence[str], share: Optional[Share] = None
              ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  number = -1
  for where, line, problem in iter_lines(path):
    if not problem and not line.strip():
      continue
    number += 1
    if share is not None and not share.has(number):
      continue
    if problem:
      yield number, where, None, problem
      continue
    fields = line.split('\t')
    PARSED['tsv'] += 1
    if len(fields) != len(columns):
      yield number, where, None, ('malformed_line',
                                  f'expected {len(columns)} tab-separated fields, got {len(fields)}')
    else:
      yield number, where, dict(zip(columns, fields)), None


def _iter_parquet(path: str, columns: Optional[Sequence[str]], share: Optional[Share] = None
                  ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path} needs pyarrow (pip install pyarrow)') from e
  import numpy as np  # pylint: disable=g-import-not-at-top
  with open_binary(path) as f:
    table = pq.ParquetFile(f)
    names = set(table.schema_arrow.names)
    wanted = [c for c in columns if c in names] if columns else None
    limit = max_record_bytes()
    sizes = [table.metadata.row_group(g).num_rows for g in range(table.metadata.num_row_groups)]
    starts = np.cumsum([0] + sizes)
    # (first row number, row groups) of each read: the whole file, or this share's row groups when there are
    # enough of them; with fewer, every batch gives up this share's rows before they become Python values.
    reads, rows = [(0, None)], share
    if share is not None and len(sizes) >= share.count:
      reads, rows = [(int(starts[g]), [g]) for g in range(len(sizes)) if share.has(g)], None
    for row, groups in reads:
      for batch in table.iter_batches(columns=wanted, batch_size=256, row_groups=groups):
        numbers = np.arange(row, row + batch.num_rows)
        row += batch.num_rows
        if rows is not None:
          picked = np.flatnonzero(numbers % rows.count == rows.index)
          numbers, batch = numbers[picked], batch.take(picked)
        records = batch.to_pylist()
        PARSED['parquet'] += len(records)
        for number, record in zip(numbers.tolist(), records):
          size = _text_bytes(record)
          yield (number, f'{path}:row {number}', None, _too_long(size, limit)) if size > limit else (
              number, f'{path}:row {number}', record, None)


def _text_bytes(record: Mapping[str, Any]) -> int:
  """Bytes of a record's text values (UTF-8 is at least one byte a character: the length bounds it)."""
  return sum(len(v) for v in record.values() if isinstance(v, (str, bytes)))


def _iter_tfrecord(path: str, share: Optional[Share] = None
                   ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for number, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
    if share is not None and not share.has(number):
      continue
    where = f'{path}:record {number}'
    if len(raw) > max_record_bytes():
      yield number, where, None, _too_long(len(raw), max_record_bytes())
      continue
    PARSED['tfrecord'] += 1
    try:
      example = tf.train.Example.FromString(raw)
    except Exception as e:  # pylint: disable=broad-except
      yield number, where, None, ('malformed_record', f'not a tf.train.Example ({e})')
      continue
    record = {}
    try:
      for name, feature in example.features.feature.items():
        values = feature.bytes_list.value
        record[name] = values[0].decode('utf-8') if len(values) == 1 else None
    except UnicodeDecodeError as e:
      yield number, where, None, ('invalid_utf8', f'feature {name!r} is not UTF-8 text ({e.reason})')
      continue
    yield number, where, record, None


def file_format(path: str) -> str:
  """'jsonl', 'tsv', 'parquet' or 'tfrecord' from a file name."""
  name = path[:-3] if path.endswith('.gz') else path
  base = os.path.basename(name)
  if name.endswith(('.jsonl', '.json', '.ndjson')):
    return 'jsonl'
  if name.endswith(('.tsv', '.txt')):
    return 'tsv'
  if name.endswith('.parquet'):
    return 'parquet'
  if '.tfrecord' in base or '.tfrecords' in base:
    return 'tfrecord'
  raise ValueError(f'cannot tell the format of {path!r} (expected .jsonl, .tsv, .parquet '
                   'or .tfrecord, optionally .gz)')


def iter_file(path: str, fmt: str = 'auto', columns: Sequence[str] = ()
              ) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  """(location, record or None, problem or None) for every record of one file."""
  return _unnumbered(iter_file_numbered(path, fmt, columns))


def iter_file_numbered(path: str, fmt: str = 'auto', columns: Sequence[str] = (), share: Optional[Share] = None
                       ) -> Iterator[Tuple[int, str, Any, Optional[Tuple[str, str]]]]:
  """(number, location, record or None, problem or None) for every record of one file (of `share`, if given);
  `number` counts the file's records from 0, bad ones included."""
  fmt = file_format(path) if fmt == 'auto' else fmt
  if fmt == 'jsonl':
    return _iter_jsonl(path, share=share)
  if fmt == 'tsv':
    if not columns:
      raise ValueError(f'{path}: TSV files need column names')
    return _iter_tsv(path, columns, share)
  if fmt == 'parquet':
    return _iter_parquet(path, columns or None, share)
  if fmt == 'tfrecord':
    return _iter_tfrecord(path, share)
  raise ValueError(f'unknown format {fmt!r} for {path}')


def read_records(pattern: str, required: Sequence[str], optional: Sequence[str] = (),
                 fmt: str = 'auto', columns: Sequence[str] = (), on_error: str = 'raise'
                 ) -> Tuple[List[Dict[str, str]], ReadReport]:
  """Reads and validates every record of the files matching `pattern`."""
  check_on_error(on_error)
  report = ReadReport(pattern)
  records = []
  for path in expand(pattern):
    for where, record, problem in iter_file(path, fmt, columns):
      problem = problem or validate(record, required, optional)
      if problem:
        reject(where, problem, on_error, report)
        continue
      records.append({k: record[k] for k in list(required) + list(optional)})
      report.kept += 1
  if not records and not report.num_skipped:
    raise RecordError(f'{pattern}: no records (the file is empty or has only blank lines)')
  report.log()
  return records, report


def stable_fraction(*parts: str) -> float:
  """A number in [0, 1) that depends only on the given strings (sha256; stable across runs)."""
  digest = hashlib.sha256('\x1f'.join(parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def stable_int(*parts: Any) -> int:
  """A 63-bit integer that depends only on the given values' text (sha256)."""
  digest = hashlib.sha256('\x1f'.join(str(p) for p in parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') >> 1


def record_split(record: Mapping[str, str], fields: Sequence[str],
                 validation_fraction: float, seed: int = 0) -> str:
  """'validation' for a stable pseudo-random `validation_fraction` of records, else 'train'."""
  if validation_fraction <= 0:
    return 'train'
  key = stable_fraction(str(seed), *(record[f] for f in fields))
  return 'validation' if key < validation_fraction else 'train'
