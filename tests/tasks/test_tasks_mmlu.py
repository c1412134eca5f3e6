"""MMLU tasks on fixture CSVs in the original release's layout and quoting (the real data is not reachable)."""

import pathlib

import pytest
import seqio

from tasks import metrics
from tasks import mmlu
from tasks import vocab as vocab_lib

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
DEV_VOCAB = SHARED / 'vocab' / 'dev_8k.model'

# Written as the release's files are: no header; fields with commas, quotes or newlines double-quoted,
# quotes doubled; CRLF-free. Six dev rows (five are used), three test rows, one val row.
DEV = (
    'Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.,0,1,2,3,B\n'
    '"Statement 1 | If aH is an element of a factor group, then |aH| divides |a|.",'
    '"True, True","False, False","True, False","False, True",B\n'
    'Which quote is right?,"He said ""no""",She said yes,None,All of the above,A\n'
    '"A question over\ntwo lines?",one,two,three,four,D\n'
    'Find the characteristic of the ring 2Z.,0,3,12,30,A\n'
    'Sixth dev row (never used at 5 shots),a,b,c,d,C\n')
TEST = (
    '"What is 1,000 + 1?",1001,1000,"1,001",10001,A\n'
    '"Pick the quoted word: ""x""",x,"""x""",y,z,B\n'
    '"Multi\nline\nquestion",p,q,r,s,C\n')
VAL = 'Val question?,w,x,y,z,D\n'

HEADER = 'The following are multiple choice questions (with answers) about  abstract algebra.\n\n'
SHOT_1 = 'Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n'
SHOT_2 = ('Statement 1 | If aH is an element of a factor group, then |aH| divides |a|.\n'
          'A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: B\n\n')
SHOT_3 = 'Which quote is right?\nA. He said "no"\nB. She said yes\nC. None\nD. All of the above\nAnswer: A\n\n'
SHOT_4 = 'A question over\ntwo lines?\nA. one\nB. two\nC. three\nD. four\nAnswer: D\n\n'
SHOT_5 = 'Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n'
QUERY_1 = 'What is 1,000 + 1?\nA. 1001\nB. 1000\nC. 1,001\nD. 10001\nAnswer:'


@pytest.fixture
def data_dir(tmp_path):
  root = tmp_path / 'data'
  for split, text in (('dev', DEV), ('test', TEST), ('val', VAL)):
    (root / split).mkdir(parents=True)
    (root / split / f'abstract_algebra_{split}.csv').write_text(text, encoding='utf-8')
  return root


def test_rows_parsed_with_release_quoting(data_dir):
  rows = mmlu.read_rows(str(data_dir / 'test' / 'abstract_algebra_test.csv'))
  assert rows == (('What is 1,000 + 1?', '1001', '1000', '1,001', '10001', 'A'),
                  ('Pick the quoted word: "x"', 'x', '"x"', 'y', 'z', 'B'),
                  ('Multi\nline\nquestion', 'p', 'q', 'r', 's', 'C'))


def test_five_shot_prompt_is_the_reference_format(data_dir):
  # The folder holding data/ works as well as data/ itself.
  prompts = mmlu.prompts('abstract_algebra', 'test', str(data_dir.parent))
  assert prompts[0] == (HEADER + SHOT_1 + SHOT_2 + SHOT_3 + SHOT_4 + SHOT_5 + QUERY_1, 'A')
  assert prompts[2][0].endswith('Multi\nline\nquestion\nA. p\nB. q\nC. r\nD. s\nAnswer:')
  assert [t for _, t in prompts] == ['A', 'B', 'C']
  assert mmlu.prompts('abstract_algebra', 'validation', str(data_dir)) == [
      (HEADER + SHOT_1 + SHOT_2 + SHOT_3 + SHOT_4 + SHOT_5 + 'Val question?\nA. w\nB. x\nC. y\nD. z\nAnswer:', 'D')]


def test_bad_csv_names_file_and_line(tmp_path, data_dir):
  bad = data_dir / 'test' / 'anatomy_test.csv'
  bad.write_text('ok question,a,b,c,d,A\n"two\nline",a,b,c,D\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'anatomy_test.csv:2: expected 6 columns'):
    mmlu.read_rows(str(bad))
  bad.write_text('q,a,b,c,d,E\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'anatomy_test.csv:1: answer must be one of'):
    mmlu.read_rows(str(bad))
  with pytest.raises(FileNotFoundError, match='anatomy_dev.csv'):
    mmlu.prompts('anatomy', 'test', str(data_dir))


def test_letter_accuracy():
  assert [metrics.mmlu_letter(p) for p in ('B', ' C.', '(D)', 'A) because', 'Answer: B', 'Because', '')] == [
      'B', 'C', 'D', 'A', '', '', '']
  assert metrics.mmlu_accuracy(['A', 'B', 'C', 'D'], ['A', '(B)', 'D', 'Dog']) == {
      'accuracy': 50.0, 'num_examples': 4.0}


def test_categories_are_the_standard_grouping():
  assert len(mmlu.SUBJECTS) == 57
  counts = {c: sum(v == c for v in mmlu.CATEGORIES.values()) for c in set(mmlu.CATEGORIES.values())}
  assert counts == {'STEM': 18, 'humanities': 13, 'social sciences': 12, 'other': 14}
  assert mmlu.CATEGORIES['professional_law'] == 'humanities'
  assert mmlu.CATEGORIES['econometrics'] == 'social sciences'
  assert mmlu.CATEGORIES['college_medicine'] == 'other'
  mixture = seqio.get_mixture_or_task('mmlu_direct')
  assert sorted(t.name for t in mixture.tasks) == sorted(f'mmlu_direct_{s}' for s in mmlu.SUBJECTS)


@pytest.mark.slow
@pytest.mark.skipif(not DEV_VOCAB.exists(), reason=f'dev vocabulary absent ({DEV_VOCAB}); it lives beside the repo')
def test_exemplars_dropped_from_the_end_to_fit(data_dir):
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  mmlu.register_mmlu(str(data_dir), subjects=('abstract_algebra',), vocabulary=vocabulary, prefix='t_')
  shots = [SHOT_1, SHOT_2, SHOT_3, SHOT_4, SHOT_5]
  query = vocabulary.encode(QUERY_1)
  full = len(vocabulary.encode(HEADER + ''.join(shots) + QUERY_1))
  sizes = [len(vocabulary.encode(HEADER + ''.join(shots[:k]) + QUERY_1)) for k in range(6)]
  assert full == sizes[5]
  for length, kept in ((512, 5), (sizes[3] + 1, 3), (sizes[3], 2), (sizes[0] + 1, 0)):
    ds = seqio.get_dataset('t_mmlu_direct_abstract_algebra', {'inputs': length, 'targets': 4}, dataset_split='test',
                           shuffle=False, feature_converter=seqio.PassThroughFeatureConverter())
    ids = list(next(ds.as_numpy_iterator())['inputs'])
    assert ids == vocabulary.encode(HEADER + ''.join(shots[:kept]) + QUERY_1) + [1]
    assert ids[-1 - len(query):-1] == query
  ds = seqio.get_dataset('t_mmlu_direct_abstract_algebra', {'inputs': sizes[0], 'targets': 4}, dataset_split='test',
                         shuffle=False, feature_converter=seqio.PassThroughFeatureConverter())
  with pytest.raises(Exception, match='t_mmlu_direct_abstract_algebra.*TASK_FEATURE_LENGTHS'):
    next(ds.as_numpy_iterator())
