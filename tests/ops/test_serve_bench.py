"""Smoke test of benchmarks/serve_bench.py on CPU (tiny random model): it writes a folder its handler.py serves, and
reports load time, memory and speed as positive numbers (how fast is the benchmark's business, not the test's)."""

import pytest

from benchmarks import serve_bench

pytest.importorskip('torch')
pytest.importorskip('transformers')


@pytest.mark.slow
def test_serve_bench_measures_the_handler(tmp_path, capsys):
  result = serve_bench.main(['--model', 'tiny', '--dtype', 'float32', '--inputs', '2', '--new_tokens', '4',
                             '--rounds', '1', '--keep', str(tmp_path / 'tiny')])
  assert (tmp_path / 'tiny' / 'handler.py').read_bytes() == serve_bench.HANDLER.read_bytes()
  assert result['dtype'] == 'float32' and result['serving']['device_map'] == 'auto'
  assert result['load_s'] > 0 and result['generated_tokens_per_s'] > 0 and len(result['request_times_s']) == 1
  assert result['memory_after_load_bytes']['cpu_peak_rss'] > 0
  assert result['commit'] and len(result['load_average']) == 3
  assert '"generated_tokens_per_s"' in capsys.readouterr().out
