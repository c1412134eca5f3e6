"""The train step's traced program kept beside the compile cache (flanx.training.step_cache): a second start reads it
instead of tracing, runs bitwise what the traced step runs, still donates the state, and the key sees what matters."""

from __future__ import annotations

import contextlib
import json
import subprocess

import jax
import numpy as np
import pytest

from flanx.model import network
from flanx.model.config import T5Config
from flanx.training import adafactor, compile_cache, goodput, partitioning, schedules, step_cache, steps

from train_helpers import REPO, assert_trees_equal, saved_params, subprocess_env, train_command

_CONFIG = T5Config(vocab_size=64, d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=1,
                   num_decoder_layers=1, dropout_rate=0.1)


def _batches(count: int = 3, rows: int = 4, length: int = 8) -> list[dict]:
  rng = np.random.default_rng(0)
  out = []
  for _ in range(count):
    targets = rng.integers(2, _CONFIG.vocab_size, (rows, length)).astype(np.int32)
    out.append({'encoder_input_tokens': rng.integers(2, _CONFIG.vocab_size, (rows, length)).astype(np.int32),
                'decoder_input_tokens': np.roll(targets, 1, axis=1), 'decoder_target_tokens': targets})
  return out


def _setup(learning_rate: float = 1e-2):
  tx = adafactor.adafactor(schedules.linear_warmup(learning_rate, warmup_steps=10),
                           param_axes=network.logical_axes(_CONFIG))
  shardings = steps.make_shardings(_CONFIG, tx, partitioning.make_mesh(), partitioning.axis_rules())
  return tx, shardings


def _run(make, batches):
  """Trains `batches` from a fixed init with the step `make(tx, shardings)` builds: (state, metrics, donated)."""
  tx, shardings = _setup()
  state = steps.new_state(steps.init_params(_CONFIG, 0, shardings), tx, shardings)
  step, donated, metrics = make(tx, shardings), [], []
  for batch in batches:
    before = jax.tree.leaves(state.params)[0]
    state, m = step(state, jax.device_put(batch, shardings.batch))
    donated.append(before.is_deleted())
    metrics.append(jax.tree.map(np.asarray, m))
  return jax.tree.map(np.asarray, state), metrics, donated


def _traced_functions(run):
  """The names of the functions JAX traced while `run()` ran."""
  names = []
  listener = lambda event, duration, **kw: event == goodput._COMPILE_EVENTS[0] and names.append(kw.get('fun_name'))
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    return run(), names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_second_start_reads_the_step_and_both_match_the_traced_step_bitwise(tmp_path):
  loss = steps.LossConfig()
  traced = _run(lambda tx, sh: steps.make_train_step(_CONFIG, tx, sh, loss, dropout_seed=3), _batches())
  logs = []

  def cached(tx, sh):
    return step_cache.make_train_step(_CONFIG, tx, sh, loss, dropout_seed=3, log=logs.append)

  with compile_cache.enabled(str(tmp_path)):
    cold, cold_names = _traced_functions(lambda: _run(cached, _batches()))
    jax.clear_caches()  # as in a new process: nothing traced or compiled in memory
    warm, names = _traced_functions(lambda: _run(cached, _batches()))

  assert len(logs) == 2 and logs[0].startswith('Train step: traced; its program is kept in '), logs
  assert logs[1].startswith('Train step: read its traced program from ') and '(not traced)' in logs[1], logs
  assert list((tmp_path / 'compile_cache' / step_cache.FOLDER).glob('*.bin'))
  # The first start traced the step (inside the flat function it exports); the second traced neither.
  assert 'flat' in cold_names and 'flat' not in names and 'step' not in names, (cold_names, names)
  for run in (cold, warm):
    assert_trees_equal(run[0], traced[0])  # the state, bitwise
    assert_trees_equal(run[1], traced[1])  # every step's metrics, bitwise
    assert run[2] == [True] * 3  # the input state's buffers were donated, as the traced step's are
  assert traced[2] == [True] * 3


