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
from flanx.inference.inference_model import InferenceModel
from flanx.model.config import T5Config
from flanx.training import data, profiling, runtime, steps
from flanx.training.metrics_writer import MetricsWriter


def _batches(dataset, batch_size: int):
  """(indices, features) numpy batches of an enumerated seqio eval dataset, last one partial."""
  for indices, features in dataset.batch(batch_size).as_numpy_iterator():
    yield indices, features


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
             mixture_or_task_module: str | None = None,
             split: str = 'validation',
             num_examples: int | None = None,
             use_cached_tasks: bool = False,
             step: int | None = None,
             truncation_examples: int = 1000,
             profile_batches: tuple[int, ...] | None = None) -> dict[str, dict[str, float]]:
  """Evaluates a checkpoint on a task/mixture split; returns {task: {metric: value}}.

  First it reports how much of each task the lengths cut (`truncation_examples` examples each; 0: no report).
  `profile_batches=(start, count[, every])` traces those decode batches into `<output_dir>/<split>/plugins/profile`.
  """
  import seqio
  config = model_config or T5Config()
  data.import_task_modules(mixture_or_task_module)
  output_dir = output_folder(checkpoint_path, output_dir)
  truncation_lines, truncation = (data.truncation_report(mixture_or_task_name, task_feature_lengths, split,
                                                          truncation_examples) if truncation_examples else ([], {}))
  if runtime.is_first_host():
    print('\n'.join(truncation_lines), flush=True)
  model = InferenceModel(checkpoint_path, config, batch_size, return_all_decodes=False)  # metrics score the best
  model.profiler = profiling.Profiler(profiling.parse_window(profile_batches, 'evaluate.profile_batches'),
                                      os.path.join(output_dir, split))
  evaluator = seqio.Evaluator(
      mixture_or_task_name=mixture_or_task_name, feature_converter=seqio.EncDecFeatureConverter(pack=False),
      eval_split=split, use_cached=use_cached_tasks, sequence_length=dict(task_feature_lengths),
      num_examples=num_examples)

  def predict_fn(dataset, model_feature_shapes=None) -> list[tuple[int, np.ndarray]]:
    out = []
    for i, (indices, features) in enumerate(_batches(dataset, batch_size)):
      tokens, _ = model.predict(features['encoder_input_tokens'], i)
      out.extend(zip(indices.tolist(), tokens))  # seqio's vocabularies cut at EOS when decoding
    return out

  def score_fn(dataset, model_feature_shapes=None) -> list[tuple[int, float]]:
    out = []
    for indices, features in _batches(dataset, batch_size):
      out.extend(zip(indices.tolist(), model.score(features)[0].tolist()))
    return out

  metrics_future, _ = evaluator.evaluate(compute_metrics=runtime.is_first_host(), step=step,
                                         predict_fn=predict_fn, score_fn=score_fn)
  results = {task: {k: _scalar(v) for k, v in task_metrics.items()}
             for task, task_metrics in (metrics_future.result() if metrics_future else {}).items()}
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


def _scalar(value: Any) -> float:
  """seqio metric values may be plain floats or clu-style Scalar objects."""
  return float(getattr(value, 'value', value))
