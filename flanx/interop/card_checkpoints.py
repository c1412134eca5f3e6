"""The model card's account of which checkpoint was exported: the rule, the table of evaluated checkpoints, the
pictures, and `model-index` metadata (the Hugging Face Hub's eval results) from the chosen checkpoint's metrics.

`info['selection']`: {'step', 'rule', 'metrics': the chosen checkpoint's {name: value}, 'split'};
`info['checkpoint_table']`: flanx.inference.checkpoint_table.collect() of the run; `info['pictures']`: file names
written beside README.md.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

_TASK_TYPE = 'text2text-generation'


def _metric_results(metrics: Mapping[str, float]) -> dict[str, list[tuple[str, str, float]]]:
  """{dataset: [(metric type, display name, value)]} for the generation and eval metrics of one checkpoint."""
  out: dict[str, list[tuple[str, str, float]]] = {}
  for name, value in sorted(metrics.items()):
    if not isinstance(value, (int, float)) or not math.isfinite(value):
      continue
    parts = name.split('/')
    if parts[0] == 'inference_eval' and len(parts) == 3:
      out.setdefault(parts[1], []).append((parts[2].lower(), name, float(value)))
  return out


def front_matter(info: Mapping[str, Any]) -> list[str]:
  """YAML lines of `model-index` (empty without a selection that has generation metrics)."""
  selection = info.get('selection') or {}
  results = _metric_results(selection.get('metrics') or {})
  if not results:
    return []
  q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
  lines = ['model-index:', f'- name: {q(info.get("name", "flanx model"))}', '  results:']
  for dataset, metrics in results.items():
    lines += ['  - task:', f'      type: {_TASK_TYPE}', '    dataset:', f'      name: {q(dataset)}',
              f'      type: {q(dataset)}', f'      split: {q(selection.get("split", "validation"))}', '    metrics:']
    for kind, name, value in metrics:
      lines += [f'    - type: {q(kind)}', f'      value: {value!r}',
                f'      name: {q(name + " (checkpoint_" + str(selection["step"]) + ")")}']
  return lines


def _cell(value: Any) -> str:
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def section(info: Mapping[str, Any]) -> list[str]:
  """Markdown: which checkpoint, by which rule; the evaluated checkpoints; the pictures."""
  selection, table = info.get('selection'), info.get('checkpoint_table') or {}
  pictures: Sequence[str] = info.get('pictures') or ()
  if not selection and not table and not pictures:
    return []
  lines = ['', '## Checkpoint selection', '']
  if selection and selection.get('rule'):
    lines.append(f'This export is `checkpoint_{selection["step"]}`, chosen as the {selection["rule"]} among the '
                 "run's evaluated checkpoints.")
  elif selection:
    lines.append(f'This export is `checkpoint_{selection["step"]}`, the checkpoint given to flanx.export (not chosen '
                 'by a metric: `--select=best` or `--metric=NAME` choose the best evaluated one).')
  rows = {s: r for s, r in table.items() if r.get('metrics')}
  names = [n for n in sorted({k for r in rows.values() for k in r['metrics']})
           if n.startswith(('inference_eval/', 'eval/'))]
  if rows and names:
    lines += ['', '| checkpoint | status | ' + ' | '.join(names) + ' |', '|---|---|' + '---|' * len(names)]
    for step, row in rows.items():
      mark = ' (exported)' if selection and step == selection['step'] else ''
      cells = [_cell(row['metrics'].get(n, '')) for n in names]
      lines.append(f'| checkpoint_{step}{mark} | {row.get("status", "")} | ' + ' | '.join(cells) + ' |')
  for picture in pictures:
    lines += ['', f'![{picture}]({picture})']
  return lines
