"""Where a run's time goes (flanx.training.goodput), profiles on demand (profiling) and the persistent compile
cache (compile_cache): the unit pieces, and tiny train runs that write, resume and trace."""

import gzip
import json
import re

import jax
import pytest

from flanx.training import compile_cache, goodput, metrics_writer, profiling
from train_helpers import read_metrics, train_in_process

_PARTS = [f'timing/{n}_seconds' for n in ('device_step', 'data_wait', 'checkpoint', 'eval', 'compilation', 'restore')]


def test_compile_spans_are_merged_clipped_and_only_counted_once():
  spans = goodput.CompileSpans()
  try:
    event = '/jax/core/compile/jaxpr_trace_duration'
    spans._on_span(event, 10.0, 14.0)  # an outer trace with a nested one inside: 4 s, not 6
    spans._on_span(event, 11.0, 13.0)
    spans._on_span('/jax/core/compile/backend_compile_duration', 16.0, 18.0)
    spans._on_span('/jax/some/other_event', 10.0, 20.0)  # not a compile
    assert spans.take(12.0, 17.0) == pytest.approx(2.0 + 1.0)  # clipped to the part
    assert spans.take(17.0, 30.0) == pytest.approx(1.0)  # the rest of the one that ran past 17
    assert spans.take(0.0, 100.0) == 0.0  # each span is counted once
  finally:
    spans.close()


def test_profile_windows_are_checked_and_repeat():
  assert profiling.parse_window(None, 'k') is None
  assert profiling.parse_window((10, 3), 'k') == (10, 3, 0)
  p = profiling.Profiler((10, 2, 100), '/unused')
  assert [i for i in range(0, 250) if p.wanted(i)] == [10, 11, 110, 111, 210, 211]
  for bad in [(10,), (1, 0), (-1, 2), (5, 3, 2), ('a', 1), 7, (1, 2, 3, 4)]:
    with pytest.raises(profiling.ProfileWindowError, match=r'train.profile_steps = .*expected \(start, count\)'):
      profiling.parse_window(bad, 'train.profile_steps')


def test_progress_status_reads_like_a_progress_line():
  text = metrics_writer.progress_status({'loss_per_nonpadding_target_token': 1.23456, 'timing/steps_per_second': 2.5,
                                         'timing/goodput': 0.874, 'timing/device_hours': 12.3456,
                                         'timing/eta_seconds': 3725.4})
  assert text == 'loss/token 1.2346, 2.5 steps/s, goodput 87%, 12.3 device-h, ETA 1:02:05'


def test_compile_cache_settings_and_jax_config_are_restored(tmp_path, monkeypatch):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.compile_cache(str(tmp_path)) == (str(tmp_path / 'compile_cache'), None)
  assert compile_cache.compile_cache(str(tmp_path), directory='gs://b/c') == ('gs://b/c', None)
  assert compile_cache.compile_cache(str(tmp_path), enabled=False)[0] is None
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/shared/jax')
  assert compile_cache.compile_cache(str(tmp_path))[0] == '/shared/jax'
  with compile_cache.enabled(str(tmp_path)) as stats:
    assert jax.config.jax_compilation_cache_dir == '/shared/jax' and stats.directory == '/shared/jax'
  assert jax.config.jax_compilation_cache_dir == before


def _log_lines(capsys) -> list[str]:
  return capsys.readouterr().out.splitlines()


