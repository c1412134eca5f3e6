"""Native CoT tasks on the real FLAN CoT TSVs: templates, few-shot packing, capped mixture."""

import pathlib

import numpy as np
import pytest
import seqio

from tasks import cot
from tasks import templates
from tasks import vocab as vocab_lib

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
COT_DIR = SHARED / 'flan_cot'
DEV_VOCAB = SHARED / 'vocab' / 'dev_8k.model'
DATASETS = ('aqua', 'creak', 'ecqa', 'gsm8k', 'sensemaking')

if not (COT_DIR.is_dir() and DEV_VOCAB.exists()):
  pytest.skip(f'shared CoT data or dev vocabulary absent ({SHARED}); they live beside the repo',
              allow_module_level=True)


def file_rows(dataset):
  """(question, answer, rationale) rows read independently of the task code."""
  text = (COT_DIR / f'{dataset}_train.tsv').read_text(encoding='utf-8')
  return [line.split('\t') for line in text.split('\n') if line.strip()]


@pytest.fixture(scope='module')
def vocabulary():
  return vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')


@pytest.fixture(scope='module')
def names(vocabulary):
  return cot.register_cot(str(COT_DIR), DATASETS, cap=3000, few_shot_budget=512,
                          vocabulary=vocabulary, prefix='t_')


def test_zero_shot_answer_and_reasoning(names):
  rows = file_rows('creak')
  answer_task = seqio.get_mixture_or_task('t_cot_creak_zs_answer')
  rendered = answer_task.source.render('train')
  assert len(rendered) == len(rows)
  for (inputs, targets), (question, answer, _) in zip(rendered[:200], rows):
    question = question.replace('\\n', '\n')
    assert targets == answer and question in inputs and '\\n' not in inputs
  reasoning = seqio.get_mixture_or_task('t_cot_creak_zs_reasoning').source.render('train')
  for (_, targets), (_, answer, rationale) in zip(reasoning[:200], rows):
    assert rationale.replace('\\n', '\n') in targets and answer in targets
  # The four phrasings are all in use, chosen per example with a seed.
  used = {t.inputs.split('{question}')[0] for t in templates.COT_WITH_REASONING}
  assert sum(any(i.startswith(u) for u in used if u) for i, _ in reasoning[:200]) > 50


@pytest.mark.slow
def test_few_shot_within_budget_never_self(names, vocabulary):
  source = seqio.get_mixture_or_task('t_cot_gsm8k_fs_reasoning').source
  zero = seqio.get_mixture_or_task('t_cot_gsm8k_zs_reasoning').source.render('train')
  records = [dict(zip(cot.COLUMNS, (f.replace('\\n', '\n') for f in row)))
             for row in file_rows('gsm8k')]
  few = source.render('train')
  sep = templates.EXEMPLAR_SEPARATOR
  counts = []
  for i in range(0, 150, 10):
    inputs, targets = few[i]
    assert few[i] == (inputs, targets)  # deterministic
    assert targets == zero[i][1] and inputs.endswith(zero[i][0])
    prefix = inputs[:len(inputs) - len(zero[i][0])]
    template = next(t for t in templates.COT_WITH_REASONING
                    if t.render(records[i]) == zero[i])
    own = templates.exemplar_text(*template.render(records[i]))
    assert own + sep not in prefix
    found = [j for j, r in enumerate(records)
             if templates.exemplar_text(*template.render(r)) + sep in prefix]
    assert i not in found
    counts.append(len(found))
    # Lossless ids make the length additive: exemplars + separators + query, within budget.
    length = len(vocabulary.encode(inputs))
    assert length <= 512
    assert length == len(vocabulary.encode(zero[i][0])) + sum(
        len(vocabulary.encode(templates.exemplar_text(*template.render(records[j])))) + 2
        for j in found)
  assert np.mean(counts) >= 2  # a 512-token budget holds a few gsm8k exemplars


def test_few_shot_trims_for_non_additive_vocabulary():
  plain = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'none')
  cot.register_cot(str(COT_DIR), ('aqua',), few_shot_budget=300, vocabulary=plain,
                   prefix='t_plain_')
  few = seqio.get_mixture_or_task('t_plain_cot_aqua_fs_answer').source.render('train')
  assert all(len(plain.encode(few[i][0])) <= 300 for i in range(30))


@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['aqua', 'gsm8k'])
def test_few_shot_fits_the_run_inputs_length_and_keeps_the_question(vocabulary, dataset):
  # Default budget (1920 tokens, Flan's few-shot cap) at a 512-token run: the prompt used to be filled
  # far past 512 and seqio kept its start, cutting the question. Now the run's length decides.
  cot.register_cot(str(COT_DIR), (dataset,), vocabulary=vocabulary, prefix='t_len_')
  for answer in ('answer', 'reasoning'):
    zero = seqio.get_mixture_or_task(f't_len_cot_{dataset}_zs_{answer}').source.render('train')
    ds = seqio.get_dataset(f't_len_cot_{dataset}_fs_{answer}', {'inputs': 512, 'targets': 256},
                           dataset_split='train', shuffle=False,
                           feature_converter=seqio.PassThroughFeatureConverter())
    shots = []
    for i, ex in enumerate(ds.take(30).as_numpy_iterator()):
      ids, query = list(ex['inputs']), vocabulary.encode(zero[i][0])
      assert len(query) < 511 and len(ids) <= 512 and ids[-1] == 1
      assert ids[-1 - len(query):-1] == query, i  # the question and its answer cue are whole
      shots.append(vocabulary.decode(ids[:-1]).count(templates.EXEMPLAR_SEPARATOR))
    assert np.mean(shots) >= 3  # exemplars still fill the room left


@pytest.mark.slow
def test_mixture_rates_are_capped_counts(names):
  mixture = seqio.get_mixture_or_task('t_cot_native')
  sizes = {d: len(file_rows(d)) for d in DATASETS}
  assert max(sizes.values()) > 3000 > min(sizes.values())  # the cap matters here
  capped = {d: min(n, 3000) for d, n in sizes.items()}
  total = 4 * sum(capped.values())
  for dataset, c in capped.items():
    for variant in ('zs_answer', 'zs_reasoning', 'fs_answer', 'fs_reasoning'):
      task = seqio.get_mixture_or_task(f't_cot_{dataset}_{variant}')
      assert mixture.get_rate(task) / mixture.total_rate == pytest.approx(c / total)


@pytest.mark.slow
def test_packed_cot_batches(names, vocabulary):
  ds = seqio.get_dataset('t_cot_aqua_zs_reasoning', {'inputs': 128, 'targets': 64},
                         feature_converter=seqio.EncDecFeatureConverter(pack=True),
                         dataset_split='train', shuffle=False)
  batch = next(ds.batch(2).as_numpy_iterator())
  assert batch['encoder_input_tokens'].shape == (2, 128)
  inputs, targets = seqio.get_mixture_or_task('t_cot_aqua_zs_reasoning').source.render('train')[0]
  seg = batch['encoder_segment_ids'][0] == 1
  first_inputs = batch['encoder_input_tokens'][0][seg]
  assert list(first_inputs) == vocabulary.encode(inputs)[:127] + [1]
  # Real newlines reach the model as the dedicated id and decode back.
  assert vocabulary.newline_id in first_inputs
  if len(vocabulary.encode(inputs)) < 128:
    assert vocabulary.decode(first_inputs) == inputs
  seg = batch['decoder_segment_ids'][0] == 1
  assert list(batch['decoder_target_tokens'][0][seg]) == vocabulary.encode(targets)[:63] + [1]
