"""Writes a realistic-size Flan Collection folder in the Open-Orca/FLAN layout (issue 23's benchmark input).

`python -m benchmarks.flan_mirror OUT --rows 304000` writes {flan,t0,niv2,cot,dialog}_{variant}_data/part.N.parquet
with Open-Orca's columns (inputs, targets, _template_idx, _task_source, _task_name, _template_type): hundreds of
task names per submixture with a long-tailed size distribution (so caps bite), few-shot inputs of several
thousand characters, several part files per variant. Deterministic for a seed; text is synthetic (word salad
with the shape of Flan prompts), so the numbers measure the pipeline, not the data.

`--order` is how records lie in the files: `mixed` (tasks interleaved at random, as an export that samples the
mixture writes them) or `sorted` (each variant's records sorted by task name and cut into consecutive parts, as a
per-task export concatenated would be): the worst case for a streaming shuffle (benchmarks/shuffle_quality.py).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

# (submixture, Open-Orca folder prefix, task_source spelling, variants, task names, share of the rows)
SUBMIXES = (
    ('flan2021', 'flan', 'Flan2021', ('zs_opt', 'zs_noopt', 'fs_opt', 'fs_noopt'), 400, 0.40),
    ('t0', 't0', 'P3', ('zs_opt', 'zs_noopt', 'fs_opt', 'fs_noopt'), 300, 0.25),
    ('niv2', 'niv2', 'NIv2', ('zs_opt', 'fs_opt'), 700, 0.25),
    ('cot', 'cot', 'CoT', ('zs_opt', 'fs_opt'), 30, 0.05),
    ('dialog', 'dialog', 'Dialog', ('zs_opt', 'fs_opt'), 20, 0.05),
)
WORDS = np.array('the of and to in a is that for it as was with be by on not he this are or his from at which but '
                 'question answer premise hypothesis options sentence context passage true false yes no because '
                 'therefore summary translate review positive negative'.split())


def _text(rng: np.random.Generator, chars: int) -> str:
  words = WORDS[rng.integers(len(WORDS), size=max(1, chars // 5))]
  return ' '.join(words)[:chars]


def write(out: pathlib.Path, rows: int, parts: int = 4, seed: int = 0, order: str = 'mixed') -> dict:
  """Writes the folder; returns {submix: rows written}."""
  if order not in ('mixed', 'sorted'):
    raise ValueError(f'order must be mixed or sorted, not {order!r}')
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  schema = pa.schema([('inputs', pa.string()), ('targets', pa.string()), ('_template_idx', pa.int64()),
                      ('_task_source', pa.string()), ('_task_name', pa.string()), ('_template_type', pa.string())])
  written = {}
  for submix, prefix, source, variants, tasks, share in SUBMIXES:
    names = [f'{submix}_task{i:04d}' for i in range(tasks)]
    weights = 1.0 / np.arange(1, tasks + 1) ** 1.1  # long tail: a few huge tasks, many small ones
    weights /= weights.sum()
    per_variant = int(rows * share / len(variants))
    for variant in variants:
      few_shot = variant.startswith('fs')
      task_of = rng.choice(tasks, size=per_variant, p=weights)
      lengths = rng.lognormal(7.6 if few_shot else 6.0, 0.6, size=per_variant).clip(20, 7000).astype(int)
      records = [{'inputs': _text(rng, int(n)), 'targets': _text(rng, int(rng.integers(5, 300))),
                  '_template_idx': int(rng.integers(10)), '_task_source': source, '_task_name': names[t],
                  '_template_type': variant} for t, n in zip(task_of, lengths)]
      folder = out / f"{prefix}_{variant.replace('_', '')}_data"
      folder.mkdir(parents=True, exist_ok=True)
      if order == 'sorted':
        records.sort(key=lambda r: r['_task_name'])
        cuts = np.linspace(0, len(records), parts + 1).astype(int)
        chunks = [records[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
      else:
        chunks = [records[k::parts] for k in range(parts)]
      for k, chunk in enumerate(chunks):
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), str(folder / f'part.{k}.parquet'))
      written[submix] = written.get(submix, 0) + per_variant
  return written


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('out', type=pathlib.Path)
  parser.add_argument('--rows', type=int, default=304_000)
  parser.add_argument('--parts', type=int, default=4)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--order', choices=('mixed', 'sorted'), default='mixed')
  args = parser.parse_args()
  print(write(args.out, args.rows, args.parts, args.seed, args.order))


if __name__ == '__main__':
  main()
