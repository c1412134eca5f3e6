"""Hostile lines (issue 25): JSON nested 100,000 deep, a 5,000-digit number, a lone surrogate "\\ud800" and a
UTF-8-encoded surrogate are errors naming file and line in every reader (Dolly, Flan, CoT), or counted skips
under on_error='skip' that keep every other record; nothing reaches tokenization to fail there."""

import json
import re

import pytest
import seqio

from tasks import cot
from tasks import dolly
from tasks import flan
from tasks import records as records_lib

DOLLY = {'instruction': 'Say hi.', 'context': '', 'response': 'hi', 'category': 'open_qa'}
FLAN = {'inputs': 'q', 'targets': 'a', 'task': 'flan'}  # SirNeural's layout: inputs, targets, submixture

# (name, the line's bytes given a good record as JSON text, the message's start after 'file:line: ').
HOSTILE = [
    ('nested', lambda good: b'[' * 100_000 + b']' * 100_000, 'JSON nested too deeply to read'),
    ('nested_in_field', lambda good: good[:-1] + b', "extra": ' + b'[' * 100_000 + b']' * 100_000 + b'}',
     'JSON nested too deeply to read'),
    ('long_int', lambda good: good[:-1] + b', "n": ' + b'7' * 5000 + b'}',
     'unreadable JSON value (Exceeds the limit (4300 digits) for integer string conversion'),
    ('lone_surrogate', lambda good: good.replace(b'"hi"', b'"h\\ud800i"').replace(b'"q"', b'"q\\ud800"'),
     '\\ud800 (a lone UTF-16 surrogate escape) is not Unicode text'),
    ('surrogate_key', lambda good: good[:-1] + b', "\\udfff": "x"}', '\\udfff (a lone UTF-16 surrogate escape)'),
    ('encoded_surrogate', lambda good: good.replace(b'"hi"', b'"h\xed\xa0\x80i"').replace(b'"q"', b'"q\xed\xa0\x80"'),
     'not UTF-8 text (byte 0xed at column'),
]


def write_lines(path, good: dict, hostile: bytes, count: int = 5, at: int = 3):
  lines = [json.dumps(dict(good, **{next(iter(good)): f'{next(iter(good.values()))} {i}'})).encode()
           for i in range(1, count + 1)]
  lines[at - 1] = hostile
  path.write_bytes(b'\n'.join(lines) + b'\n')
  return path


@pytest.mark.parametrize('name, make, message', HOSTILE, ids=[h[0] for h in HOSTILE])
def test_dolly_reader(tmp_path, name, make, message):
  path = write_lines(tmp_path / 'dolly.jsonl', DOLLY, make(json.dumps(DOLLY).encode()))
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:3: {message}')):
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
  got, report = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL, on_error='skip')
  assert [r['instruction'] for r in got] == ['Say hi. 1', 'Say hi. 2', 'Say hi. 4', 'Say hi. 5']
  assert report.num_skipped == 1 and report.samples[0].startswith(f'{path}:3: {message}')


@pytest.mark.parametrize('name, make, message', HOSTILE[:1] + HOSTILE[2:4], ids=['nested', 'long_int', 'surrogate'])
def test_dolly_task_names_the_line(tmp_path, name, make, message):
  """Through the registered task as training reads it (the error leaves get_dataset, before any tf.data)."""
  path = write_lines(tmp_path / 'dolly.jsonl', DOLLY, make(json.dumps(DOLLY).encode()))
  task = f't_hostile_dolly_{name}'
  dolly.register_dolly(task, str(path), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:3: {message}')):
    seqio.get_mixture_or_task(task).get_dataset(None, shuffle=False)
  dolly.register_dolly(task, str(path), validation_fraction=0.0, per_category=False, on_error='skip',
                       vocabulary=seqio.ByteVocabulary())
  got = list(seqio.get_mixture_or_task(task).get_dataset(None, shuffle=False).as_numpy_iterator())
  assert [ex['inputs_pretokenized'].decode() for ex in got] == ['Say hi. 1', 'Say hi. 2', 'Say hi. 4', 'Say hi. 5']


@pytest.mark.parametrize('name, make, message', HOSTILE, ids=[h[0] for h in HOSTILE])
def test_flan_reader(tmp_path, name, make, message):
  path = write_lines(tmp_path / 'flan_zs_opt_train.jsonl', FLAN, make(json.dumps(FLAN).encode()))
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['flan2021'], 'zs_opt', str(tmp_path))
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:3: {message}')):
    source.scan()
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['flan2021'], 'zs_opt', str(tmp_path), on_error='skip')
  counts, report = source.scan()
  assert sum(counts.values()) == 4 and report.num_skipped == 1
  assert report.samples[0].startswith(f'{path}:3: {message}')


