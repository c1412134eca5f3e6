"""Which checkpoints a run keeps when `train.keep_best` is set: the best K by an eval metric, plus the newest.

The semantics follow t5x's SaveBestCheckpointer (`metric_name_to_monitor`, `metric_mode`, `keep`,
`force_keep_period`, `keep_checkpoints_without_metrics`): checkpoints are ranked by the metric the in-training
eval recorded for their step; the `keep` best stay, as do checkpoints whose step is a multiple of
`force_keep_period` and (by default) checkpoints with no recorded value. The newest checkpoint always stays, so a
run can resume. Several metrics (`metric=('inference_eval/dolly/bleu', 'eval/validation/loss')`, `mode=('max',
'min')`) rank by the sum of each checkpoint's ranks under every metric ("the best balance of BLEU and loss"; ties
go to the later step). The metrics live in each checkpoint's meta, so the choice is the same after a resume.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import gin

MODES = ('max', 'min')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class KeepBest:
  """Retention by metric; `train.keep_best = @KeepBest()` or `train.keep_best = {'metric': …, 'keep': 2}`."""
  metric: str | Sequence[str] = gin.REQUIRED
  mode: str | Sequence[str] = 'max'
  keep: int = 1
  force_keep_period: int | None = None
  keep_checkpoints_without_metrics: bool = True

  def __post_init__(self):
    metrics = self.metrics
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
      raise ValueError(f'KeepBest.metric={self.metric!r}: expected a metric name such as '
                       "'inference_eval/dolly/bleu' (or a tuple of them)")
    modes = self.modes
    if len(modes) != len(metrics) or any(m not in MODES for m in modes):
      raise ValueError(f'KeepBest.mode={self.mode!r}: expected {MODES[0]!r} or {MODES[1]!r}, one per metric '
                       f'({len(metrics)})')
    if not isinstance(self.keep, int) or self.keep < 1:
      raise ValueError(f'KeepBest.keep={self.keep!r}: expected a positive integer')
    if self.force_keep_period is not None and (not isinstance(self.force_keep_period, int)
                                               or self.force_keep_period < 1):
      raise ValueError(f'KeepBest.force_keep_period={self.force_keep_period!r}: expected None or a positive integer')

  @property
  def metrics(self) -> tuple[str, ...]:
    return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

  @property
  def modes(self) -> tuple[str, ...]:
    return (self.mode,) * len(self.metrics) if isinstance(self.mode, str) else tuple(self.mode)

  def describe(self) -> str:
    """The rule in words, for logs and the model card."""
    parts = [f'{m} ({"highest" if d == "max" else "lowest"})' for m, d in zip(self.metrics, self.modes)]
    rule = parts[0] if len(parts) == 1 else 'the rank sum of ' + ' and '.join(parts)
    return f'best by {rule}'

  def as_dict(self) -> dict[str, Any]:
    return {'metric': list(self.metrics), 'mode': list(self.modes), 'keep': self.keep,
            'force_keep_period': self.force_keep_period,
            'keep_checkpoints_without_metrics': self.keep_checkpoints_without_metrics}


def from_setting(value: Any) -> KeepBest | None:
  """train.keep_best as given: None, a KeepBest, or a dict of its fields."""
  if value is None or isinstance(value, KeepBest):
    return value
  if isinstance(value, Mapping):
    unknown = set(value) - {f.name for f in dataclasses.fields(KeepBest)}
    if unknown:
      raise ValueError(f'train.keep_best: unknown key(s) {sorted(unknown)}; expected metric, mode, keep, '
                       'force_keep_period, keep_checkpoints_without_metrics')
    return KeepBest(**value)
  raise ValueError(f'train.keep_best={value!r}: expected None, @KeepBest() or a dict such as '
                   "{'metric': 'inference_eval/dolly/bleu', 'mode': 'max', 'keep': 3}")


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
  if not metrics or name not in metrics:
    return None
  try:
    value = float(metrics[name])
  except (TypeError, ValueError):
    return None
  return value if value == value else None  # NaN ranks nowhere


def ranked(records: Mapping[int, Mapping[str, Any] | None], policy: KeepBest) -> list[int]:
  """Steps with every monitored metric recorded, best first (ties: the later step first)."""
  scored = {s: [_value(m, name) for name in policy.metrics] for s, m in records.items()}
  scored = {s: v for s, v in scored.items() if all(x is not None for x in v)}
  if len(policy.metrics) == 1:
    sign = -1.0 if policy.modes[0] == 'max' else 1.0
    return sorted(scored, key=lambda s: (sign * scored[s][0], -s))
  rank_sum = dict.fromkeys(scored, 0)
  for i, mode in enumerate(policy.modes):
    order = sorted(scored, key=lambda s: ((-1.0 if mode == 'max' else 1.0) * scored[s][i], -s))
    for rank, step in enumerate(order):
      rank_sum[step] += rank
  return sorted(scored, key=lambda s: (rank_sum[s], -s))


def best_step(records: Mapping[int, Mapping[str, Any] | None], policy: KeepBest) -> int | None:
  """The best checkpoint's step (None when no checkpoint has the metric)."""
  order = ranked(records, policy)
  return order[0] if order else None


def decide(records: Mapping[int, Mapping[str, Any] | None], policy: KeepBest) -> dict[int, str]:
  """{step: why it is kept, or 'deleted'} for every checkpoint in `records` ({step: its eval metrics or None})."""
  if not records:
    return {}
  order = ranked(records, policy)
  latest = max(records)
  reasons = {}
  for step in records:
    why = []
    if step in order[:policy.keep]:
      why.append(f'best #{order.index(step) + 1}')
    if step == latest:
      why.append('latest')
    if policy.force_keep_period and step % policy.force_keep_period == 0:
      why.append('force_keep_period')
    if step not in order and policy.keep_checkpoints_without_metrics:
      why.append('no metrics')
    reasons[step] = ', '.join(why) or 'deleted'
  return reasons


RECORD = 'checkpoints.json'  # in MODEL_DIR: every checkpoint the run wrote, its metrics and what became of it


def read_record(model_dir: str) -> dict[str, Any]:
  """MODEL_DIR/checkpoints.json ({} when absent)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  path = os.path.join(model_dir, RECORD)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f'{path}: not valid JSON ({e})') from None


def write_record(model_dir: str, policy: KeepBest, records: Mapping[int, Mapping[str, Any] | None],
                 decision: Mapping[int, str]) -> None:
  """Updates MODEL_DIR/checkpoints.json: the rule, the best step, and per checkpoint its monitored metrics and
  whether (why) it is kept; checkpoints deleted earlier stay listed as deleted."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = {int(r['step']): r for r in read_record(model_dir).get('checkpoints', [])}
  for step, why in decision.items():
    metrics = {k: float(v) for k, v in (records.get(step) or {}).items() if _value(records.get(step), k) is not None}
    rows[step] = {'step': step, 'path': os.path.join(model_dir, f'checkpoint_{step}'), 'metrics': metrics,
                  'status': why}
  for step, row in rows.items():
    if step not in decision:
      row['status'] = 'deleted'
  record = {'rule': policy.describe(), 'policy': policy.as_dict(), 'best': best_step(records, policy),
            'checkpoints': [rows[s] for s in sorted(rows)]}
  path = os.path.join(model_dir, RECORD)
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(record, f, indent=2)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
