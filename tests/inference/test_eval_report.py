"""The BBH / MMLU report of `python -m flanx.eval`: tables, averages, the Flan-T5 paper's figures, end to end."""

import pathlib

import pytest

from flanx.inference import eval_report
from flanx.model.config import T5Config
from tasks import bbh
from tasks import metrics
from tasks import mmlu

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'data'
BBH_DIR = SHARED / 'bbh'
DEV_VOCAB = SHARED / 'vocab' / 'dev_8k.model'
SMALL = T5Config(d_model=512, d_ff=1024, num_heads=6, num_encoder_layers=8, num_decoder_layers=8)


def _row(table, label):
  return next(line for line in table.splitlines() if line.startswith(label + ' ')).split()


def test_published_model_from_the_shape():
  assert eval_report.published_model(SMALL) == 'flan-t5-small'
  assert eval_report.published_model(T5Config(d_model=4096, d_ff=10240, num_heads=64, num_encoder_layers=24,
                                               num_decoder_layers=24)) == 'flan-t5-xxl'
  assert eval_report.published_model(T5Config(d_model=32, d_ff=64, num_heads=4)) is None
  assert eval_report.PUBLISHED['flan-t5-small'] == {'mmlu_direct': 28.7, 'mmlu_cot': 12.1, 'bbh_direct': 29.1,
                                                     'bbh_cot': 19.2}  # paper Table 5 (FACTS.md)


def test_bbh_table_macro_average_beside_the_paper():
  # Scores as the task metric computes them from known model outputs (official answer extraction).
  outputs = {task: (['(A)', 'No'], ['Step. So the answer is (A).', 'So the answer is Yes.']) for task in bbh.TASKS}
  outputs['navigate'] = (['No', 'Yes'], ['So the answer is No.', 'So the answer is Yes.\n\nQ: more'])
  results = {f'bbh_cot_{t}': metrics.bbh_cot_exact_match(*pair) for t, pair in outputs.items()}
  results['teacher_forced'] = {'accuracy': 0.1}
  table = eval_report.report(results, SMALL, 'validation')
  assert table.splitlines()[0] == 'BBH, chain of thought, 3-shot (exact_match, %)'
  assert 'paper (flan-t5-small)' in table.splitlines()[1]
  assert _row(table, 'navigate') == ['navigate', '2', '100.0']
  assert _row(table, 'snarks') == ['snarks', '2', '50.0']
  macro = (100 + 26 * 50) / 27
  assert _row(table, 'macro average') == ['macro', 'average', '54', f'{macro:.1f}', '19.2']
  assert 'note' not in table and 'MMLU' not in table


def test_mmlu_table_categories_and_partial_suite():
  results = {'mmlu_direct_abstract_algebra': {'accuracy': 50.0, 'num_examples': 100.0},  # STEM
             'mmlu_direct_anatomy': {'accuracy': 25.0, 'num_examples': 40.0},  # other
             'mmlu_direct_college_physics': {'accuracy': 20.0, 'num_examples': 100.0},  # STEM
             'dolly': {'rougeL': 3.0}}
  table = eval_report.report(results, SMALL, 'test')
  assert _row(table, 'STEM') == ['STEM', '200', '35.0']
  assert _row(table, 'other') == ['other', '40', '25.0']
  assert _row(table, 'average over examples') == ['average', 'over', 'examples', '240', '33.3', '—']
  assert _row(table, 'average over subjects') == ['average', 'over', 'subjects', '240', '31.7']
  assert 'only 3 of 57 tasks: not comparable with the paper' in table
  assert _row(table, 'anatomy')[-1] == '[other]'
  assert eval_report.report({'dolly': {'rougeL': 3.0}}, SMALL, 'test') is None
  full = {f'mmlu_direct_{s}': {'accuracy': 40.0, 'num_examples': 10.0} for s in mmlu.SUBJECTS}
  table = eval_report.report(full, SMALL, 'validation')
  assert _row(table, 'average over examples') == ['average', 'over', 'examples', '570', '40.0', '28.7']
  assert "split 'validation': the paper reports the test split" in table


@pytest.mark.skipif(not (BBH_DIR.is_dir() and DEV_VOCAB.exists()),
                    reason=f'BBH data or dev vocabulary absent ({SHARED}); they live beside the repo')
def test_tiny_model_evaluated_on_bbh_prints_the_table(tmp_path, capsys):
  import gin
  import jax
  from flanx.inference import evaluate as evaluation
  from flanx.model import network
  from flanx.training import checkpoints
  from tasks import vocab as vocab_lib
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  bbh.register_bbh(str(BBH_DIR), tasks=('navigate', 'web_of_lies'), modes=('direct',), vocabulary=vocabulary,
                   prefix='t_report_')
  config = T5Config(vocab_size=8128, d_model=16, d_kv=4, num_heads=2, d_ff=16, num_encoder_layers=1,
                    num_decoder_layers=1)
  assert vocabulary.vocab_size <= config.vocab_size
  params = jax.device_get(network.init_params(config, jax.random.key(0)))
  checkpoints.write_params_checkpoint(str(tmp_path / 'run'), 0, params, {'step': 0})
  gin.clear_config()
  try:
    results = evaluation.evaluate(checkpoint_path=str(tmp_path / 'run'), mixture_or_task_name='t_report_bbh_direct',
                                  task_feature_lengths={'inputs': 512, 'targets': 8}, batch_size=4,
                                  model_config=config, split='test', num_examples=3, output_dir=str(tmp_path / 'eval'))
  finally:
    gin.clear_config()
  for task in ('navigate', 'web_of_lies'):
    assert results[f't_report_bbh_direct_{task}']['num_examples'] == 3
    assert 0 <= results[f't_report_bbh_direct_{task}']['exact_match'] <= 100
  table = (tmp_path / 'eval' / 'test_report.txt').read_text()
  assert table in capsys.readouterr().out
  lines = table.splitlines()
  assert lines[0] == 'BBH, answer only, 3-shot (exact_match, %)'
  assert [line.split()[:2] for line in lines[2:4]] == [['navigate', '3'], ['web_of_lies', '3']]
  assert _row(table, 'macro average')[:3] == ['macro', 'average', '6']
  assert 'only 2 of 27 tasks: not comparable with the paper' in table
  assert 'model shape is not a public Flan checkpoint' in table