def test_a_restart_compiles_the_stored_step_ahead_and_runs_it_bitwise(tmp_path):
  # The trainer starts reading and compiling the stored step before it restores (CachedStep.compile_ahead); the
  # first step takes that program, waits for it as compile time, and trains bitwise as the traced step does. A
  # first step whose arguments differ from the ones compiled ahead compiles for its own.
  loss = steps.LossConfig()
  traced = _run(lambda tx, sh: steps.make_train_step(_CONFIG, tx, sh, loss, dropout_seed=3), _batches())
  logs, waits = [], []

  def ahead(length):
    def make(tx, sh):
      step = step_cache.make_train_step(_CONFIG, tx, sh, loss, dropout_seed=3, log=logs.append)
      batch = {k: jax.ShapeDtypeStruct((4, length), np.int32, sharding=sh.batch) for k in _batches(1)[0]}
      step.compile_ahead(steps.abstract_state(_CONFIG, tx, sh, with_frozen=True), batch, contextlib.nullcontext)
      return step
    return make

  listener = lambda event, start, end, **_: event == goodput._COMPILE_WAIT and waits.append(end - start)
  jax.monitoring.register_event_time_span_listener(listener)
  try:
    with compile_cache.enabled(str(tmp_path)):
      for length in (8, 16):  # first starts: nothing stored, nothing compiled ahead; each stores its step
        _run(ahead(length), _batches(1, length=length))
        assert not waits and logs[-1].startswith('Train step: traced;'), logs
      for length, expected in ((8, 'the first step waited'), (16, 'the arguments differ')):
        jax.clear_caches()  # as in a new process
        del logs[:]
        restarted, names = _traced_functions(lambda: _run(ahead(length), _batches()))
        assert any(expected in line for line in logs), logs
        assert 'flat' not in names, names  # the stored program, not traced
        for got, want in zip(restarted, traced):
          assert_trees_equal(got, want)  # state, every step's metrics (bitwise), donation
  finally:
    jax.monitoring.unregister_event_time_span_listener(listener)
  assert len(waits) == 2 and all(w >= 0 for w in waits), waits  # each restart's first step counted its wait


def test_the_cache_off_gives_the_traced_step():
  tx, shardings = _setup()
  assert jax.config.jax_compilation_cache_dir is None
  step = step_cache.make_train_step(_CONFIG, tx, shardings, steps.LossConfig(), log=print)
  assert not isinstance(step, step_cache.CachedStep)


def test_key_follows_what_the_step_closes_over():
  key = lambda lr, **kw: step_cache.fingerprint((_CONFIG, _setup(lr)[0], steps.LossConfig(**kw)))
  assert key(1e-2) == key(1e-2)  # rebuilt from the same settings: the same entry
  assert key(1e-2) != key(2e-2)  # a value inside the schedule's closure
  assert key(1e-2) != key(1e-2, z_loss=0.0)
  assert step_cache.fingerprint(_CONFIG) != step_cache.fingerprint(_CONFIG.replace(d_ff=64))

  class Opaque:  # an object whose state the key cannot see: no entry, the step is traced as before
    pass

  with pytest.raises(step_cache.Unkeyable):
    step_cache.fingerprint(lambda step, o=Opaque(): step)


@pytest.mark.slow
def test_a_second_process_with_the_same_settings_reads_the_step(tmp_path):
  cache = tmp_path / 'cache'
  runs = {}
  for name in ('first', 'second'):  # two processes, the same run settings (their folders differ), one cache folder
    out = subprocess.run(train_command(tmp_path / name, 2) + [f'--compile_cache_dir={cache}'], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, check=True).stdout
    compile_seconds = json.loads((tmp_path / name / goodput.FILENAME).read_text())['this_start']['parts_seconds']
    runs[name] = (next(line for line in out.splitlines() if line.startswith('Train step: ')),
                  compile_seconds['compile'])
  assert runs['first'][0].startswith('Train step: traced;'), runs
  assert runs['second'][0].startswith('Train step: read its traced program'), runs
  assert runs['second'][1] < runs['first'][1], runs
  assert_trees_equal(saved_params(tmp_path / 'second', 2), saved_params(tmp_path / 'first', 2))


def test_the_stored_step_compiles_with_the_train_steps_dot_library(tmp_path):
  # An exported program carries no compiler options: the cached step's call gets the traced step's (cpu_dots), so
  # a warm start runs the same dot library (here forced to oneDNN) as a cold one and as the plain traced step.
  import gin  # pylint: disable=g-import-not-at-top
  from flanx.training import cpu_dots  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    pytest.skip('XLA:CPU dot libraries')
  tx, shardings = _setup()
  state = steps.new_state(steps.init_params(_CONFIG, 0, shardings), tx, shardings)
  batch = jax.device_put(_batches(1)[0], shardings.batch)
  with gin.unlock_config():
    gin.bind_parameter('train_step_compiler_options.dot_library', 'onednn')
  try:
    assert cpu_dots.train_step_compiler_options('cpu') == cpu_dots.ONEDNN
    with compile_cache.enabled(str(tmp_path)):
      step = step_cache.make_train_step(_CONFIG, tx, shardings, steps.LossConfig(), log=lambda m: None)
      assert isinstance(step, step_cache.CachedStep)
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), (state, batch))
      step(state, batch)
      (call,) = step._calls.values()  # pylint: disable=protected-access
      assert '__onednn' in call.lower(*abstract).compile().as_text()
  finally:
    gin.clear_config()
