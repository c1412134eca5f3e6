"""Smoke test of the benchmark suite: `python -m benchmarks --quick --suite D1` on the tiny model (CPU)."""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import common
from flanx.model import flops

pytestmark = pytest.mark.slow  # runs the benchmark suite in a subprocess (tens of seconds)


@pytest.fixture(scope='module')
def quick_d1(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', 'benchmarks', '--quick', '--suite', 'D1', '--device', 'cpu',
                         '--out', str(out)], cwd=common.REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((out / 'results.json').read_text()), (out / 'results.md').read_text()


def test_header_records_device_date_commit_load(quick_d1):
  result, md = quick_d1
  assert result['device']['platform'] == 'cpu'
  assert result['quick'] and result['suite'] == ['D1']
  assert len(result['load_average']['start']) == 3 and len(result['load_average']['end']) == 3
  assert result['commit'] != '' and result['date'][:2] == '20'
  for text in (f"commit: {result['commit']}", result['date'], 'load average', 'FLOPs: flanx.model.flops'):
    assert text in md


def test_decode_rows_are_measured_and_consistent(quick_d1):
  result, md = quick_d1
  rows = result['rows']
  config = common.load_config('tiny', 'float32')
  cases = {(r['impl'], r['mode'], r['batch']): r for r in rows}
  assert set(cases) == {(impl, mode, batch) for impl in ('flanx', 'hf_generate') for mode in ('greedy', 'sample')
                        for batch in (1, 2)}
  for (impl, _, batch), r in cases.items():
    assert 'error' not in r
    assert r['step_time_s'] > 0 and r['peak_memory_bytes'] > 0
    assert r['step_time_s'] == sorted(r['step_times_s'])[len(r['step_times_s']) // 2]
    assert math.isclose(r['tokens_per_s'], batch * r['new_tokens'] / r['step_time_s'])
    assert math.isclose(r['encoder_tokens_per_s'], batch * r['inputs'] / r['step_time_s'])
    assert math.isclose(r['model_flops_per_step'], batch * flops.forward_flops(config, r['inputs'], r['new_tokens']))
    assert r['mfu'] is None  # no known peak on CPU
    assert f"| D1 | {impl} | tiny | float32 | {r['mode']} | {batch} |" in md
  # Both sides ran the same model: the HF side counts its torch parameters itself.
  assert cases[('flanx', 'greedy', 1)]['params'] == cases[('hf_generate', 'greedy', 1)]['params']
  for (impl, mode, batch), r in cases.items():
    if impl == 'flanx':
      hf = cases[('hf_generate', mode, batch)]
      assert math.isclose(r['ratio_vs']['hf_generate']['tokens_per_s'], r['tokens_per_s'] / hf['tokens_per_s'])
      assert f"{r['ratio_vs']['hf_generate']['tokens_per_s']:.2f}×" in md