@pytest.mark.slow
def test_two_intervals_write_goodput_scalars_whose_parts_sum_to_the_wall_time(tmp_path, capsys):
  # progress_bar on, but pytest's output is no terminal: one plain line per interval instead of a bar.
  train_in_process(tmp_path, 8, CHECKPOINT_PERIOD=4, **{'train.log_every': 4, 'train.progress_bar': True})
  rows = [r for r in read_metrics(tmp_path) if 'timing/goodput' in r]
  assert [r['step'] for r in rows] == [4, 8]
  for row in rows:
    parts = sum(row[k] for k in _PARTS)
    assert parts == pytest.approx(row['timing/wall_seconds'], rel=0.05), row
    assert row['timing/goodput'] == pytest.approx(row['timing/device_step_seconds'] / row['timing/wall_seconds'])
    assert row['timing/device_step_seconds'] > 0 and row['timing/other_seconds'] >= 0
  assert rows[0]['timing/compilation_seconds'] > 0 and rows[0]['timing/restore_seconds'] > 0  # the first step's
  assert rows[1]['timing/checkpoint_seconds'] > 0  # checkpoint_4's blocking part (and its completion check)
  assert rows[1]['timing/device_hours'] > rows[0]['timing/device_hours'] > 0
  lines = _log_lines(capsys)
  progress = [line for line in lines if re.match(r'train step \d+/8: loss/token ', line)]
  assert [line.split(':')[0] for line in progress] == ['train step 4/8', 'train step 8/8']
  assert 'ETA 0:00:00' in progress[-1] and 'device-h' in progress[-1] and not any('\r' in line for line in lines)
  assert any(re.fullmatch(r'Saved checkpoint_4 \(\d+\.\d s\)\.', line) for line in lines)
  summary = json.loads((tmp_path / goodput.FILENAME).read_text())
  assert summary['starts'] == 1 and summary['step'] == 8
  assert sum(summary['parts_seconds'].values()) == pytest.approx(summary['wall_seconds'], rel=1e-6)
  assert any(line.startswith('Where the time went (goodput') for line in lines)

  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  events = event_accumulator.EventAccumulator(str(tmp_path / 'train'))
  events.Reload()
  for tag in ['timing/goodput', 'timing/run_goodput', 'timing/device_hours', 'timing/eta_seconds'] + _PARTS:
    assert [e.step for e in events.Scalars(tag)] == [4, 8], tag


@pytest.mark.slow
def test_restart_hits_the_compile_cache_and_a_profile_is_written(tmp_path, capsys):
  cache = {'compile_cache.min_compile_seconds': 0, 'train.log_every': 2}  # tiny programs compile in < 1 s
  train_in_process(tmp_path, 2, **cache, **{'train.profile_steps': (0, 2)})
  cold = _log_lines(capsys)
  jax.clear_caches()  # a restarted process has no compiled programs in memory
  train_in_process(tmp_path, 4, **cache)
  warm = _log_lines(capsys)

  first = lambda lines: next(line for line in lines if line.startswith(f'Compile cache {tmp_path}/compile_cache'))
  hits = lambda line: int(re.search(r'(\d+) hit', line).group(1))
  assert hits(first(cold)) == 0 and re.search(r'[1-9]\d* miss', first(cold)), first(cold)
  assert hits(first(warm)) > 0, first(warm)  # the train step (and the rest) read back from the cache
  rows = [r for r in read_metrics(tmp_path) if 'timing/goodput' in r]
  assert [r['step'] for r in rows] == [2, 4]
  assert rows[1]['timing/compilation_seconds'] < rows[0]['timing/compilation_seconds']
  summary = json.loads((tmp_path / goodput.FILENAME).read_text())
  assert summary['starts'] == 2 and summary['step'] == 4  # totals add up over the two starts
  assert summary['wall_seconds'] > summary['this_start']['wall_seconds']

  # The profile of steps 0..1: TensorBoard's xplane and a Perfetto trace, both parse.
  assert any(line.startswith('Profiled step(s) 0..1: ') for line in cold)
  traces = list((tmp_path / 'train' / 'plugins' / 'profile').glob('*/*.trace.json.gz'))
  planes = list((tmp_path / 'train' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert len(traces) == 1 and len(planes) == 1
  with gzip.open(traces[0]) as f:
    events = json.load(f)['traceEvents']
  assert any(e.get('ph') == 'X' for e in events)  # timed slices, as Perfetto shows them
  xplane_pb2 = pytest.importorskip('tensorflow.tsl.profiler.protobuf.xplane_pb2')
  space = xplane_pb2.XSpace.FromString(planes[0].read_bytes())
  assert any(plane.lines for plane in space.planes)
