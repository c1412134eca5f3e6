"""Evaluation behind `python -m flanx.eval` (gin-configurable `evaluate`).

For a task/mixture's eval split: teacher-forced loss/accuracy and the tasks' seqio metrics on decoded
predictions (postprocessors applied by seqio's Evaluator), written to TensorBoard and a JSON file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import gin
import numpy as np

from flanx.inference import eval_report
from flanx.inference.seqio_eval import make_evaluator, seqio_eval, scalar as _scalar
from flanx.inference.inference_model import InferenceModel
from flanx.model.config import T5Config
from flanx.training import data, runtime, steps
from flanx.training.metrics_writer import MetricsWriter


@gin.configurable
def evaluate(*,
             checkpoint_path: str = gin.REQUIRED,
             mixture_or_task_name: str = gin.REQUIRED,
             task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
             batch_size: int = gin.REQUIRED,
             output_dir: str | None = None,
             model_config: T5Config | None = None,
             mixture_or_task_module: str | None = None,
             split: str = 'validation',
             num_examples: int | None = None,
             use_cached_tasks: bool = False,
             step: int | None = None,
             truncation_examples: int = 1000) -> dict[str, dict[str, float]]:
  """Evaluates a checkpoint on a task/mixture split; returns {task: {metric: value}}.

  First it reports how much of each task the lengths cut (`truncation_examples` examples each; 0: no report).
  """
  import seqio
  config = model_config or T5Config()
  data.import_task_modules(mixture_or_task_module)
  output_dir = output_dir or os.path.join(checkpoint_path.rstrip('/'), 'eval')
  truncation_lines, truncation = (data.truncation_report(mixture_or_task_name, task_feature_lengths, split,
                                                          truncation_examples) if truncation_examples else ([], {}))
  if runtime.is_first_host():
    print('\n'.join(truncation_lines), flush=True)
  model = InferenceModel(checkpoint_path, config, batch_size, return_all_decodes=False)  # metrics score the best
  evaluator = make_evaluator(mixture_or_task_name, task_feature_lengths, split, use_cached_tasks, num_examples)
  results, predictions = seqio_eval(evaluator, model, step)
  results['teacher_forced'] = _teacher_forced(model, mixture_or_task_name, task_feature_lengths, split,
                                              use_cached_tasks, num_examples)
  if truncation:
    results['truncation'] = {k.split('/', 1)[1]: v for k, v in truncation.items()}
  if runtime.is_first_host():
    import tensorflow as tf
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, f'{split}_metrics.json'), 'w') as f:
      json.dump({'checkpoint': checkpoint_path, 'split': split, 'step': step, 'metrics': results}, f, indent=2)
    writer = MetricsWriter(output_dir, split, progress=False)
    writer.write(step or 0, {f'{task}/{k}': v for task, m in results.items() for k, v in m.items()})
    writer.close()
    table = eval_report.report(results, config, split)  # BBH / MMLU tasks: per task, averages, the paper's figures
    if table:
      print(table, flush=True)
      with tf.io.gfile.GFile(os.path.join(output_dir, f'{split}_report.txt'), 'w') as f:
        f.write(table)
  return results


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
