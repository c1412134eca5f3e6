"""The measured CPU peak bounds what a real GEMM achieves, and MFU is model FLOP/s over that peak."""

import shutil
import time

import numpy as np
import pytest

from benchmarks import ab, cpu_peak


@pytest.mark.skipif(shutil.which('cc') is None and shutil.which('gcc') is None, reason='no C compiler on PATH')
def test_measured_peak_bounds_a_real_gemm():
  peak = cpu_peak.main(['--repeats', '2'])  # the README's command line
  assert peak['threads'] >= 1 and peak['fp32_gflops'] > 0
  a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
  best = 0.0
  for _ in range(5):
    start = time.perf_counter()
    a @ a
    best = max(best, 2 * 1024 ** 3 / (time.perf_counter() - start) / 1e9)
  # numpy's BLAS on all threads cannot beat the FMA units: a peak below it means a miscounted or starved kernel
  # (the margin absorbs load swings between the two measurements, not a factor-of-two error).
  assert best <= 1.25 * peak['fp32_gflops'], (best, peak)
  assert peak['bf16_gflops'] is None or peak['bf16_gflops'] > 0


def test_utilization_is_model_flops_over_median_time_and_peak():
  run = {'sides': {'flanx': {'wall': {'median': 2.0}}, 'hf': {'wall': {'median': 4.0}}}}
  out = ab._utilization(run, 400e9, peak_gflops=250.0)
  assert out['model_gflops_per_s'] == {'flanx': 200.0, 'hf': 100.0}
  assert out['mfu'] == {'flanx': 0.8, 'hf': 0.4}
  assert 'mfu' not in ab._utilization(run, 400e9, peak_gflops=None)
