"""Evaluation behind `python -m flanx.eval` (gin-configurable `evaluate`).

For a task/mixture's eval split: teacher-forced loss/accuracy and the tasks' seqio metrics on decoded
predictions (postprocessors applied by seqio's Evaluator), written to TensorBoard and a JSON file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import gin
import jax
import numpy as np

from flanx import checkpoint_import, data, partitioning, predict, runtime
from flanx import train_state as ts
from flanx.config import T5Config
from flanx.metrics_writer import MetricsWriter


class InferenceModel:
  """Params on a mesh plus jitted predict/score functions over host numpy batches of a fixed size."""

  def __init__(self, checkpoint_path: str, config: T5Config, batch_size: int, **decode_options):
    self.config, self.batch_size = config, batch_size
    self.mesh = partitioning.make_mesh()  # gin: make_mesh.data / make_mesh.model, axis_rules.fsdp
    self.shardings = ts.make_shardings(config, None, self.mesh, partitioning.axis_rules())
    self.params = checkpoint_import.load_sharded_params(checkpoint_path, config, self.shardings.params)
    out = partitioning.replicated(self.mesh)
    self._predict = predict.make_predict_fn(config, out, **decode_options)
    self._score = predict.make_score_fn(config, out)

  def _global(self, batch: Mapping[str, np.ndarray]) -> dict:
    # Every process holds the same full batch (eval data is not sharded by host): build global arrays from it.
    return {k: jax.make_array_from_callback(v.shape, self.shardings.batch, lambda i, v=v: v[i])
            for k, v in batch.items()}

  def predict(self, encoder_input_tokens: np.ndarray, batch_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decoded tokens [rows, max_decode_length] (EOS, then 0s) and scores, for up to batch_size rows."""
    padded, n = data.pad_batch({'encoder_input_tokens': encoder_input_tokens}, self.batch_size)
    with self.mesh, ts.activation_rules(self.shardings):
      tokens, scores = self._predict(self.params, self._global(padded)['encoder_input_tokens'], batch_index)
    return np.asarray(tokens)[:n], np.asarray(scores)[:n]

  def score(self, batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example target log-likelihood, correct-token and target-token counts (teacher forced)."""
    keys = ('encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights')
    padded, n = data.pad_batch({k: batch[k] for k in keys if k in batch}, self.batch_size)
    with self.mesh, ts.activation_rules(self.shardings):
      out = self._score(self.params, self._global(padded))
    return tuple(np.asarray(x)[:n] for x in out)


def _batches(dataset, batch_size: int):
  """(indices, features) numpy batches of an enumerated seqio eval dataset, last one partial."""
  for indices, features in dataset.batch(batch_size).as_numpy_iterator():
    yield indices, features


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
             step: int | None = None) -> dict[str, dict[str, float]]:
  """Evaluates a checkpoint on a task/mixture split; returns {task: {metric: value}}."""
  import seqio
  config = model_config or T5Config()
  data.import_task_modules(mixture_or_task_module)
  output_dir = output_dir or os.path.join(checkpoint_path.rstrip('/'), 'eval')
  model = InferenceModel(checkpoint_path, config, batch_size)
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
  if runtime.is_first_host():
    import tensorflow as tf
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, f'{split}_metrics.json'), 'w') as f:
      json.dump({'checkpoint': checkpoint_path, 'split': split, 'step': step, 'metrics': results}, f, indent=2)
    writer = MetricsWriter(output_dir, split, progress=False)
    writer.write(step or 0, {f'{task}/{k}': v for task, m in results.items() for k, v in m.items()})
    writer.close()
  return results


def _teacher_forced(model: InferenceModel, name: str, lengths: Mapping[str, int], split: str, use_cached: bool,
                    num_examples: int | None) -> dict[str, float]:
  """Loss per target token and token accuracy over the split, unpacked."""
  import seqio
  ds = seqio.get_dataset(name, task_feature_lengths=dict(lengths), dataset_split=split, shuffle=False,
                         num_epochs=1, use_cached=use_cached, feature_converter=seqio.EncDecFeatureConverter(pack=False))
  if num_examples is not None:
    ds = ds.take(num_examples)
  loss = correct = count = 0.0
  for batch in ds.batch(model.batch_size).as_numpy_iterator():
    ll, c, n = model.score(batch)
    loss, correct, count = loss - ll.sum(), correct + c.sum(), count + n.sum()
  return {'loss_per_nonpadding_target_token': float(loss / max(count, 1.0)), 'accuracy': float(correct / max(count, 1.0))}


def _scalar(value: Any) -> float:
  """seqio metric values may be plain floats or clu-style Scalar objects."""
  return float(getattr(value, 'value', value))
