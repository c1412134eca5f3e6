"""Pictures of a run a person can look at: train_curves.png and checkpoints.png in the run folder.

train_curves.png: loss per target token (train, and the in-training eval), the learning rate, eval token accuracy
and the generation metrics (`inference_eval/<task>/<metric>`) over steps, from MODEL_DIR/train_metrics.jsonl.
checkpoints.png: one metric per checkpoint (the keep-best rule's, else the first generation metric, else the eval
loss), kept and deleted checkpoints told apart, the selected one marked. matplotlib's headless Agg backend,
imported only here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

TRAIN_CURVES = 'train_curves.png'
CHECKPOINTS = 'checkpoints.png'


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg', force=True)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _rows(run_dir: str) -> list[dict[str, Any]]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  path = os.path.join(run_dir, 'train_metrics.jsonl')
  if not tf.io.gfile.exists(path):
    return []
  rows = []
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue  # a line cut by a kill mid-write
      if isinstance(row, dict) and isinstance(row.get('step'), int):
        rows.append(row)
  return rows


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
  points = sorted({r['step']: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}.items())
  return [s for s, _ in points], [v for _, v in points]


def _save(fig, path: str) -> str:
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(buffer.getvalue())
  return path


def train_curves(run_dir: str, path: str | None = None) -> str | None:
  """Writes train_curves.png (None when the run logged nothing)."""
  rows = _rows(run_dir)
  if not rows:
    return None
  plt = _pyplot()
  keys = sorted({k for r in rows for k in r})
  fig, axes = plt.subplots(2, 2, figsize=(12, 8))
  (loss_ax, lr_ax), (acc_ax, gen_ax) = axes
  for key, label in [('loss_per_nonpadding_target_token', 'train')] + [
      (k, k.split('/')[1]) for k in keys if k.startswith('eval/') and k.endswith('/loss_per_nonpadding_target_token')]:
    loss_ax.plot(*_series(rows, key), marker='.' if key.startswith('eval/') else None, label=label)
  loss_ax.set_title('loss per target token')
  lr_ax.plot(*_series(rows, 'learning_rate'))
  lr_ax.set_title('learning rate')
  for key in [k for k in keys if (k.startswith('eval/') and k.endswith('/accuracy')) or k == 'accuracy']:
    acc_ax.plot(*_series(rows, key), marker='.' if key.startswith('eval/') else None,
                label='train' if key == 'accuracy' else key.split('/')[1])
  acc_ax.set_title('token accuracy (teacher forced)')
  for key in [k for k in keys if k.startswith('inference_eval/')]:
    gen_ax.plot(*_series(rows, key), marker='o', label=key[len('inference_eval/'):])
  gen_ax.set_title('generation metrics (inference_eval)')
  for ax in axes.flat:
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
    elif not ax.lines:
      ax.text(0.5, 0.5, 'not recorded', ha='center', va='center', transform=ax.transAxes, color='gray')
  fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
  fig.tight_layout()
  try:
    return _save(fig, path or os.path.join(run_dir, TRAIN_CURVES))
  finally:
    plt.close(fig)


def _plotted_metrics(table: Mapping[int, Mapping[str, Any]], metric: str | Sequence[str] | None) -> list[str]:
  names = sorted({k for r in table.values() for k in r['metrics']})
  wanted = [m for m in ([metric] if isinstance(metric, str) else list(metric or [])) if m in names]
  if wanted:
    return wanted
  generation = [n for n in names if n.startswith('inference_eval/')]
  losses = [n for n in names if n.endswith('loss_per_nonpadding_target_token')]
  return (generation or losses or names)[:1]


def checkpoints_plot(run_dir: str, path: str | None = None, metric: str | Sequence[str] | None = None,
                     selected: int | None = None, rule: str | None = None) -> str | None:
  """Writes checkpoints.png, one panel per monitored metric (None when no checkpoint has a metric)."""
  import textwrap  # pylint: disable=g-import-not-at-top
  from flanx.inference import checkpoint_table  # pylint: disable=g-import-not-at-top
  table = checkpoint_table.collect(run_dir)
  metrics = _plotted_metrics(table, metric)
  if not metrics:
    return None
  plt = _pyplot()
  fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 1.5 + 3.5 * len(metrics)), squeeze=False)
  for ax, name in zip(axes[:, 0], metrics):
    points = [(s, r['metrics'][name], r['exists']) for s, r in table.items() if name in r['metrics']]
    for exists, style, label in ((True, dict(marker='o', color='tab:blue'), 'kept'),
                                 (False, dict(marker='x', color='tab:gray'), 'deleted')):
      chosen = [(s, v) for s, v, e in points if e == exists]
      if chosen:
        ax.scatter([s for s, _ in chosen], [v for _, v in chosen], label=label, zorder=3, **style)
    ax.plot([s for s, _, _ in points], [v for _, v, _ in points], color='tab:blue', alpha=0.3)
    if selected is not None and selected in table and name in table[selected]['metrics']:
      value = table[selected]['metrics'][name]
      ax.scatter([selected], [value], marker='*', s=300, color='tab:red', zorder=4,
                 label=f'selected: checkpoint_{selected}')
      ax.annotate(f'checkpoint_{selected}\n{value:.4g}', (selected, value), textcoords='offset points',
                  xytext=(8, 8))
    ax.set_xlabel('checkpoint step')
    ax.set_ylabel(name.rsplit('/', 1)[-1])
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(textwrap.fill(f'per checkpoint; selection: {rule}' if rule else 'per checkpoint', 110), fontsize=10)
  fig.tight_layout()
  try:
    return _save(fig, path or os.path.join(run_dir, CHECKPOINTS))
  finally:
    plt.close(fig)


def write_pictures(run_dir: str, folder: str | None = None, metric: str | Sequence[str] | None = None,
                   selected: int | None = None, rule: str | None = None) -> list[str]:
  """Both pictures into `folder` (default: the run folder); the paths written."""
  folder = folder or run_dir
  written = [train_curves(run_dir, os.path.join(folder, TRAIN_CURVES)),
             checkpoints_plot(run_dir, os.path.join(folder, CHECKPOINTS), metric, selected, rule)]
  return [p for p in written if p]


def at_end_of_training(model_dir: str, log: Callable[[str], None] = print) -> list[str]:
  """The run's pictures, the keep-best choice marked; a plotting failure is reported, never fatal to the run."""
  from flanx.training import keep_best, runtime  # pylint: disable=g-import-not-at-top
  if not runtime.is_first_host():
    return []
  try:
    record = keep_best.read_record(model_dir)
    metric = (record.get('policy') or {}).get('metric')
    paths = write_pictures(model_dir, metric=metric, selected=record.get('best'), rule=record.get('rule'))
  except Exception as e:  # pylint: disable=broad-except
    log(f'WARNING: could not draw the run pictures: {type(e).__name__}: {e}')
    return []
  if record.get('best') is not None:
    log(f'Best checkpoint ({record["rule"]}): {model_dir}/checkpoint_{record["best"]}')
  if paths:
    log('Pictures: ' + ', '.join(paths))
  return paths
