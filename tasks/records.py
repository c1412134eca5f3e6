"""Reading record files (JSONL, TSV, Parquet, TFRecord; local or gs://) with validation.

Every bad record is either an error naming file and line (on_error='raise') or counted in a
`ReadReport` and logged (on_error='skip'); nothing is dropped silently. Blank lines are not records.
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
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

ON_ERROR = ('raise', 'skip')


class RecordError(ValueError):
  """A malformed record, with its location (file:line) in the message."""


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


def _is_remote(path: str) -> bool:
  return '://' in path


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
  if _is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    f = tf.io.gfile.GFile(path, 'rb')
  else:
    f = open(path, 'rb')
  return gzip.GzipFile(fileobj=f) if path.endswith('.gz') else f


def iter_lines(path: str) -> Iterator[Tuple[int, str]]:
  """(1-based line number, line without its newline) for a UTF-8 text file."""
  with open_binary(path) as f:
    for number, raw in enumerate(io.TextIOWrapper(f, encoding='utf-8', newline='\n'), 1):
      yield number, raw.rstrip('\n').rstrip('\r')


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


def _iter_jsonl(path: str) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  for number, line in iter_lines(path):
    if not line.strip():
      continue
    where = f'{path}:{number}'
    try:
      yield where, json.loads(line), None
    except json.JSONDecodeError as e:
      yield where, None, ('malformed_json', f'malformed JSON ({e.msg} at column {e.colno})')


def _iter_tsv(path: str, columns: Sequence[str]
              ) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  for number, line in iter_lines(path):
    if not line.strip():
      continue
    where = f'{path}:{number}'
    fields = line.split('\t')
    if len(fields) != len(columns):
      yield where, None, ('malformed_line',
                          f'expected {len(columns)} tab-separated fields, got {len(fields)}')
    else:
      yield where, dict(zip(columns, fields)), None


def _iter_parquet(path: str, columns: Optional[Sequence[str]]
                  ) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path} needs pyarrow (pip install pyarrow)') from e
  with open_binary(path) as f:
    table = pq.ParquetFile(f)
    names = set(table.schema_arrow.names)
    wanted = [c for c in columns if c in names] if columns else None
    row = 0
    for batch in table.iter_batches(columns=wanted, batch_size=4096):
      for record in batch.to_pylist():
        yield f'{path}:row {row}', record, None
        row += 1


def _iter_tfrecord(path: str) -> Iterator[Tuple[str, Any, Optional[Tuple[str, str]]]]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for number, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
    where = f'{path}:record {number}'
    try:
      example = tf.train.Example.FromString(raw)
    except Exception as e:  # pylint: disable=broad-except
      yield where, None, ('malformed_record', f'not a tf.train.Example ({e})')
      continue
    record = {}
    for name, feature in example.features.feature.items():
      values = feature.bytes_list.value
      record[name] = values[0].decode('utf-8') if len(values) == 1 else None
    yield where, record, None


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
  fmt = file_format(path) if fmt == 'auto' else fmt
  if fmt == 'jsonl':
    return _iter_jsonl(path)
  if fmt == 'tsv':
    if not columns:
      raise ValueError(f'{path}: TSV files need column names')
    return _iter_tsv(path, columns)
  if fmt == 'parquet':
    return _iter_parquet(path, columns or None)
  if fmt == 'tfrecord':
    return _iter_tfrecord(path)
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
        kind, message = problem
        if on_error == 'raise':
          raise RecordError(f'{where}: {message}')
        report.add_skip(kind, f'{where}: {message}')
        continue
      records.append({k: record[k] for k in list(required) + list(optional)})
      report.kept += 1
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
