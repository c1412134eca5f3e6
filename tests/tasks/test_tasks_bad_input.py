"""Bad bytes in data files (issue 12, tasks side): non-UTF-8 lines and absurdly long records are errors
naming file and line, or counted skips; a 50 MB line is never loaded whole."""

import gzip
import json
import re

import gin
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from tasks import dolly
from tasks import flan
from tasks import records as records_lib

GOOD = {'instruction': 'Say hi.', 'context': '', 'response': 'hi', 'category': 'open_qa'}


def dolly_file(tmp_path, bad: bytes, name='dolly.jsonl'):
  path = tmp_path / name
  lines = [json.dumps(GOOD).encode(), bad, json.dumps(dict(GOOD, response='hello')).encode()]
  data = b'\n'.join(lines) + b'\n'
  path.write_bytes(gzip.compress(data) if name.endswith('.gz') else data)
  return path


@pytest.mark.parametrize('name', ['dolly.jsonl', 'dolly.jsonl.gz'])
def test_non_utf8_line_names_file_and_line(tmp_path, name):
  latin1 = json.dumps(dict(GOOD, response='caf\u00e9'), ensure_ascii=False).encode('latin-1')  # 0xe9 alone is not UTF-8
  path = dolly_file(tmp_path, latin1, name)
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:2: not UTF-8 text (byte 0xe9 at column')):
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
  got, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL, on_error='skip')
  assert [r['response'] for r in got] == ['hi', 'hello']
  assert dict(report.skipped) == {'invalid_utf8': 1} and report.samples[0].startswith(f'{path}:2: ')


def test_non_utf8_through_the_dolly_task(tmp_path):
  path = dolly_file(tmp_path, b'{"instruction": "\xff\xfe"}')
  dolly.register_dolly('t_utf8_dolly', str(path), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:2: not UTF-8 text (byte 0xff')):
    seqio.get_mixture_or_task('t_utf8_dolly').get_dataset(None, shuffle=False)


def test_50mb_record_is_rejected_at_read_time(tmp_path):
  huge = json.dumps(dict(GOOD, response='x' * (50 << 20))).encode()
  path = dolly_file(tmp_path, huge)
  with pytest.raises(records_lib.RecordError) as info:
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
  assert str(info.value) == (f'{path}:2: record is {len(huge) + 1:,} bytes, over the 4,194,304-byte limit '
                             '(gin tasks.records.max_record_bytes.limit / $FLANX_MAX_RECORD_BYTES)')
  got, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL, on_error='skip')
  assert len(got) == 2 and dict(report.skipped) == {'record_too_long': 1}


def test_limit_from_gin_and_env(tmp_path, monkeypatch):
  path = dolly_file(tmp_path, json.dumps(dict(GOOD, response='y' * 500)).encode())
  monkeypatch.setenv(records_lib.MAX_RECORD_BYTES_ENV, '400')
  _, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL, on_error='skip')
  assert report.kept == 2 and dict(report.skipped) == {'record_too_long': 1}
  monkeypatch.delenv(records_lib.MAX_RECORD_BYTES_ENV)
  with gin.unlock_config():
    gin.bind_parameter('tasks.records.max_record_bytes.limit', 50)  # below every line
  try:
    _, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL, on_error='skip')
  finally:
    gin.clear_config()
  assert report.kept == 0 and report.num_skipped == 3


def test_long_parquet_row_is_rejected(tmp_path, monkeypatch):
  monkeypatch.setenv(records_lib.MAX_RECORD_BYTES_ENV, '1000')
  row = {'inputs': 'a', 'targets': 'b', 'task_source': 'P3', 'task_name': 't', 'template_type': 'zs_opt'}
  pq.write_table(pa.Table.from_pylist([row, dict(row, inputs='z' * 2000), row]), str(tmp_path / 'f.parquet'))
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['t0'], 'zs_opt', str(tmp_path))
  with pytest.raises(records_lib.RecordError, match=r'f.parquet:row 1: record is 2,0\d\d bytes, over the 1,000'):
    source.scan()
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['t0'], 'zs_opt', str(tmp_path), on_error='skip')
  counts, report = source.scan()
  assert counts == {'t': 2} and dict(report.skipped) == {'record_too_long': 1}


def test_reject_is_the_one_raise_or_skip_rule():
  report = records_lib.ReadReport('x')
  with pytest.raises(records_lib.RecordError, match='^f:3: bad$'):
    records_lib.reject('f:3', ('kind', 'bad'), 'raise', report)
  records_lib.reject('f:3', ('kind', 'bad'), 'skip', report)
  records_lib.reject('f:4', ('kind', 'bad'), 'skip', None)  # counted elsewhere
  assert dict(report.skipped) == {'kind': 1} and report.samples == ['f:3: bad']