@pytest.mark.parametrize('name, line', [
    ('nested', b'[' * 100_000 + b'\t' + b']' * 100_000 + b'\trationale'),
    ('long_int', b'7' * 5000 + b'\t5000 sevens\tcounted'),
    ('surrogate_escape', b'what is \\ud800?\tnothing\tan escape is text in a TSV'),
])
def test_cot_reader_keeps_text_that_is_only_text(tmp_path, name, line):
  """CoT TSVs are not JSON: brackets, digits and backslash escapes are the text itself, and read as such."""
  path = tmp_path / 'gsm8k_train.tsv'
  path.write_bytes(b'q1\ta1\tr1\n' + line + b'\nq3\ta3\tr3\n')
  records, report = records_lib.read_records(str(path), cot.COLUMNS, fmt='tsv', columns=cot.COLUMNS)
  assert records[1] == dict(zip(cot.COLUMNS, line.decode().split('\t'))) and report.kept == 3


def test_cot_reader_rejects_an_encoded_surrogate(tmp_path):
  path = tmp_path / 'gsm8k_train.tsv'
  path.write_bytes(b'q1\ta1\tr1\nq\xed\xa0\x80\ta2\tr2\nq3\ta3\tr3\n')
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:2: not UTF-8 text (byte 0xed at column 2)')):
    records_lib.read_records(str(path), cot.COLUMNS, fmt='tsv', columns=cot.COLUMNS)
  records, report = records_lib.read_records(str(path), cot.COLUMNS, fmt='tsv', columns=cot.COLUMNS,
                                             on_error='skip')
  assert [r['question'] for r in records] == ['q1', 'q3'] and dict(report.skipped) == {'invalid_utf8': 1}


def test_surrogate_pairs_are_text(tmp_path):
  """An escaped pair is one character (an emoji), not a lone surrogate."""
  path = tmp_path / 'dolly.jsonl'
  path.write_text(json.dumps(dict(DOLLY, response='\U0001F600')) + '\n')  # json.dumps writes "\ud83d\ude00"
  assert b'\\ud83d\\ude00' in path.read_bytes()
  records, _ = records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
  assert records[0]['response'] == '\U0001F600'


def test_byte_order_mark_and_gzip_bytes(tmp_path):
  path = tmp_path / 'dolly.jsonl'
  path.write_bytes(b'\xef\xbb\xbf' + json.dumps(DOLLY).encode() + b'\n')
  assert records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)[0] == [DOLLY]
  import gzip  # pylint: disable=g-import-not-at-top
  path.write_bytes(gzip.compress(json.dumps(DOLLY).encode() + b'\n'))
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}:1: not UTF-8 text (byte 0x8b at column 2); '
                                                              'the file is gzip-compressed: name it *.gz')):
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)


def test_empty_file_is_an_error_naming_it(tmp_path):
  path = tmp_path / 'dolly.jsonl'
  path.write_bytes(b'\n \n')
  with pytest.raises(records_lib.RecordError, match=re.escape(f'{path}: no records (the file is empty')):
    records_lib.read_records(str(path), dolly.REQUIRED, dolly.OPTIONAL)
