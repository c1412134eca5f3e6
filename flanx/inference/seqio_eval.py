"""seqio's Evaluator driven by an InferenceModel: the one decode-and-score path of flanx.eval and the trainer.

Not gin-configurable (the trainer imports it after its config is locked).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from flanx.inference.inference_model import InferenceModel


def _batches(dataset, batch_size: int):
  """(indices, features) numpy batches of an enumerated seqio eval dataset, last one partial."""
  for indices, features in dataset.batch(batch_size).as_numpy_iterator():
    yield indices, features


class _NoLoggersNotice(logging.Filter):
  """seqio warns that an Evaluator without loggers logs nothing; flanx writes the results itself."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "'logger_cls' is empty" not in str(record.getMessage())


def make_evaluator(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], split: str,
                   use_cached: bool = False, num_examples: int | None = None):
  """seqio's Evaluator over the split's first `num_examples` examples (None: all), one example per row."""
  import seqio
  notice = _NoLoggersNotice()
  for logger in (logging.getLogger(), logging.getLogger('absl')):
    logger.addFilter(notice)
  try:
    return seqio.Evaluator(
        mixture_or_task_name=mixture_or_task_name, feature_converter=seqio.EncDecFeatureConverter(pack=False),
        eval_split=split, use_cached=use_cached, sequence_length=dict(task_feature_lengths),
        num_examples=num_examples)
  finally:
    for logger in (logging.getLogger(), logging.getLogger('absl')):
      logger.removeFilter(notice)


def seqio_eval(evaluator, model: InferenceModel, step: int | None = None
               ) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
  """Decodes (and scores) the evaluator's examples with `model` and computes its tasks' metric_fns on every host.

  Returns ({task: {metric: value}}, {task: per-example rows {index, input, target, prediction, score}}): the
  same code path for `flanx.eval` and the trainer's inference eval, so both give the same numbers.
  """
  import seqio
  batch_size = model.batch_size
  decode_scores: list[dict[int, float]] = []  # one per predict_fn call: seqio calls it task by task

  def predict_fn(dataset, model_feature_shapes=None) -> list[tuple[int, np.ndarray]]:
    out, scores = [], {}
    for i, (indices, features) in enumerate(_batches(dataset, batch_size)):
      tokens, score = model.predict(features['encoder_input_tokens'], i)
      out.extend(zip(indices.tolist(), tokens))  # seqio's vocabularies cut at EOS when decoding
      scores.update(zip(indices.tolist(), np.asarray(score, np.float64).tolist()))
    decode_scores.append(scores)
    return out

  def score_fn(dataset, model_feature_shapes=None) -> list[tuple[int, float]]:
    out = []
    for indices, features in _batches(dataset, batch_size):
      out.extend(zip(indices.tolist(), model.score(features)[0].tolist()))
    return out

  metrics_future, outputs = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn,
                                               score_fn=score_fn)
  results = {task: {k: scalar(v) for k, v in task_metrics.items()}
             for task, task_metrics in (metrics_future.result() or {}).items()}
  prediction = seqio.metrics.ModelOutputType.PREDICTION
  decoded = [t for t in evaluator.eval_tasks if prediction in outputs.get(t.name, {})]
  rows = {task.name: _prediction_rows(task, evaluator.cached_task_datasets[task.name], outputs[task.name][prediction],
                                      scores)
          for task, scores in zip(decoded, decode_scores)}
  return results, rows


def _prediction_rows(task, dataset, tokens, scores: Mapping[int, float]) -> list[dict[str, Any]]:
  """{index, input, target, prediction, score} per example (texts as the task's vocabulary decodes them)."""
  vocabulary = task.output_features['targets'].vocabulary
  text = lambda v: v.decode('utf-8', 'replace') if isinstance(v, bytes) else v
  rows = []
  for index, (example, predicted) in enumerate(zip(dataset.as_numpy_iterator(), tokens)):
    rows.append({'index': index, 'input': text(example.get('inputs_pretokenized', '')),
                 'target': text(example.get('targets_pretokenized', '')),
                 'prediction': vocabulary.decode([int(t) for t in np.asarray(predicted).reshape(-1)]),
                 'score': scores.get(index)})
  return rows


def scalar(value: Any) -> float:
  """seqio metric values may be plain floats or clu-style Scalar objects."""
  return float(getattr(value, 'value', value))
