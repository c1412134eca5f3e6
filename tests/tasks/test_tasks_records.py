"""Bad input: every malformed-record kind is an error naming file and line, or a counted skip."""

import json
import re

import pytest
import seqio

from tasks import dolly
from tasks import records as records_lib
from tasks import spec as spec_lib

GOOD = {'instruction': 'Say hi.', 'context': '', 'response': 'hi', 'category': 'open_qa'}
# (kind, bad line) -- each line is placed at line 3 of an otherwise valid file.
BAD_LINES = [
    ('malformed_json', '{"instruction": "x", "context": ""'),
    ('not_an_object', '["instruction", "context"]'),
    ('missing_field', json.dumps({k: v for k, v in GOOD.items() if k != 'context'})),
    ('non_string_field', json.dumps(dict(GOOD, response=42))),
    ('non_string_field', json.dumps(dict(GOOD, category=None))),
    ('empty_field', json.dumps(dict(GOOD, response='  '))),
    ('empty_field', json.dumps(dict(GOOD, instruction=''))),
]
EXPECTED_MESSAGE = {
    'malformed_json': 'malformed JSON', 'not_an_object': 'expected a JSON object',
    'missing_field': "missing field 'context'", 'non_string_field': 'not a string',
    'empty_field': 'is empty',
}


def write_file(tmp_path, bad_line, name='data.jsonl'):
  path = tmp_path / name
  lines = [json.dumps(GOOD), '', bad_line, json.dumps(dict(GOOD, response='hello'))]
  path.write_text('\n'.join(lines) + '\n')
  return path


@pytest.mark.parametrize('kind,line', BAD_LINES)
def test_each_bad_line_is_an_error_naming_file_and_line(tmp_path, kind, line):
  path = write_file(tmp_path, line)
  with pytest.raises(records_lib.RecordError) as info:
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
  assert str(info.value).startswith(f'{path}:3: ')
  assert EXPECTED_MESSAGE[kind] in str(info.value)


@pytest.mark.parametrize('kind,line', BAD_LINES)
def test_each_bad_line_is_counted_when_skipping(tmp_path, kind, line, caplog):
  path = write_file(tmp_path, line)
  with caplog.at_level('WARNING'):
    records, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL,
                                               on_error='skip')
  assert [r['response'] for r in records] == ['hi', 'hello']  # blank line 2 is no record
  assert report.kept == 2 and dict(report.skipped) == {kind: 1}
  assert report.samples[0].startswith(f'{path}:3: ')
  assert f'skipped 1' in caplog.text and str(path) in caplog.text


def test_errors_surface_when_the_task_dataset_is_built(tmp_path):
  path = write_file(tmp_path, BAD_LINES[0][1], 'task.jsonl')
  dolly.register_dolly('t_bad_dolly', str(path), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())  # registering reads nothing
  task = seqio.get_mixture_or_task('t_bad_dolly')
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:3: malformed JSON')):
    task.get_dataset(None, shuffle=False)
  dolly.register_dolly('t_skip_dolly', str(path), validation_fraction=0.0, per_category=False,
                       on_error='skip', vocabulary=seqio.ByteVocabulary())
  task = seqio.get_mixture_or_task('t_skip_dolly')
  assert len(list(task.get_dataset(None, shuffle=False).as_numpy_iterator())) == 2
  _, report = spec_lib.load_records(dolly.make_spec('t', str(path), on_error='skip'))
  assert dict(report.skipped) == {'malformed_json': 1}


def test_tsv_wrong_field_count(tmp_path):
  path = tmp_path / 'cot_train.tsv'
  path.write_text('q1\ta1\tr1\nq2\ta2\nq3\ta3\tr3\textra\n')
  columns = ('question', 'answer', 'rationale')
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:2: expected 3')):
    records_lib.read_records(str(path), columns, fmt='tsv', columns=columns)
  records, report = records_lib.read_records(str(path), columns, fmt='tsv', columns=columns,
                                             on_error='skip')
  assert [r['question'] for r in records] == ['q1']
  assert dict(report.skipped) == {'malformed_line': 2}


def test_missing_file_and_bad_settings(tmp_path):
  with pytest.raises(FileNotFoundError, match='no files match'):
    records_lib.read_records(str(tmp_path / 'nope.jsonl'), dolly.REQUIRED)
  with pytest.raises(ValueError, match='on_error'):
    records_lib.read_records(str(tmp_path / 'x.jsonl'), dolly.REQUIRED, on_error='ignore')
  with pytest.raises(ValueError, match='cannot tell the format'):
    records_lib.file_format('data.csv')
