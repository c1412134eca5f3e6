"""Interleaved A/B timing: every side runs in the same process, alternating, so load swings hit all sides alike.

On a shared machine, numbers taken one side after the other move by up to 1.8x with the load. Here each
round runs every side once (the order reverses every round: A B, B A, A B ... so a drift within a round
does not favour one side), after untimed warm-up calls. Each measurement records the 1-minute load average
and the process CPU time next to the wall time. A ratio is the median of the per-round paired ratios; its
spread is (max - min) / median of those paired ratios, and a ratio whose spread exceeds the stated bound is
refused (reported as None with the reason) rather than printed as if it held.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Mapping

DEFAULT_SPREAD_BOUND = 0.25  # refuse a ratio whose paired per-round ratios vary by more than 25% of the median


def _load() -> float:
  return round(os.getloadavg()[0], 2)


def measure(call: Callable[[], object]) -> dict:
  """Seconds of one blocking call, with the load average before it and the process CPU seconds.

  A call that returns a float reports the seconds of the part it measures itself (e.g. decode steps without
  their set-up); that value is used as 'wall_s' and the whole call's time is kept as 'call_s'.
  """
  load = _load()
  cpu, start = time.process_time(), time.perf_counter()
  inner = call()
  wall = time.perf_counter() - start
  out = {'wall_s': wall, 'cpu_s': time.process_time() - cpu, 'load': load}
  if isinstance(inner, float):
    out.update(wall_s=inner, call_s=wall)
  return out


def summarize(times: list[float]) -> dict:
  """Median, min, max and relative spread ((max - min) / median) of some durations."""
  median = statistics.median(times)
  return {'median': median, 'min': min(times), 'max': max(times),
          'spread': (max(times) - min(times)) / median if median > 0 else float('inf'), 'n': len(times)}


def interleave(sides: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict:
  """Runs `warmup` untimed calls of every side, then `rounds` rounds of one timed call per side, alternating.

  Each side is a blocking zero-argument callable. Returns {'sides': {name: {'runs': [...], 'wall': summary}},
  'order': [...], 'load': {'start', 'end'}}; 'first_s' is each side's first (compiling) call.
  """
  if rounds < 1 or warmup < 1:
    raise ValueError(f'interleave: need rounds >= 1 and warmup >= 1, got {rounds}, {warmup}')
  names = list(sides)
  out = {name: {'runs': [], 'first_s': None} for name in names}
  load_start = _load()
  for i in range(warmup):  # alternating too: a side's first call after the other side ran is not timed
    for name in names:
      m = measure(sides[name])
      if i == 0:
        out[name]['first_s'] = m['wall_s']
  order = []
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      out[name]['runs'].append(measure(sides[name]))
      order.append(name)
  for name in names:
    out[name]['wall'] = summarize([m['wall_s'] for m in out[name]['runs']])
    out[name]['cpu'] = summarize([m['cpu_s'] for m in out[name]['runs']])
  return {'sides': out, 'order': order, 'rounds': rounds, 'warmup': warmup,
          'load': {'start': load_start, 'end': _load()}}


def ratio(result: dict, slow: str, fast: str, bound: float = DEFAULT_SPREAD_BOUND,
          work_slow: float = 1.0, work_fast: float = 1.0) -> dict:
  """How many times faster `fast` is than `slow` (throughput ratio), from paired rounds of `interleave`.

  work_* scale for sides that do different amounts of work per call (e.g. useful tokens): the ratio is
  (work_fast / t_fast) / (work_slow / t_slow). 'value' is None (with 'refused') when the spread exceeds bound.
  """
  a, b = result['sides'][slow]['runs'], result['sides'][fast]['runs']
  paired = [(work_fast / y['wall_s']) / (work_slow / x['wall_s']) for x, y in zip(a, b)]
  s = summarize(paired)
  out = {'paired': paired, 'median': s['median'], 'spread': s['spread'], 'bound': bound,
         'of_medians': (work_fast / result['sides'][fast]['wall']['median'])
                       / (work_slow / result['sides'][slow]['wall']['median'])}
  if s['spread'] > bound:
    out['value'] = None
    out['refused'] = f'paired-ratio spread {s["spread"]:.2f} > bound {bound:.2f}'
  else:
    out['value'] = s['median']
  return out


def format_ratio(r: dict) -> str:
  """'1.83x (spread 0.07)' or 'refused (spread 0.41 > 0.25; median 1.6x)'."""
  if r['value'] is None:
    return f"refused (spread {r['spread']:.2f} > {r['bound']:.2f}; median {r['median']:.2f}x)"
  return f"{r['value']:.2f}x (spread {r['spread']:.2f})"


def format_side(result: dict, name: str) -> str:
  """'12.3 s (11.9-13.0, load 5.1-6.0)'."""
  side = result['sides'][name]
  w = side['wall']
  loads = [m['load'] for m in side['runs']]
  return f"{w['median']:.3g} s ({w['min']:.3g}-{w['max']:.3g}, load {min(loads):.1f}-{max(loads):.1f})"
