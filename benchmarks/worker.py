"""Runs one side of one benchmark row in its own process (so peak memory and threads are its own).

  python -m benchmarks.worker SPEC.json RESULT.json

SPEC holds 'kind' (train | decode), 'impl' (flanx | hf_eager | hf_compile | hf_generate) and the row's
settings; RESULT receives the measured timings, peak memory and device facts, plus the load averages.
"""

from __future__ import annotations

import json
import pathlib
import sys

RUNNERS = {
    ('train', 'flanx'): ('benchmarks.train_bench', 'run_flanx'),
    ('train', 'hf_eager'): ('benchmarks.train_bench', 'run_hf'),
    ('train', 'hf_compile'): ('benchmarks.train_bench', 'run_hf'),
    ('decode', 'flanx'): ('benchmarks.decode_bench', 'run_flanx'),
    ('decode', 'hf_generate'): ('benchmarks.decode_bench', 'run_hf'),
}


def main(argv: list[str]) -> None:
  """Measures the side described by argv[0] and writes its result to argv[1]."""
  if len(argv) != 2:
    raise SystemExit('usage: python -m benchmarks.worker SPEC.json RESULT.json')
  import importlib  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  spec = json.loads(pathlib.Path(argv[0]).read_text())
  key = (spec['kind'], spec['impl'])
  if key not in RUNNERS:
    raise SystemExit(f'{argv[0]}: unknown kind/impl {key} (known: {sorted(RUNNERS)})')
  module, name = RUNNERS[key]
  load_start = common.load_average()
  result = getattr(importlib.import_module(module), name)(spec)
  result['load_average'] = {'start': load_start, 'end': common.load_average()}
  pathlib.Path(argv[1]).write_text(json.dumps(result, indent=1) + '\n')


if __name__ == '__main__':
  main(sys.argv[1:])
