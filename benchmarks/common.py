"""Small shared pieces of the benchmark suite: configs, timing, memory, machine facts."""

from __future__ import annotations

import os
import pathlib
import platform
import resource
import statistics
import subprocess
import time
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def load_config(model: str, dtype: str, **changes):
  """The flanx T5Config of gin/models/{model}.gin, with the compute dtype and other fields overridden."""
  import gin  # pylint: disable=g-import-not-at-top
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  path = REPO / 'gin' / 'models' / f'{model}.gin'
  if not path.exists():
    raise FileNotFoundError(f'{path}: no such model gin (known: {sorted(p.stem for p in path.parent.glob("*.gin"))})')
  gin.clear_config()
  gin.parse_config_file(str(path))
  config = T5Config()
  gin.clear_config()
  return config.replace(dtype=dtype, **changes)


def time_calls(call: Callable[[int], None], warmup: int, steps: int) -> dict:
  """Times `call(i)` (which must block until done): `warmup` untimed calls (the first compiles), then `steps`."""
  first = None
  for i in range(warmup):
    start = time.perf_counter()
    call(i)
    if first is None:
      first = time.perf_counter() - start
  times = []
  for i in range(steps):
    start = time.perf_counter()
    call(warmup + i)
    times.append(time.perf_counter() - start)
  return {'step_time_s': statistics.median(times), 'step_times_s': times, 'first_step_s': first}


def peak_rss_bytes() -> int:
  """Peak resident set size of this process so far.

  Reads VmHWM (reset at exec) rather than getrusage's ru_maxrss, which a child started by fork + exec inherits
  from its parent on Linux.
  """
  try:
    for line in pathlib.Path('/proc/self/status').read_text().splitlines():
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def load_average() -> list[float]:
  """1/5/15-minute load averages of the machine (other jobs compete for the same cores)."""
  return [round(x, 2) for x in os.getloadavg()]


def git_commit() -> str:
  """HEAD's commit, with '+dirty' when tracked files other than Markdown (notes, results) have changed."""
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.', ':(exclude)*.md'],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    return head + ('+dirty' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def host_facts() -> dict:
  """CPU count, processor and Python version of this host."""
  return {'cpu_count': os.cpu_count(), 'processor': platform.processor() or platform.machine(),
          'python': platform.python_version(), 'hostname_kind': platform.system()}
