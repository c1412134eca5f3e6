"""Evaluation behind `python -m flanx.eval` (gin-configurable `evaluate`).

For a task/mixture's eval split: teacher-forced loss/accuracy and the tasks' seqio metrics on decoded
predictions (postprocessors applied by seqio's Evaluator), written to TensorBoard and a JSON file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import gin

from flanx.inference import eval_report, eval_run
from flanx.inference.seqio_eval import make_evaluator, seqio_eval
from flanx.inference.inference_model import InferenceModel
from flanx.model.config import T5Config
from flanx.training import data, profiling, run_builder, runtime, steps
from flanx.training.metrics_writer import MetricsWriter


def output_folder(checkpoint_path: str, output_dir: str | None = None) -> str:
  """Where evaluate writes: `output_dir`, by default `<checkpoint_path>/eval`."""
  return output_dir or os.path.join(checkpoint_path.rstrip('/'), 'eval')


@gin.configurable
def evaluate(*,
             checkpoint_path: str = gin.REQUIRED,
             mixture_or_task_name: str = gin.REQUIRED,
             task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
             batch_size: int = gin.REQUIRED,
             output_dir: str | None = None,
             model_config: T5Config | None = None,
             peft: str | None = None,
             mixture_or_task_module: str | None = None,
             split: str = 'validation',
             num_examples: int | None = None,
             use_cached_tasks: bool = False,
             step: int | None = None,
             truncation_examples: int = 1000,
             profile_batches: tuple[int, ...] | None = None,
             checkpoints: str = 'newest',
             wait_timeout: float = 3600.0,
             poll_seconds: float = 30.0) -> dict[str, Any]:
  """Evaluates a checkpoint (or a run's checkpoints) on a task/mixture split; returns {task: {metric: value}}
  ('all' / 'wait': {'checkpoint_<step>': {task: {metric: value}}}).

  `checkpoints`: 'newest', 'all' or 'wait' (flanx.inference.eval_run). Each result records the checkpoint's real
  step (`step` overrides it) and path; per-example predictions go to `<split>_predictions.jsonl` beside it.
  First it reports how much of each task the lengths cut (`truncation_examples` examples each; 0: no report).
  `profile_batches=(start, count[, every])` traces those decode batches into `<output_dir>/<split>/plugins/profile`.
  `peft` (the macro PEFT, as the run trained): the PEFT method of the checkpoint (flanx.training.run_builder).
  """
  if not mixture_or_task_name:
    raise ValueError(f'MIXTURE_OR_TASK_NAME is not set and {checkpoint_path} recorded no task (not a flanx run): '
                     'name the seqio task or mixture to evaluate, e.g. --gin.MIXTURE_OR_TASK_NAME=\\"dolly\\"')
  config = run_builder.model_config(model_config, peft)
  data.import_task_modules(mixture_or_task_module)
  log = lambda line: print(line, flush=True) if runtime.is_first_host() else None
  plan = eval_run.targets(checkpoint_path, checkpoints, output_dir, split, wait_timeout, poll_seconds, log)
  truncation_lines, truncation = (data.truncation_report(mixture_or_task_name, task_feature_lengths, split,
                                                          truncation_examples) if truncation_examples else ([], {}))
  log('\n'.join(truncation_lines))
  evaluator = make_evaluator(mixture_or_task_name, task_feature_lengths, split, use_cached_tasks, num_examples)
  model, everything, results = None, {}, {}
  for target in plan:
    try:
      if model is None:  # metrics score the best decode
        model = InferenceModel(target.path, config, batch_size, return_all_decodes=False)
        model.profiler = profiling.Profiler(profiling.parse_window(profile_batches, 'evaluate.profile_batches'),
                                            os.path.join(target.output_dir, split))
      else:
        model.load(target.path)  # the compiled decode is reused
    except (FileNotFoundError, OSError, ValueError) as e:
      if not eval_run.vanished(target):
        raise
      log(f'{os.path.basename(target.path)} was deleted before it was evaluated (keep_checkpoints / keep_best); '
          f'skipped ({type(e).__name__})')
      continue
    at = target.step if step is None else step
    results, predictions = seqio_eval(evaluator, model, at)
    results['teacher_forced'] = _teacher_forced(model, mixture_or_task_name, task_feature_lengths, split,
                                                use_cached_tasks, num_examples)
    if truncation:
      results['truncation'] = {k.split('/', 1)[1]: v for k, v in truncation.items()}
    if runtime.is_first_host():
      _write(target, at, split, results, predictions, config)
      log(_summary(target, at, results))
    everything[f'checkpoint_{at}'] = results
  return results if checkpoints == 'newest' else everything


def _write(target: eval_run.Target, step: int | None, split: str, results: Mapping[str, Any],
           predictions: Mapping[str, list], config: T5Config) -> None:
  import tensorflow as tf
  tf.io.gfile.makedirs(target.output_dir)
  with tf.io.gfile.GFile(os.path.join(target.output_dir, f'{split}_predictions.jsonl'), 'w') as f:
    for task, rows in predictions.items():
      f.write(''.join(json.dumps({'task': task, **row}) + '\n' for row in rows))
  with tf.io.gfile.GFile(os.path.join(target.output_dir, f'{split}_metrics.json'), 'w') as f:
    json.dump({'checkpoint': target.path, 'split': split, 'step': step, 'metrics': results}, f, indent=2)
  writer = MetricsWriter(target.summary_dir, split, progress=False)
  writer.write(step or 0, {f'{task}/{k}': v for task, m in results.items() for k, v in m.items()})
  writer.close()
  table = eval_report.report(results, config, split)  # BBH / MMLU tasks: per task, averages, the paper's figures
  if table:
    print(table, flush=True)
    with tf.io.gfile.GFile(os.path.join(target.output_dir, f'{split}_report.txt'), 'w') as f:
      f.write(table)


def _summary(target: eval_run.Target, step: int | None, results: Mapping[str, Any]) -> str:
  """One console line per evaluated checkpoint."""
  parts = [f'{task} ' + ' '.join(f'{k} {v:.4g}' for k, v in metrics.items())
           for task, metrics in results.items() if task != 'truncation']
  return f'eval {os.path.basename(target.path.rstrip("/"))} (step {step}): ' + ' | '.join(parts) + \
      f' -> {target.output_dir}'


def _teacher_forced(model: InferenceModel, name: str, lengths: Mapping[str, int], split: str, use_cached: bool,
                    num_examples: int | None) -> dict[str, float]:
  """Loss per target token and token accuracy over the split, unpacked (one example per row)."""
  import seqio
  ds = seqio.get_dataset(name, task_feature_lengths=dict(lengths), dataset_split=split, shuffle=False,
                         num_epochs=1, use_cached=use_cached, feature_converter=seqio.EncDecFeatureConverter(pack=False))
  if num_examples is not None:
    ds = ds.take(num_examples)
  scores = (model.score(batch) for batch in ds.batch(model.batch_size).as_numpy_iterator())
  return steps.teacher_forced_metrics({'loss': -ll, 'num_correct': c, 'weight_sum': n} for ll, c, n in scores)
