"""BIG-Bench Hard tasks on the real benchmark files: official prompts, answer extraction, fitting the length."""

import hashlib
import json
import pathlib

import pytest
import seqio

from tasks import bbh
from tasks import metrics
from tasks import vocab as vocab_lib

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
BBH_DIR = SHARED / 'bbh'
DEV_VOCAB = SHARED / 'vocab' / 'dev_8k.model'

# The prompt of the first sports_understanding example, copied from the official code-davinci-002
# outputs published with the benchmark (code-davinci-002-outputs/…-{direct,cot}/…json, field "input").
SPORTS_Q = 'Q: Is the following sentence plausible? '
OFFICIAL_SPORTS_DIRECT = (
    'Determine whether an artificially constructed sentence relating to sports is plausible or not.\n\n'
    + SPORTS_Q + '"Bam Adebayo scored a reverse layup in the Western Conference Finals."\nA: yes\n\n'
    + SPORTS_Q + '"Santi Cazorla scored a touchdown."\nA: no\n\n'
    + SPORTS_Q + '"DeMar DeRozan was called for the goal tend."\nA: yes\n\n'
    + SPORTS_Q + '"Elias Lindholm beat the buzzer."\nA:')
OFFICIAL_SPORTS_COT = (
    'Determine whether an artificially constructed sentence relating to sports is plausible or not.\n\n'
    + SPORTS_Q + '"Bam Adebayo scored a reverse layup in the Western Conference Finals."\n'
    "A: Let's think step by step. Bam Adebayo is an American basketball player. Scoring a reverse layup in the "
    'Western Conference Finals is part of the NBA Finals. So the answer is yes.\n\n'
    + SPORTS_Q + '"Santi Cazorla scored a touchdown."\n'
    "A: Let's think step by step. Santi Cazorla is a soccer player. Touchdown is part of American football and "
    'rugby. So the answer is no.\n\n'
    + SPORTS_Q + '"DeMar DeRozan was called for the goal tend."\n'
    "A: Let's think step by step. DeMar DeRozan is an American basketball player. Goal tending is part of "
    'basketball. So the answer is yes.\n\n'
    + SPORTS_Q + '"Elias Lindholm beat the buzzer."\n'
    "A: Let's think step by step.")

# sha256 (first 16 hex digits) of the official prompts of each task's first example, (direct, CoT), from the
# same published outputs. The official answer-only runs of three tasks used other exemplar texts than the CoT
# prompt file (see tasks/bbh.py); answer-only prompts here are derived from the CoT file, as Flan-T5's are.
OFFICIAL_PROMPT_SHA256 = {
    'boolean_expressions': ('562b2252f188bb2e', '8ec807b9265d58cd'),
    'causal_judgement': ('aa1a04d6ec90ae5d', 'c6d5677e83d1a91d'),
    'date_understanding': ('5170b38be3502a27', '70c912043fe1b8d8'),
    'disambiguation_qa': ('5f9504a8b9da4867', '7edfe40a3d5839f3'),
    'dyck_languages': ('399333ef1aca851c', '745a738711d26e15'),
    'formal_fallacies': ('cd0d68da2e995545', '993b92385e6c1c1b'),
    'geometric_shapes': ('a35b243d9d74f3bc', 'a008c923aced0eb5'),
    'hyperbaton': ('f99cb39b51a07d7e', '68bd4436ac820f97'),
    'logical_deduction_five_objects': ('dffd76e3195910ab', '98a223010c6df4d1'),
    'logical_deduction_seven_objects': ('b278d6b75edd2c48', 'a26638ea1b1e23f0'),
    'logical_deduction_three_objects': ('ed9bb41a040d3389', '49615cb851855352'),
    'movie_recommendation': ('0617696fa0d2701e', '882759f28dd0a64c'),
    'multistep_arithmetic_two': ('ac2534b0e398a191', '2de50aa4eacd3892'),
    'navigate': ('ef525b2fa0d9d2fb', '99e23a11f6810390'),
    'object_counting': ('06333c6c2d8133b8', '50011e91f0d4051b'),
    'penguins_in_a_table': ('5faef846c79e0db9', '6585843eaf9664e4'),
    'reasoning_about_colored_objects': ('305b44dc9c85618c', '39af6596b2c72fca'),
    'ruin_names': ('fbdc580e1efc9c7f', 'dabeeb5c9d1f638a'),
    'salient_translation_error_detection': ('bbc69b08f655f9ce', '6201ca394f10556d'),
    'snarks': ('c3bb9d85a4898830', 'b6cbdbb48700bb75'),
    'sports_understanding': ('c8a41b8f2ffb6083', '5748504324e52284'),
    'temporal_sequences': ('f7305853f317d7a7', 'a4fc273d5f35dfc3'),
    'tracking_shuffled_objects_five_objects': ('f0fb316aa2729e4a', '0df4c4080bbd6905'),
    'tracking_shuffled_objects_seven_objects': ('816f95f0a2af9e12', '1befc6bb557945bb'),
    'tracking_shuffled_objects_three_objects': ('a51ea0ed5510685e', '4163587cbf51fa7e'),
    'web_of_lies': ('ec103d9bef771eca', 'e164861a2eb4d8cd'),
    'word_sorting': ('3f37d2e8b71e9043', 'f756e063bd32177e'),
}
DIRECT_DIFFERS = ('date_understanding', 'snarks', 'tracking_shuffled_objects_three_objects')


