"""Small shared pieces of the benchmark suite: configs, timing, memory, machine facts."""

from __future__ import annotations

import os
import pathlib
import platform
import re
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
  """CPU count, processor, CPU model and kernel flags (cpu_facts) and Python version of this host."""
  return {'cpu_count': os.cpu_count(), 'processor': platform.processor() or platform.machine(),
          'cpu': cpu_facts(), 'python': platform.python_version(), 'hostname_kind': platform.system()}


# lscpu flags that decide which kernels XLA, oneDNN and MKL pick (vector width, FMA, bf16/int8 dot units).
_KERNEL_FLAGS = re.compile(r'^(sse4_2|avx\w*|fma|f16c|amx\w*|\w*vnni\w*|\w*bf16\w*|\w*fp16\w*)$')
_LSCPU_KEYS = ('Architecture', 'Vendor ID', 'Model name', 'CPU family', 'Model', 'Stepping', 'CPU(s)',
               'Thread(s) per core', 'Core(s) per socket', 'Socket(s)', 'NUMA node(s)', 'CPU max MHz',
               'L1d cache', 'L2 cache', 'L3 cache', 'Hypervisor vendor', 'Virtualization type')


def cpu_facts(lscpu_text: str | None = None) -> dict:
  """The CPU model and its kernel-relevant flags (from `lscpu`, else /proc/cpuinfo): the same command is not the
  same benchmark on an AMD Zen 4 and an Intel Xeon with AMX."""
  if lscpu_text is None:
    try:
      lscpu_text = subprocess.run(['lscpu'], capture_output=True, text=True, check=True,
                                  env={**os.environ, 'LC_ALL': 'C'}).stdout
    except (OSError, subprocess.CalledProcessError):
      lscpu_text = ''
  fields = {}
  for line in lscpu_text.splitlines():
    key, sep, value = line.partition(':')
    if sep:
      fields.setdefault(key.strip(), value.strip())
  if 'Model name' not in fields:  # no lscpu: the kernel's view
    try:
      for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
        key, _, value = line.partition(':')
        if key.strip() in ('model name', 'flags', 'vendor_id'):
          fields.setdefault({'model name': 'Model name', 'flags': 'Flags', 'vendor_id': 'Vendor ID'}[key.strip()],
                            value.strip())
    except OSError:
      pass
  facts = {k: fields[k] for k in _LSCPU_KEYS if k in fields}
  facts['kernel_flags'] = sorted(f for f in fields.get('Flags', '').split() if _KERNEL_FLAGS.match(f))
  return facts


def flush_denormals_like_xla() -> bool:
  """Makes torch flush denormal floats to zero on this thread (and the threads it starts later), as XLA:CPU does;
  returns whether torch now flushes them. Training produces millions of denormal gradient values, which x86 cores
  process up to ~100x slower unflushed: without this the HF side of a comparison is slowed by a setting, not by
  its kernels. Call it before torch starts its thread pool (before the first torch op)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_flush_denormal(True)
  return torch_flushes_denormals()


def torch_flushes_denormals() -> bool:
  """Whether torch on this thread turns a denormal float32 into 0 (measured, not assumed)."""
  import torch  # pylint: disable=g-import-not-at-top
  tiny = torch.tensor([2.0 ** -140], dtype=torch.float64).to(torch.float32)  # a float32 denormal unless flushed
  return bool((tiny * 1.0).item() == 0.0)
