"""The evaluated checkpoints of a run, in one table: what export selects from and the pictures and card show.

Sources, per step: the in-training eval the checkpoint recorded (MODEL_DIR/checkpoints.json, written under
`train.keep_best`, lists deleted checkpoints too; else each checkpoint's meta) and `flanx.eval`'s results for it
(MODEL_DIR/eval/checkpoint_<step>/<split>_metrics.json). flanx.eval's metrics are named like the trainer's:
`inference_eval/<task>/<metric>` for the task's metrics, `eval/<split>/loss_per_nonpadding_target_token` and
`eval/<split>/accuracy` for the teacher-forced ones. Where both exist the trainer's value is used (generation
metrics are equal by construction; the trainer's teacher-forced ones are over packed batches, flanx.eval's over
unpacked examples, so they differ slightly).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

from flanx.training import keep_best

EVAL_DIR = 'eval'  # MODEL_DIR/eval/checkpoint_<step>/: flanx.eval's results for one checkpoint


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  return tf.io.gfile


def eval_metric_names(results: Mapping[str, Any], split: str) -> dict[str, float]:
  """flanx.eval's {task: {metric: value}} under the trainer's metric names."""
  out = {}
  for task, values in results.items():
    if not isinstance(values, Mapping) or task == 'truncation':
      continue
    for metric, value in values.items():
      if task == 'teacher_forced':
        out[f'eval/{split}/{metric}'] = float(value)
      else:
        out[f'inference_eval/{task}/{metric}'] = float(value)
  return out


def existing_steps(run_dir: str) -> list[int]:
  """Steps of the committed checkpoints in `run_dir`."""
  gfile = _gfile()
  if not gfile.isdir(run_dir):
    return []
  return sorted(int(m.group(1)) for name in gfile.listdir(run_dir)
                if (m := re.fullmatch(r'checkpoint_(\d+)/?', name))
                and gfile.exists(os.path.join(run_dir, name.rstrip('/'), 'params')))


def collect(run_dir: str) -> dict[int, dict[str, Any]]:
  """{step: {'path', 'exists', 'status', 'training': metrics, 'evaluated': metrics, 'metrics': both}}."""
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  gfile = _gfile()
  table: dict[int, dict[str, Any]] = {}
  present = set(existing_steps(run_dir))

  def row(step: int) -> dict[str, Any]:
    return table.setdefault(step, {'step': step, 'path': os.path.join(run_dir, f'checkpoint_{step}'),
                                   'exists': step in present, 'status': 'kept' if step in present else 'deleted',
                                   'training': {}, 'evaluated': {}})

  for entry in keep_best.read_record(run_dir).get('checkpoints', []):
    r = row(int(entry['step']))
    r['training'].update(entry.get('metrics') or {})
    r['status'] = entry.get('status', r['status']) if r['exists'] else 'deleted'
  for step in present:
    r = row(step)
    if not r['training']:
      r['training'].update(checkpoints.read_meta(r['path']).eval_metrics or {})
  for path in gfile.glob(os.path.join(run_dir, EVAL_DIR, 'checkpoint_*', '*_metrics.json')):
    with gfile.GFile(path) as f:
      try:
        record = json.load(f)
      except ValueError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from None
    step = record.get('step')
    if not isinstance(step, int) or not isinstance(record.get('metrics'), Mapping):
      continue
    row(step)['evaluated'].update(eval_metric_names(record['metrics'], record.get('split', 'validation')))
  for r in table.values():
    r['metrics'] = {**r['evaluated'], **r['training']}
  return dict(sorted(table.items()))


def policy_for(run_dir: str, metric: str | None = None, mode: str | None = None) -> keep_best.KeepBest:
  """The selection rule: `metric` (+ `mode`, default 'min' for losses, else 'max'), else the run's keep_best."""
  if metric:
    return keep_best.KeepBest(metric=metric, mode=mode or ('min' if 'loss' in metric else 'max'))
  recorded = keep_best.read_record(run_dir).get('policy')
  if recorded:
    return keep_best.KeepBest(metric=tuple(recorded['metric']), mode=tuple(recorded['mode']))
  raise ValueError(f'{run_dir} has no keep_best record ({keep_best.RECORD}): name the metric to select by, e.g. '
                   '--metric=inference_eval/<task>/bleu')


def select(table: Mapping[int, Mapping[str, Any]], policy: keep_best.KeepBest) -> int:
  """The best existing checkpoint under `policy` (ValueError naming what is available when none has the metric)."""
  step = keep_best.best_step({s: r['metrics'] for s, r in table.items() if r['exists']}, policy)
  if step is None:
    names = sorted({k for r in table.values() for k in r['metrics']})
    raise ValueError(f'no checkpoint has {" and ".join(policy.metrics)}; recorded metrics: {names or "none"} '
                     '(run flanx.eval over the run folder to evaluate its checkpoints)')
  return step


def choose(run_dir: str, metric: str | None = None, mode: str | None = None) -> tuple[str, dict[str, Any]]:
  """(checkpoint folder, selection facts) of a run's best checkpoint by `metric`, else by its keep_best rule."""
  if re.fullmatch(r'checkpoint_\d+', os.path.basename(run_dir.rstrip('/'))):
    raise ValueError(f'{run_dir} is one checkpoint; --select=best / --metric choose among the checkpoints of a run '
                     'folder: pass the run folder')
  table = collect(run_dir)
  policy = policy_for(run_dir, metric, mode)
  step = select(table, policy)
  return table[step]['path'], {'step': step, 'rule': policy.describe(), 'metric': policy.metrics[0],
                               'metrics': table[step]['metrics'], 'policy': policy.as_dict()}
