"""The Flan-T5 evaluation suite report: BBH and MMLU per task, averages, beside the paper's figures.

`python -m flanx.eval` on `bbh_direct`, `bbh_cot` or `mmlu_direct` (or any of their tasks) prints one
table per suite: each task's score and example count, the averages, and the published figure of the
same model size (matched from the model config) so a user sees at once how a checkpoint compares.
Averages: BBH, the macro average over tasks (as the BBH and Flan-T5 papers report it); MMLU, accuracy
over all examples (as the reference evaluate_flan.py prints it), per category, and the mean over
subjects. Published figures are averages only and comparable only with the full suite on MMLU's test
split; the table says when that is not the case.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from flanx import gin_config

# Flan-T5 paper (Chung et al. 2022, arXiv 2210.11416) Table 5: MMLU 5-shot and BBH 3-shot, direct and
# CoT; Flan-UL2 (FACTS.md: MMLU 55.7, BBH 45.9, taken as the few-shot direct figures). Keyed by shape below.
PUBLISHED = {
    'flan-t5-small': {'mmlu_direct': 28.7, 'mmlu_cot': 12.1, 'bbh_direct': 29.1, 'bbh_cot': 19.2},
    'flan-t5-base': {'mmlu_direct': 35.9, 'mmlu_cot': 33.7, 'bbh_direct': 31.3, 'bbh_cot': 27.9},
    'flan-t5-large': {'mmlu_direct': 45.1, 'mmlu_cot': 40.5, 'bbh_direct': 37.5, 'bbh_cot': 31.5},
    'flan-t5-xl': {'mmlu_direct': 52.4, 'mmlu_cot': 45.5, 'bbh_direct': 41.0, 'bbh_cot': 35.2},
    'flan-t5-xxl': {'mmlu_direct': 55.1, 'mmlu_cot': 48.6, 'bbh_direct': 45.3, 'bbh_cot': 41.4},
    'flan-ul2': {'mmlu_direct': 55.7, 'bbh_direct': 45.9},
}
# (d_model, d_ff, heads, encoder layers, decoder layers) of the public checkpoints.
SHAPES = {
    (512, 1024, 6, 8, 8): 'flan-t5-small',
    (768, 2048, 12, 12, 12): 'flan-t5-base',
    (1024, 2816, 16, 24, 24): 'flan-t5-large',
    (2048, 5120, 32, 24, 24): 'flan-t5-xl',
    (4096, 10240, 64, 24, 24): 'flan-t5-xxl',
    (4096, 16384, 16, 32, 32): 'flan-ul2',
}
# suite: (title, metric); its task names come from tasks/ when needed (importing it registers tasks).
SUITE_TITLES = {
    'bbh_direct': ('BBH, answer only, 3-shot', 'exact_match'),
    'bbh_cot': ('BBH, chain of thought, 3-shot', 'exact_match'),
    'mmlu_direct': ('MMLU, 5-shot, answer letter', 'accuracy'),
}


def _suite_tasks(suite: str) -> tuple[str, ...]:
  bbh, mmlu = gin_config.tasks_module('bbh'), gin_config.tasks_module('mmlu')
  return mmlu.SUBJECTS if suite.startswith('mmlu') else bbh.TASKS


def _categories() -> Mapping[str, str]:
  mmlu = gin_config.tasks_module('mmlu')
  return mmlu.CATEGORIES


_TASK = re.compile(r'(?:^|_)(bbh_direct|bbh_cot|mmlu_direct)_(\w+)$')


def published_model(config: Any) -> str | None:
  """The public Flan checkpoint with this model shape ('flan-t5-small', …), else None."""
  if config is None:
    return None
  shape = tuple(getattr(config, k, None) for k in ('d_model', 'd_ff', 'num_heads', 'num_encoder_layers',
                                                     'num_decoder_layers'))
  return SHAPES.get(shape)


def suite_scores(results: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, tuple[float, int]]]:
  """{suite: {task: (score, examples)}} for the BBH/MMLU tasks among `results` ({task: {metric: value}})."""
  out: dict[str, dict[str, tuple[float, int]]] = {}
  for name, metrics in results.items():
    match = _TASK.search(name)
    if not match or match.group(2) not in _suite_tasks(match.group(1)):
      continue
    suite, task = match.groups()
    metric = SUITE_TITLES[suite][1]
    if metric in metrics:
      out.setdefault(suite, {})[task] = (float(metrics[metric]), int(metrics.get('num_examples', 0)))
  return out


def _fmt(value: float | None) -> str:
  return '—' if value is None else f'{value:.1f}'


def _suite_table(suite: str, scores: Mapping[str, tuple[float, int]], model: str | None, split: str) -> list[str]:
  title, metric = SUITE_TITLES[suite]
  expected = _suite_tasks(suite)
  categories = _categories()
  published = PUBLISHED.get(model or '', {}).get(suite)
  paper = f'paper ({model})' if model else 'paper'
  complete = len(scores) == len(expected)
  notes = []
  if not complete:
    notes.append(f'only {len(scores)} of {len(expected)} tasks: not comparable with the paper')
  if suite.startswith('mmlu') and split != 'test':
    notes.append(f"split '{split}': the paper reports the test split")
  if model is None:
    notes.append('model shape is not a public Flan checkpoint: no published figure')
  width = max(len('average over examples'), *(len(t) for t in scores)) + 2
  lines = [f'{title} ({metric}, %)', f'{"task":<{width}}{"examples":>9}{"score":>8}{paper:>24}']
  rows = sorted(scores.items())
  for task, (score, n) in rows:
    category = f'  [{categories[task]}]' if suite.startswith('mmlu') else ''
    lines.append(f'{task:<{width}}{n:>9}{_fmt(score):>8}{category}')
  total = sum(n for _, (_, n) in rows)
  macro = sum(s for _, (s, _) in rows) / len(rows)
  shown = published if complete else None
  if suite.startswith('bbh'):
    lines.append(f'{"macro average":<{width}}{total:>9}{_fmt(macro):>8}{_fmt(shown):>24}')
  else:
    for category in ('STEM', 'humanities', 'social sciences', 'other'):
      part = [(s, n) for t, (s, n) in rows if categories[t] == category]
      count = sum(n for _, n in part)
      if count:
        lines.append(f'{category:<{width}}{count:>9}{_fmt(sum(s * n for s, n in part) / count):>8}')
    weighted = sum(s * n for _, (s, n) in rows) / total if total else None
    lines.append(f'{"average over examples":<{width}}{total:>9}{_fmt(weighted):>8}{_fmt(shown):>24}')
    lines.append(f'{"average over subjects":<{width}}{total:>9}{_fmt(macro):>8}')
  lines += [f'note: {n}' for n in notes]
  return lines


def report(results: Mapping[str, Mapping[str, float]], config: Any = None, split: str = 'test') -> str | None:
  """The suite tables for the BBH/MMLU tasks among `results`; None when there are none."""
  scores = suite_scores(results)
  if not scores:
    return None
  model = published_model(config)
  blocks = ['\n'.join(_suite_table(suite, scores[suite], model, split)) for suite in SUITE_TITLES if suite in scores]
  return '\n\n'.join(blocks) + '\n'
