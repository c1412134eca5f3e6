"""Smoke test of the Flan pipeline benchmark: a small realistic mirror folder, then `benchmarks.flan_data` on it."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from benchmarks import common

pytestmark = pytest.mark.slow  # builds the 14-task pipeline twice and trains one step (a minute or two)


def test_mirror_then_benchmark(tmp_path):
  folder, work = tmp_path / 'flan', tmp_path / 'work'
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', FLANX_VOCAB='byte')
  subprocess.run([sys.executable, '-m', 'benchmarks.flan_mirror', str(folder), '--rows', '3000', '--parts', '2'],
                 cwd=common.REPO, env=env, check=True, capture_output=True, timeout=300)
  parts = sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*.parquet'))
  assert 'flan_zsopt_data/part.0.parquet' in parts and 'niv2_fsopt_data/part.1.parquet' in parts  # Open-Orca layout
  rows = sum(pq.ParquetFile(str(folder / p)).metadata.num_rows for p in parts)
  assert 2900 <= rows <= 3000  # per-variant rounding
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.flan_data', str(folder), '--work', str(work),
                         '--skip_cache', '--modes', 'uncached', '--batches', '3', '--resume_steps', '2'],
                        cwd=common.REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout[proc.stdout.rindex('\n{'):])
  uncached = result['uncached']
  assert uncached['resume_2_equal'] is True  # the resumed batches are the straight run's
  assert uncached['examples_per_s'] > 0 and 0 < uncached['pipeline_gb'] < uncached['rss_gb_first']
  assert uncached['launch_to_exit_s'] > uncached['goodput']['wall_seconds'] > 0
