#!/usr/bin/env python3
"""A compile-only check that also counts the collectives of each compiled step: `flanx.train`'s check
(`--topology=... --compile_only --compile_report=PATH`), plus, in the report under 'collectives', per step the
bytes each device's collectives produce (all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute),
with every op weighted by how often its loop runs (a scanned layer's ops count once per layer).

  python scripts/hlo_collectives.py --gin_file=recipes/NAME.gin --gin.MODEL_DIR="'/x'" --topology=v4-64 \
      --compile_only --compile_report=/tmp/r.json

`scripts/recipe_table.py --collectives` runs its compiles through this. The bytes are those of each op's result
buffer on one device: a measure of traffic for comparing meshes, not a wire count.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
import re
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
KINDS = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all', 'collective-permute')
_OP = re.compile(r'=\s*(\(.*?\)|\w+\[[\d,]*\]\S*)\s+(' + '|'.join(KINDS) + r')(-start)?\(')
_SHAPE = re.compile(r'\b(pred|bf16|[suf]\d+|c64|c128)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
          's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
_HEADER = re.compile(r'^(ENTRY )?%([\w.\-]+) \(')
_CALL = re.compile(r'(calls|to_apply|body|condition|branch_computations)=\{?%([\w.\-]+)')
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  """The HLO module's computations (name -> instruction lines) and the entry's name."""
  computations, current, entry = {}, None, ''
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header and line.rstrip().endswith('{'):
      current = computations.setdefault(header.group(2), [])
      entry = header.group(2) if header.group(1) else entry
    elif current is not None:
      current.append(line)
  return computations, entry


def _runs(computations: dict[str, list[str]], entry: str) -> dict[str, int]:
  """How many times each computation runs per call of the entry (a while body: its known trip count)."""
  runs = collections.Counter()

  def visit(name: str, times: int) -> None:
    runs[name] += times
    for line in computations.get(name, []):
      trips = _TRIPS.search(line)
      for kind, callee in _CALL.findall(line):
        visit(callee, times * (int(trips.group(1)) if kind == 'body' and trips else 1))

  visit(entry, 1)
  return runs


def collective_bytes(hlo_text: str) -> dict:
  """Per collective kind: ops in the HLO text, ops executed per step, and bytes of their results per device."""
  computations, entry = _computations(hlo_text)
  runs = _runs(computations, entry)
  out = {kind: {'ops': 0, 'executed': 0, 'bytes': 0} for kind in KINDS}
  for name, lines in computations.items():
    for line in lines:
      op = _OP.search(line)
      if not op:
        continue
      shapes = _SHAPE.findall(op.group(1))
      if op.group(3) and len(shapes) > 1:  # an async start's shape is (operands..., results...)
        shapes = shapes[len(shapes) // 2:]
      size = sum(_BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(',') if d) for dtype, dims in shapes)
      entry_ = out[op.group(2)]
      entry_['ops'] += 1
      entry_['executed'] += runs.get(name, 0)
      entry_['bytes'] += size * runs.get(name, 0)
  out['total_bytes'] = sum(out[k]['bytes'] for k in KINDS)
  loops = [line for lines in computations.values() for line in lines if ' while(' in line]
  out['while_loops'] = {'count': len(loops), 'with_trip_count': sum(bool(_TRIPS.search(l)) for l in loops),
                        'trip_counts': sorted({int(m.group(1)) for l in loops for m in [_TRIPS.search(l)] if m})}
  return out


def main(argv: list[str]) -> int:
  sys.path.insert(0, str(REPO_ROOT))
  from flanx.training import aot  # pylint: disable=g-import-not-at-top
  aot.restart_with_compiler_stack(argv)
  found = {}
  compile_step = aot.compile_step

  def counting_compile_step(name, jitted, *args):
    memory = compile_step(name, jitted, *args)
    if memory.compiled is not None:
      found[name] = collective_bytes(memory.compiled.as_text())
    return memory

  aot.compile_step = counting_compile_step
  from flanx import train  # pylint: disable=g-import-not-at-top
  status = train.main(argv)
  reports = [a.split('=', 1)[1] for a in argv if a.startswith('--compile_report=')]
  if reports and pathlib.Path(reports[0]).exists():
    path = pathlib.Path(reports[0])
    report = json.loads(path.read_text())
    report['collectives'] = found
    path.write_text(json.dumps(report, indent=2))
  for name, counts in found.items():
    print(f'{name}: collectives {counts["total_bytes"] / 2**30:.2f} GiB per device per step '
          + ', '.join(f'{k} {counts[k]["executed"]}x {counts[k]["bytes"] / 2**30:.2f} GiB' for k in KINDS
                      if counts[k]['ops']), flush=True)
  return status


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
