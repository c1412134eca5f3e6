"""Generation metrics during training (t5x's `infer_eval`): on EVAL_PERIOD, decode the eval split and score it.

The trainer's params are decoded with the run's decode options (gin `decode_options.*`; unbound ones default to
t5x's eval decoder, beam search with one beam, up to TASK_FEATURE_LENGTHS['targets'] tokens) over the first
`eval_batches` batches of BATCH_SIZE examples (all of the split when None), one example per row whatever the
training packing, and the task's seqio `metric_fns` are computed. The metrics go to TensorBoard and the metrics
JSONL as `inference_eval/<task>/<metric>` (t5x's names), with `timing/inference_eval_seconds`; the first eval
also reports the seconds spent compiling the decode. The decoded examples (input, target, prediction, score) go to
MODEL_DIR/inference_eval/<task>-<step>.jsonl, as t5x's infer_eval writes them. This is the same code path as `flanx.eval`
(flanx.inference.seqio_eval), so evaluating a saved checkpoint later gives the same numbers.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from flanx import gin_config
from flanx.inference import predict  # registers decode_options with gin before a run's config is locked


def decode_settings(targets_length: int) -> dict[str, Any]:
  """decode_options as gin binds them, with t5x's eval decoder for what is unbound."""
  defaults = {'mode': 'beam', 'beam_size': 1, 'max_decode_length': targets_length}
  bound = set(gin_config.configurable_bindings('decode_options'))
  return predict.decode_options(**{k: v for k, v in defaults.items() if k not in bound}, return_all_decodes=False)


class InferenceEval:
  """Decodes the eval split with the trainer's params on the trainer's mesh; `run(params)` gives the scalars."""

  def __init__(self, config, mesh, shardings, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
               batch_size: int, split: str, max_batches: int | None, use_cached: bool = False,
               predictions_dir: str | None = None):
    from flanx.inference import inference_model, seqio_eval  # pylint: disable=g-import-not-at-top
    self.options = decode_settings(task_feature_lengths['targets'])
    self.num_examples = None if max_batches is None else max_batches * batch_size
    self.model = inference_model.InferenceModel(None, config, batch_size, mesh=mesh, shardings=shardings,
                                                **self.options)
    self.evaluator = seqio_eval.make_evaluator(mixture_or_task_name, task_feature_lengths, split, use_cached,
                                             self.num_examples)
    self._seqio_eval = seqio_eval.seqio_eval
    self.predictions_dir = predictions_dir
    self.compile_seconds: float | None = None

  def run(self, params, step: int) -> dict[str, float]:
    self.model.params = params
    predict, batch_seconds = self.model.predict, []

    def timed_predict(*args, **kwargs):
      start = time.perf_counter()
      out = predict(*args, **kwargs)
      batch_seconds.append(time.perf_counter() - start)
      return out

    self.model.predict = timed_predict
    start = time.perf_counter()
    try:
      results, predictions = self._seqio_eval(self.evaluator, self.model, step)
    finally:
      self.model.predict, self.model.params = predict, None
    if self.predictions_dir:
      write_predictions(self.predictions_dir, step, predictions)
    scalars = {f'inference_eval/{task}/{k}': v for task, metrics in results.items() for k, v in metrics.items()}
    scalars['timing/inference_eval_seconds'] = time.perf_counter() - start
    if self.compile_seconds is None and batch_seconds:  # the first batch compiled the decode
      steady = sorted(batch_seconds[1:])[len(batch_seconds[1:]) // 2] if len(batch_seconds) > 1 else 0.0
      self.compile_seconds = max(batch_seconds[0] - steady, 0.0)
      scalars['timing/inference_eval_compile_seconds'] = self.compile_seconds
    return scalars


def from_arguments(config, shardings, a: Mapping[str, Any]) -> InferenceEval | None:
  """The generation eval of a train() call (its arguments `a`); None with train.inference_eval=False."""
  import os  # pylint: disable=g-import-not-at-top
  if not a['inference_eval']:
    return None
  return InferenceEval(config, shardings.mesh, shardings, a['mixture_or_task_name'], a['task_feature_lengths'],
                       a['batch_size'], a['eval_split'], a['eval_batches'], a['use_cached_tasks'],
                       os.path.join(a['model_dir'], 'inference_eval'))


def write_predictions(folder: str, step: int, predictions: Mapping[str, list]) -> None:
  """`<folder>/<task>-<step:06d>.jsonl` (t5x's inference_eval file names): input, target, prediction, score."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  from flanx.training import runtime  # pylint: disable=g-import-not-at-top
  if not runtime.is_first_host():
    return
  tf.io.gfile.makedirs(folder)
  for task, rows in predictions.items():
    with tf.io.gfile.GFile(os.path.join(folder, f'{task}-{step:06d}.jsonl'), 'w') as f:
      f.write(''.join(json.dumps(row) + '\n' for row in rows))


def make_eval(teacher_forced: Callable[[Any], dict[str, float]], generation: InferenceEval | None,
              log: Callable[[str], None]) -> Callable[[Any, int], dict[str, float]]:
  """The trainer's eval: teacher-forced metrics, then the generation metrics; one console line per eval."""

  def run(params, step: int) -> dict[str, float]:
    start = time.perf_counter()
    scalars = dict(teacher_forced(params))
    if generation is not None:
      scalars.update(generation.run(params, step))
    log(eval_line(step, scalars, time.perf_counter() - start))
    return scalars

  return run


def eval_line(step: int, scalars: Mapping[str, float], seconds: float) -> str:
  """`eval step 200: validation loss/token 1.234 accuracy 0.567 | flanx_demo bleu 12.3 exact_match 4.7 | 3.1 s`."""
  parts = []
  for key, value in scalars.items():
    if key.startswith('eval/') and key.count('/') == 2:
      _, split, name = key.split('/')
      if name in ('loss_per_nonpadding_target_token', 'accuracy'):
        parts.append(f'{split} {"loss/token" if name.startswith("loss") else name} {value:.4g}')
  tasks: dict[str, list[str]] = {}
  for key, value in scalars.items():
    if key.startswith('inference_eval/'):
      _, task, metric = key.split('/', 2)
      tasks.setdefault(task, []).append(f'{metric} {value:.4g}')
  groups = ['  '.join(parts)] if parts else []
  groups += [f'{task} ' + ' '.join(metrics) for task, metrics in tasks.items()]
  compile_note = (f' (decode compile {scalars["timing/inference_eval_compile_seconds"]:.1f} s)'
                  if 'timing/inference_eval_compile_seconds' in scalars else '')
  return f'eval step {step}: ' + ' | '.join(groups + [f'{seconds:.1f} s{compile_note}'])
