"""This CPU's measured peak FLOP/s (fp32 FMA, bf16 dot-product), the denominator of CPU MFU.

  python -m benchmarks.cpu_peak [--threads N]

flanx.model.flops knows accelerator peaks from their data sheets; a CPU's depends on its vector units and the
clock it holds under load (in a VM, unknown), so it is measured: a small C kernel (compiled with the system's
`cc -O3 -march=native -fopenmp`) keeps 12 independent vector FMA chains busy on every thread, which is what a
GEMM kernel's inner loop does at best. bf16 uses AVX512-BF16's dot-product instruction (2 FLOP per bf16 pair),
when the CPU has it. Best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

# 12 accumulators hide the FMA latency (4 cycles) over 2 pipes; the result is printed so nothing is elided.
_KERNEL = r"""
#include <omp.h>
#include <stdio.h>
#include <time.h>
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif
typedef float v16 __attribute__((vector_size(64)));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  long iters = 50000000; int threads = 1; float sink = 0;
  #pragma omp parallel
  #pragma omp single
  threads = omp_get_num_threads();
  double t0 = now();
  #pragma omp parallel reduction(+:sink)
  {
    v16 a[12], b, c;
    for (int i = 0; i < 16; i++) { b[i] = 1.0000001f; c[i] = 1e-7f; }
    for (int j = 0; j < 12; j++) for (int i = 0; i < 16; i++) a[j][i] = j;
    for (long k = 0; k < iters; k++) {
      #pragma GCC unroll 12
      for (int j = 0; j < 12; j++) a[j] = a[j] * b + c;
    }
    for (int j = 0; j < 12; j++) for (int i = 0; i < 16; i++) sink += a[j][i];
  }
  double fp32 = threads * iters * 12.0 * 16 * 2 / (now() - t0);
  double bf16 = 0;
#ifdef __AVX512BF16__
  t0 = now();
  #pragma omp parallel reduction(+:sink)
  {
    __m512 a[12];
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int j = 0; j < 12; j++) a[j] = _mm512_set1_ps(j);
    for (long k = 0; k < iters; k++) {
      #pragma GCC unroll 12
      for (int j = 0; j < 12; j++) a[j] = _mm512_dpbf16_ps(a[j], x, y);
    }
    for (int j = 0; j < 12; j++) sink += _mm512_reduce_add_ps(a[j]);
  }
  bf16 = threads * iters * 12.0 * 64 / (now() - t0);
#endif
  printf("%d %g %g %g\n", threads, fp32, bf16, sink);
  return 0;
}
"""


def measure(threads: int | None = None, repeats: int = 5) -> dict:
  """Best-of-`repeats` fp32 and bf16 GFLOP/s of this CPU over `threads` threads (default: all)."""
  cc = shutil.which('cc') or shutil.which('gcc')
  if cc is None:
    raise RuntimeError('benchmarks.cpu_peak needs a C compiler (cc or gcc) on PATH')
  with tempfile.TemporaryDirectory(prefix='cpu_peak_') as tmp:
    src, exe = pathlib.Path(tmp) / 'peak.c', pathlib.Path(tmp) / 'peak'
    src.write_text(_KERNEL)
    subprocess.run([cc, '-O3', '-march=native', '-fopenmp', str(src), '-o', str(exe)], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or os.cpu_count()))
    runs = [subprocess.run([str(exe)], env=env, capture_output=True, text=True, check=True).stdout.split()
            for _ in range(repeats)]
  return {'threads': int(runs[0][0]), 'fp32_gflops': max(float(r[1]) for r in runs) / 1e9,
          'bf16_gflops': max(float(r[2]) for r in runs) / 1e9 or None, 'repeats': repeats}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--threads', type=int, default=None, help='threads (default: every CPU)')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)
  result = measure(args.threads, args.repeats)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
