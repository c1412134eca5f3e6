"""The Dolly recipe's checkpoint choice end to end: generation metrics in training, keep-best by BLEU across a
kill -9 and resume, every checkpoint re-evaluated by `flanx.eval` (same numbers, same steps), the best exported,
its model card parsed by huggingface_hub, and the run's pictures drawn."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from train_helpers import REPO, TESTS, TINY_MODEL, subprocess_env  # pylint: disable=g-bad-import-order

BLEU = 'inference_eval/flanx_demo/bleu'
ACCURACY = 'eval/validation/accuracy'  # teacher-forced; ranked with BLEU: the recipe's "balance" of BLEU and loss
BATCH, EVAL_BATCHES, STEPS, PERIOD, KEEP = 8, 1, 30, 10, 1


def _train_args(model_dir) -> list[str]:
  return ['--gin_file=runs/demo.gin', f'--gin.MODEL_DIR="{model_dir}"', f'--gin.TRAIN_STEPS={STEPS}',
          f'--gin.CHECKPOINT_PERIOD={PERIOD}', f'--gin.EVAL_PERIOD={PERIOD}', f'--gin.BATCH_SIZE={BATCH}',
          '--gin.NUM_MICROBATCHES=2', "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
          f'--gin.train.eval_batches={EVAL_BATCHES}', '--gin.train.progress_bar=False',
          '--gin.train.truncation_examples=0', '--gin.train.log_every=5',
          f"--gin.train.keep_best={{'metric': ('{BLEU}', '{ACCURACY}'), 'mode': 'max', 'keep': {KEEP}}}",
          '--gin.LEARNING_RATE=0.05'
          ] + ['--gin.' + b.replace(' = ', '=') for b in TINY_MODEL]


def _run(command: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)


def _not_blank(path) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(Image.open(path).convert('L'), np.float32)
  assert image.shape[0] >= 300 and image.shape[1] >= 600, (path, image.shape)
  assert image.std() > 10.0, (path, image.std())  # lines and text on white, not an empty canvas


@pytest.mark.slow
def test_keep_best_eval_every_checkpoint_export_best(tmp_path):
  run = tmp_path / 'run'
  # Killed at step 15, between checkpoints 10 and 20 (a kill on a checkpoint step would wait for that checkpoint,
  # which is saved after the step's metrics: crash_launcher's 10-minute wait, then the same kill).
  killed = _run([sys.executable, str(TESTS / 'crash_launcher.py'), 'mid_step', '15', '--'] + _train_args(run))
  assert killed.returncode == -9, killed.stderr[-3000:]
  resumed = _run([sys.executable, '-m', 'flanx.train'] + _train_args(run))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from' in resumed.stdout + resumed.stderr
  evals = [line for line in resumed.stdout.splitlines() if line.startswith('eval step ')]
  assert [line.split(':')[0] for line in evals] == ['eval step 20', 'eval step 30'], resumed.stdout[-3000:]
  assert 'flanx_demo ' in evals[0] and ' bleu ' in evals[0] and 'exact_match' in evals[0]

  # The kept set: the best KEEP by the sum of each checkpoint's ranks under BLEU and accuracy (as each checkpoint
  # recorded them; ties rank the later step first), plus the newest.
  record = json.loads((run / 'checkpoints.json').read_text())
  recorded = {r['step']: r['metrics'] for r in record['checkpoints']}
  assert sorted(recorded) == [10, 20, 30] and all(BLEU in m and ACCURACY in m for m in recorded.values())
  rank_sum = dict.fromkeys(recorded, 0)
  for metric in (BLEU, ACCURACY):
    for rank, step in enumerate(sorted(recorded, key=lambda s, m=metric: (-recorded[s][m], -s))):
      rank_sum[step] += rank
  order = sorted(recorded, key=lambda s: (rank_sum[s], -s))
  expected = sorted(set(order[:KEEP]) | {STEPS})
  kept = sorted(int(p.name.split('_')[1]) for p in run.glob('checkpoint_*'))
  assert kept == expected and record['best'] == order[0]
  assert sorted(int(p.name.split('_')[1]) for p in (run / 'data_state').iterdir()) == kept
  rows = [json.loads(line) for line in (run / 'train_metrics.jsonl').read_text().splitlines()]
  logged = {r['step']: r[BLEU] for r in rows if BLEU in r}
  assert logged == {s: m[BLEU] for s, m in recorded.items()}  # each eval once, resume included

  # flanx.eval over the run: model, task, lengths and vocabulary from the run's record; every kept checkpoint.
  eval_args = [sys.executable, '-m', 'flanx.eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{run}"',
               f'--gin.BATCH_SIZE={BATCH}', '--gin.MAX_DECODE_LENGTH=16',
               f'--gin.evaluate.num_examples={BATCH * EVAL_BATCHES}', "--gin.evaluate.checkpoints='all'",
               '--gin.evaluate.truncation_examples=0']
  evaluated = _run(eval_args)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  for step in kept:
    result = json.loads((run / 'eval' / f'checkpoint_{step}' / 'validation_metrics.json').read_text())
    assert result['step'] == step and result['checkpoint'] == str(run / f'checkpoint_{step}')
    for metric, value in result['metrics']['flanx_demo'].items():
      assert value == recorded[step][f'inference_eval/flanx_demo/{metric}'], (step, metric)
    predictions = [json.loads(line) for line in
                   (run / 'eval' / f'checkpoint_{step}' / 'validation_predictions.jsonl').read_text().splitlines()]
    assert len(predictions) == BATCH * EVAL_BATCHES
    assert {'input', 'target', 'prediction', 'score'} <= set(predictions[0]) and predictions[0]['input']
    in_training = [json.loads(line) for line in
                   (run / 'inference_eval' / f'flanx_demo-{step:06d}.jsonl').read_text().splitlines()]
    assert [p['prediction'] for p in predictions] == [p['prediction'] for p in in_training]
    assert [p['input'] for p in predictions] == [p['input'] for p in in_training]
    np.testing.assert_allclose([p['score'] for p in predictions], [p['score'] for p in in_training], rtol=1e-5)
  again = _run(eval_args)
  assert again.returncode == 0 and again.stdout.count('already evaluated') == len(kept), again.stdout[-2000:]

  # Export the best: the card names it and its rule, and huggingface_hub parses its model-index.
  out = tmp_path / 'hf'
  exported = _run([sys.executable, '-m', 'flanx.export', f'--checkpoint_dir={run}', f'--output_dir={out}',
                   '--select=best', '--verify=false'])
  assert exported.returncode == 0, exported.stderr[-3000:]
  best = record['best']
  assert f'Exporting {run}/checkpoint_{best} (step {best})' in exported.stdout
  card_text = (out / 'README.md').read_text()
  assert f'This export is `checkpoint_{best}`, chosen as the best by the rank sum of {BLEU} (highest)' in card_text
  assert f'| checkpoint_{best} (exported) |' in card_text
  from huggingface_hub import ModelCard  # pylint: disable=g-import-not-at-top
  card = ModelCard(card_text)
  results = {r.metric_type: r.metric_value for r in card.data.eval_results}
  assert results['bleu'] == pytest.approx(recorded[best][BLEU]) and card.data.eval_results[0].dataset_name == 'flanx_demo'
  for folder in (run, out):
    for picture in ('train_curves.png', 'checkpoints.png'):
      _not_blank(folder / picture)
      assert folder is run or f'![{picture}]({picture})' in card_text
