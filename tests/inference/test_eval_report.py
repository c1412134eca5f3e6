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


@pytest.mark.slow
@pytest.mark.skipif(not (BBH_DIR.is_dir() and DEV_VOCAB.exists()),
                    reason=f'BBH data or dev vocabulary absent ({SHARED}); they live beside the repo')
def test_one_command_on_a_tiny_model_prints_the_bbh_table(tmp_path, capsys, monkeypatch):
  """`python -m flanx.eval --gin_file=runs/eval_flan_suite.gin …` end to end (random tiny model, 3 examples)."""
  import json
  import gin
  import jax
  from flanx import eval as eval_cli
  from flanx.model import network
  from flanx.training import checkpoints
  from tasks import vocab as vocab_lib
  monkeypatch.setenv('FLANX_BBH_DIR', str(BBH_DIR))
  monkeypatch.setenv('FLANX_VOCAB', str(DEV_VOCAB))
  bbh.register_bbh()  # the default tasks afresh: an earlier test may have resolved their lazy vocabulary
  tiny = dict(vocab_size=8128, d_model=16, d_kv=4, num_heads=2, d_ff=16, num_encoder_layers=1, num_decoder_layers=1)
  assert vocab_lib.get_vocabulary(str(DEV_VOCAB)).vocab_size <= tiny['vocab_size']
  params = jax.device_get(network.init_params(T5Config(**tiny), jax.random.key(0)))
  checkpoints.write_params_checkpoint(str(tmp_path / 'run'), 0, params, {'step': 0})
  argv = ['--gin_file=runs/eval_flan_suite.gin', f'--gin.CHECKPOINT_PATH="{tmp_path / "run"}"',
          '--gin.MIXTURE_OR_TASK_NAME="bbh_direct_navigate"', '--gin.evaluate.num_examples=3',
          '--gin.MAX_DECODE_LENGTH=8', "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 8}",
          f'--gin.EVAL_OUTPUT_DIR="{tmp_path / "eval"}"'] + [f'--gin.T5Config.{k}={v}' for k, v in tiny.items()]
  gin.clear_config()
  try:
    assert eval_cli.main(argv) == 0
  finally:
    gin.clear_config()
  out = capsys.readouterr().out
  table = (tmp_path / 'eval' / 'test_report.txt').read_text()
  assert table in out
  results = json.loads((tmp_path / 'eval' / 'test_metrics.json').read_text())['metrics']
  score = results['bbh_direct_navigate']['exact_match']
  assert results['bbh_direct_navigate']['num_examples'] == 3 and score in (0.0, 100 / 3, 200 / 3, 100.0)
  lines = table.splitlines()
  assert lines[0] == 'BBH, answer only, 3-shot (exact_match, %)'
  assert lines[2].split() == ['navigate', '3', f'{score:.1f}']
  assert _row(table, 'macro average') == ['macro', 'average', '3', f'{score:.1f}', '—']
  assert 'only 1 of 27 tasks: not comparable with the paper' in table
  assert 'model shape is not a public Flan checkpoint' in table


def test_suite_gin_file_and_data_settings_from_the_command_line():
  import gin
  from flanx import gin_config
  from tasks import bbh as bbh_tasks
  gin.clear_config()
  try:
    gin_config.parse_gin(['runs/eval_flan_suite.gin'], [
        'CHECKPOINT_PATH = "/ckpt"', 'tasks.bbh.bbh_dir.path = "/data/BIG-Bench-Hard"',
        'tasks.mmlu.mmlu_dir.path = "/data/mmlu/data"'])
    assert bbh_tasks.bbh_dir() == '/data/BIG-Bench-Hard' and mmlu.mmlu_dir() == '/data/mmlu/data'
    assert gin.query_parameter('%EVAL_SPLIT') == 'test'
    assert gin.query_parameter('%TASK_FEATURE_LENGTHS') == {'inputs': 2048, 'targets': 256}
    assert gin.query_parameter('%MIXTURE_OR_TASK_MODULE') == 'tasks'
  finally:
    gin.clear_config()