def test_answer_extraction_on_known_strings():
  # No data needed: the official rule (text after "So the answer is", without the final period).
  assert metrics.bbh_answer("Let's think. A = True. So the answer is False.") == 'False'
  assert metrics.bbh_answer('… the date tomorrow is 12/25/1937. So the answer is (B).') == '(B)'
  assert metrics.bbh_answer('So, we need "]", "}". So the answer is ] } ].') == '] } ]'
  assert metrics.bbh_answer('So the answer is 3929.\n\nQ: next question') == '3929'
  assert metrics.bbh_answer('So the answer is -219') == '-219'
  assert metrics.bbh_answer('  (C) ') == '(C)'  # no cue: the whole prediction
  cot = metrics.bbh_cot_exact_match(['(B)', 'valid', 'No'],
                                    ['So the answer is (B).', 'So the answer is invalid.', 'no idea'])
  assert cot == {'exact_match': pytest.approx(100 / 3), 'num_examples': 3.0}
  direct = metrics.bbh_direct_exact_match(['(B)', 'valid'], [' (B)', 'So the answer is valid.'])
  assert direct == {'exact_match': 50.0, 'num_examples': 2.0}


def test_mixtures_registered_without_data():
  for mode in ('direct', 'cot'):
    mixture = seqio.get_mixture_or_task(f'bbh_{mode}')
    assert sorted(t.name for t in mixture.tasks) == sorted(f'bbh_{mode}_{t}' for t in bbh.TASKS)
  assert len(bbh.TASKS) == 27


def test_missing_checkout_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.delenv(bbh.DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match='FLANX_BBH_DIR'):
    bbh.prompt_pieces('navigate', 'cot')
  with pytest.raises(FileNotFoundError, match='navigate.txt'):
    bbh.prompt_pieces('navigate', 'cot', str(tmp_path))


needs_data = pytest.mark.skipif(not (BBH_DIR.is_dir() and DEV_VOCAB.exists()),
                                reason=f'BBH data or dev vocabulary absent ({SHARED}); they live beside the repo')


@needs_data
def test_prompts_match_the_official_ones():
  assert bbh.prompts('sports_understanding', 'direct', str(BBH_DIR))[0] == (OFFICIAL_SPORTS_DIRECT, 'no')
  assert bbh.prompts('sports_understanding', 'cot', str(BBH_DIR))[0] == (OFFICIAL_SPORTS_COT, 'no')
  for task in bbh.TASKS:
    direct, cot = (hashlib.sha256(bbh.prompts(task, mode, str(BBH_DIR))[0][0].encode()).hexdigest()[:16]
                   for mode in ('direct', 'cot'))
    assert cot == OFFICIAL_PROMPT_SHA256[task][1], task
    assert (direct == OFFICIAL_PROMPT_SHA256[task][0]) == (task not in DIRECT_DIFFERS), task
  total = 0
  for task in bbh.TASKS:
    rows = json.loads((BBH_DIR / 'bbh' / f'{task}.json').read_text(encoding='utf-8'))['examples']
    for mode, cue in (('direct', '\nA:'), ('cot', "\nA: Let's think step by step.")):
      pieces = bbh.prompt_pieces(task, mode, str(BBH_DIR))
      assert len(pieces) == len(rows)
      first = pieces[0]
      assert len(first['exemplars']) == 3 and first['query'] == f"Q: {rows[0]['input']}{cue}"
      assert first['targets'] == rows[0]['target']
      if mode == 'direct':  # answer-only exemplars: `A: X` with the answer the CoT exemplar states
        assert all(e.count('\nA: ') == 1 and 'step by step' not in e for e in first['exemplars'])
    total += len(rows)
  assert total == 6511  # as the data README says


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize('length', [512, 2048])
def test_prompts_fit_the_inputs_length_and_keep_the_query(length):
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  bbh.register_bbh(str(BBH_DIR), tasks=('date_understanding', 'dyck_languages'), vocabulary=vocabulary,
                   prefix='t_fit_')
  for task in ('date_understanding', 'dyck_languages'):
    name = f't_fit_bbh_cot_{task}'
    full = bbh.prompts(task, 'cot', str(BBH_DIR))
    pieces = bbh.prompt_pieces(task, 'cot', str(BBH_DIR))
    ds = seqio.get_dataset(name, {'inputs': length, 'targets': 32}, dataset_split='test', shuffle=False,
                           feature_converter=seqio.PassThroughFeatureConverter())
    dropped = 0
    for i, ex in enumerate(ds.take(40).as_numpy_iterator()):
      ids = list(ex['inputs'])
      query = vocabulary.encode(pieces[i]['query'])
      assert len(ids) <= length and ids[-1] == 1
      assert ids[-1 - len(query):-1] == query  # the question and its answer cue are whole
      text = vocabulary.decode(ids[:-1])
      assert text.startswith(pieces[i]['prefix'].rstrip('\n'))
      used = sum(e.rstrip('\n') in text for e in pieces[i]['exemplars'])
      dropped += 3 - used
      if len(vocabulary.encode(full[i][0])) < length:
        assert used == 3 and text == full[i][0]
    if length == 2048:
      assert dropped == 0
  assert length == 2048 or dropped > 0  # at 512 the dyck prompts are too long for all three exemplars


@pytest.mark.slow
@needs_data
def test_prompt_that_cannot_fit_fails_clearly():
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  bbh.register_bbh(str(BBH_DIR), tasks=('navigate',), modes=('direct',), vocabulary=vocabulary,
                   prefix='t_tiny_')
  ds = seqio.get_dataset('t_tiny_bbh_direct_navigate', {'inputs': 16, 'targets': 8}, dataset_split='test',
                         shuffle=False, feature_converter=seqio.PassThroughFeatureConverter())
  with pytest.raises(Exception, match='t_tiny_bbh_direct_navigate.*TASK_FEATURE_LENGTHS'):
    next(ds.as_numpy_iterator())
