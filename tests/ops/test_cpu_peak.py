"""The CPU peak measurement runs and gives positive finite numbers, and MFU is model FLOP/s over that peak."""

import math
import shutil

import pytest

from benchmarks import ab, cpu_peak


@pytest.mark.slow  # compiles and runs a C kernel (seconds)
@pytest.mark.skipif(shutil.which('cc') is None and shutil.which('gcc') is None, reason='no C compiler on PATH')
def test_peak_measurement_runs_and_gives_positive_finite_numbers():
  # How fast this machine is belongs in BENCHMARKS.md: the test checks that the README's command
  # (on one thread here, to spare a shared CI machine) runs and measures.
  peak = cpu_peak.main(['--threads', '1', '--repeats', '1'])
  assert peak['threads'] == 1 and peak['repeats'] == 1
  assert math.isfinite(peak['fp32_gflops']) and peak['fp32_gflops'] > 0
  assert peak['bf16_gflops'] is None or (math.isfinite(peak['bf16_gflops']) and peak['bf16_gflops'] > 0)


def test_utilization_is_model_flops_over_median_time_and_peak():
  run = {'sides': {'flanx': {'wall': {'median': 2.0}}, 'hf': {'wall': {'median': 4.0}}}}
  out = ab._utilization(run, 400e9, peak_gflops=250.0)
  assert out['model_gflops_per_s'] == {'flanx': 200.0, 'hf': 100.0}
  assert out['mfu'] == {'flanx': 0.8, 'hf': 0.4}
  assert 'mfu' not in ab._utilization(run, 400e9, peak_gflops=None)
