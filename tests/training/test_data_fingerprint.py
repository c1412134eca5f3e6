"""A resume notices changed training data: each checkpoint records its tasks' source files (size and a content
sample), and a changed, added or removed file refuses the saved data position with the same advice as other
data-layout changes (--gin.train.restore_data=False).

References: files on disk edited here; seqio's registry (a DatasetSpec task, a seqio TextLineDataSource task).
"""

import json
import os
import pathlib
import shutil
import sys

import pytest
import seqio

from flanx.training import data_fingerprint, run_checks
from tasks import spec as spec_lib
from tasks import templates

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _records(path, n):
  path.write_text(''.join(json.dumps({'instruction': f'say {i}', 'response': str(i)}) + '\n' for i in range(n)))


@pytest.fixture
def task(tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  _records(data / 'part1.jsonl', 200)
  _records(data / 'part2.jsonl', 20)
  name = f'fingerprint_{abs(hash(str(tmp_path)))}'
  spec_lib.register(spec_lib.DatasetSpec(
      name=name, path=str(data / '*.jsonl'), required=('instruction', 'response'),
      vocabulary=seqio.ByteVocabulary(),
      variants=(spec_lib.Variant('', (templates.Template('{instruction}', '{response}'),)),)))
  yield name, data
  seqio.TaskRegistry.remove(name)


def test_a_shrunk_data_file_is_named_and_refused(task):
  name, data = task
  before = data_fingerprint.fingerprint(name)
  assert sorted(os.path.basename(p) for p in before[name]) == ['part1.jsonl', 'part2.jsonl']
  size = os.path.getsize(data / 'part1.jsonl')
  _records(data / 'part1.jsonl', 50)  # the case: 200 -> 50 records
  now = data_fingerprint.fingerprint(name)
  assert data_fingerprint.changes(before, now) == [
      f'{name}: {data}/part1.jsonl changed size ({size:,} -> {os.path.getsize(data / "part1.jsonl"):,} bytes)']
  with pytest.raises(run_checks.RunConfigError, match=r'training data changed since RUN/checkpoint_8 was written '
                                                      r'\(.*part1.jsonl changed size.*--gin.train.restore_data=False'):
    data_fingerprint.check_unchanged(before, now, 'RUN/checkpoint_8', restore_data=True)
  data_fingerprint.check_unchanged(before, now, 'RUN/checkpoint_8', restore_data=False)  # asked for: fine


def test_edits_additions_and_removals_count_a_copy_does_not(task, tmp_path):
  name, data = task
  before = data_fingerprint.fingerprint(name)
  shutil.copy(data / 'part2.jsonl', tmp_path / 'copy')
  os.replace(tmp_path / 'copy', data / 'part2.jsonl')  # same bytes, new inode and mtime
  assert data_fingerprint.changes(before, data_fingerprint.fingerprint(name)) == []
  text = (data / 'part2.jsonl').read_text()
  (data / 'part2.jsonl').write_text(text.replace('say 1"', 'say 7"'))  # same size, other content
  _records(data / 'part3.jsonl', 5)
  os.remove(data / 'part1.jsonl')
  found = data_fingerprint.changes(before, data_fingerprint.fingerprint(name))
  assert found == [f'{name}: {data}/part1.jsonl is gone',
                   f'{name}: {data}/part2.jsonl changed (same size, different content)',
                   f'{name}: {data}/part3.jsonl is new']


def test_file_sources_of_seqio_count_and_in_memory_ones_are_skipped(tmp_path):
  (tmp_path / 'a.txt').write_text('x\n')
  name = 'fingerprint_text_lines'
  seqio.TaskRegistry.add(name, source=seqio.TextLineDataSource({'train': str(tmp_path / '*.txt')}),
                         output_features={})
  try:
    assert list(data_fingerprint.fingerprint(name)[name]) == [str(tmp_path / 'a.txt')]
  finally:
    seqio.TaskRegistry.remove(name)
  import fixture_tasks  # pylint: disable=g-import-not-at-top  (a FunctionDataSource)
  assert data_fingerprint.fingerprint(fixture_tasks.TASK) == {}


@pytest.mark.slow
def test_resume_on_shrunk_data_is_refused_until_asked(task):
  """The issue's case end to end: a run on 220 records resumes after part1.jsonl shrank from 200 to 50."""
  from train_helpers import train_in_process  # pylint: disable=g-import-not-at-top
  name, data = task
  run = data.parent / 'run'
  extra = {'MIXTURE_OR_TASK_NAME': f'"{name}"', 'CHECKPOINT_PERIOD': 2}
  assert train_in_process(run, 2, **extra)['step'] == 2
  _records(data / 'part1.jsonl', 50)
  before = {p: p.read_bytes() for p in sorted(run.rglob('*')) if p.is_file()}
  with pytest.raises(run_checks.RunConfigError, match=r'part1.jsonl changed size .*restore_data=False'):
    train_in_process(run, 4, **extra)
  assert {p: p.read_bytes() for p in sorted(run.rglob('*')) if p.is_file()} == before
  assert train_in_process(run, 4, **extra, **{'train.restore_data': False})['step'] == 4
