"""Where a run's wall time goes: device step, data wait, checkpoint, eval, compile, restore (goodput).

The start-up until the first step is 'restore' (restoring or initialising the state, positioning the data,
opening the logs); then the train loop wraps each kind of work in `clock.part(name)`. Time spent compiling
inside any of them (JAX's own trace, lowering and XLA compile events, on this thread) is moved to 'compile', so
the first step's compile does not read as a slow step. What no part covers (logging, Python between the parts,
writing a profile) is 'other'. Goodput is device-step time / wall time, per log interval and for the whole run.

The whole run's totals (wall time, device-hours, each part) are kept in MODEL_DIR/goodput.json, updated at every
log interval, so they add up across restarts; a fresh start (no checkpoint to resume) starts them again. The
exported model card shows that table (flanx.interop.model_card).

TensorBoard scalars (t5x's `timing/` prefix): per interval `timing/goodput`, `timing/wall_seconds`,
`timing/{device_step,data_wait,checkpoint,eval,compilation,restore,other}_seconds`; for the run so far
`timing/run_goodput`, `timing/device_hours` and `timing/eta_seconds`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
import time
from typing import Any, Callable, Iterator

# The parts, as named in the summary (and, with _seconds, in TensorBoard: compile is t5x's 'compilation').
PARTS = ('device_step', 'data_wait', 'checkpoint', 'eval', 'compile', 'restore')
_SCALAR_NAMES = {**{p: p for p in PARTS}, 'compile': 'compilation', 'other': 'other'}
FILENAME = 'goodput.json'
# JAX records each of these (tracing to a jaxpr, lowering to MLIR, the XLA compile or persistent-cache read) as
# a time span; nested jits give nested spans, so they are merged before they are summed.
# flanx adds the wait for a program compiled in the background (step_cache.CachedStep.compile_ahead).
_COMPILE_WAIT = '/flanx/compile/background_wait_duration'
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration', '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration', _COMPILE_WAIT)


def record_compile_wait(start: float, end: float) -> None:
  """Counts [start, end] (time.time()) of this thread as compile: it waited for a program compiled elsewhere."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.monitoring.record_event_time_span(_COMPILE_WAIT, start, end)


class CompileSpans:
  """Collects JAX's compile time spans on the creating thread (a background checkpoint thread's compiles would
  otherwise be subtracted from the main thread's step)."""

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
    self._thread, self._spans, self._monitoring = threading.get_ident(), [], jax.monitoring
    self._monitoring.register_event_time_span_listener(self._on_span)

  def _on_span(self, event: str, start: float, end: float, **_) -> None:
    if event in _COMPILE_EVENTS and threading.get_ident() == self._thread:
      self._spans.append((start, end))

  def take(self, start: float, end: float) -> float:
    """Seconds of [start, end] covered by compile spans; forgets the spans that ended by `end`."""
    spans = sorted((max(s, start), min(e, end)) for s, e in self._spans if e > start and s < end)
    self._spans = [(s, e) for s, e in self._spans if e > end]
    total, reach = 0.0, start
    for s, e in spans:
      if e > reach:
        total += e - max(s, reach)
        reach = e
    return total

  def close(self) -> None:
    self._monitoring.unregister_event_time_span_listener(self._on_span)


class RunClock:
  """A run's wall time by part: `part(name)` times a piece of work; `interval(step)` closes a log interval."""

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
    self.devices, self.device_kind = jax.device_count(), jax.devices()[0].device_kind
    self.started = self._interval_start = time.time()
    self.this_start = dict.fromkeys(PARTS, 0.0)
    self._interval = dict.fromkeys(PARTS, 0.0)
    self._before: dict[str, Any] = {}  # the totals of earlier starts of this run
    self._path: str | None = None
    self._train_steps = self._step = 0
    self._log, self._cache, self._cache_logged = None, None, False
    self._compile = CompileSpans()

  @contextlib.contextmanager
  def part(self, name: str) -> Iterator[None]:
    """Times the work inside as `name` (its compile time as 'compile')."""
    start = time.time()
    try:
      yield
    finally:
      end = time.time()
      compiling = self._compile.take(start, end)
      self._add(name, end - start - compiling)
      self._add('compile', compiling)

  def _add(self, name: str, seconds: float) -> None:
    self.this_start[name] += seconds
    self._interval[name] += seconds

  def attach(self, model_dir: str, resumed: bool, step: int, train_steps: int, log: Callable[[str], None],
             cache: Any = None) -> None:
    """Call when the loop is about to start: the time so far is the start-up ('restore': restoring or
    initialising the state, positioning the data, opening the logs; its compiles as 'compile'). From here on the
    totals are kept in MODEL_DIR/goodput.json (a resumed run adds to the ones there) and logged with `log`, with
    the compile cache's hits and misses (`cache.describe()`) after the first interval."""
    now = time.time()
    compiling = self._compile.take(self.started, now)
    self._add('compile', compiling)
    self._add('restore', max(now - self.started - sum(self.this_start.values()), 0.0))
    self._path, self._step, self._train_steps = os.path.join(model_dir, FILENAME), step, train_steps
    self._log, self._cache = log, cache
    if resumed:
      self._before = read(model_dir) or {}

  def interval(self, step: int) -> dict[str, float]:
    """The scalars of the log interval ending at `step` (and the run's so far); starts the next interval and
    saves the run's totals."""
    now = time.time()
    steps, self._step = step - self._step, step
    wall = max(now - self._interval_start, 1e-9)
    parts = {**self._interval, 'other': max(wall - sum(self._interval.values()), 0.0)}
    scalars = {f'timing/{_SCALAR_NAMES[k]}_seconds': v for k, v in parts.items()}
    scalars.update({'timing/wall_seconds': wall, 'timing/goodput': parts['device_step'] / wall})
    run = self.summary(now)
    scalars.update({'timing/run_goodput': run['goodput'], 'timing/device_hours': run['device_hours']})
    steady = wall - parts['compile'] - parts['restore']  # compile and restore do not recur every interval
    if steps > 0 and self._train_steps:
      scalars['timing/eta_seconds'] = max(self._train_steps - step, 0) * steady / steps
    self._interval, self._interval_start = dict.fromkeys(PARTS, 0.0), now
    self.save(run)
    if self._cache is not None and not self._cache_logged:
      self._log(f"{self._cache.describe()} Compiling took {run['this_start']['parts_seconds']['compile']:.1f} s.")
      self._cache_logged = True
    return scalars

  def summary(self, now: float | None = None) -> dict[str, Any]:
    """The run's totals over all its starts so far (wall, device-hours, parts, goodput)."""
    wall = (now or time.time()) - self.started
    parts = {**self.this_start, 'other': max(wall - sum(self.this_start.values()), 0.0)}
    before = self._before.get('parts_seconds', {})
    total_parts = {k: v + float(before.get(k, 0.0)) for k, v in parts.items()}
    total_wall = wall + float(self._before.get('wall_seconds', 0.0))
    device_seconds = wall * self.devices + float(self._before.get('device_hours', 0.0)) * 3600
    return {'wall_seconds': total_wall, 'parts_seconds': total_parts,
            'goodput': total_parts['device_step'] / max(total_wall, 1e-9), 'device_hours': device_seconds / 3600,
            'starts': int(self._before.get('starts', 0)) + 1, 'step': self._step,
            'devices': self.devices, 'device_kind': self.device_kind,
            'updated': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'this_start': {'wall_seconds': wall, 'parts_seconds': parts}}

  def save(self, run: dict[str, Any] | None = None) -> None:
    """Writes the run's totals to MODEL_DIR/goodput.json (first host; staged, then renamed)."""
    from flanx.training import runtime  # pylint: disable=g-import-not-at-top
    if self._path is None or not runtime.is_first_host():
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
    try:
      with tf.io.gfile.GFile(self._path + '.tmp', 'w') as f:
        f.write(json.dumps(run or self.summary(), indent=1) + '\n')
      tf.io.gfile.rename(self._path + '.tmp', self._path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:  # disk full: the one line every failed write gives
      from flanx.training import run_folder  # pylint: disable=g-import-not-at-top
      raise run_folder.write_failed(self._path, e) from e

  def finish(self) -> dict[str, Any]:
    """Stops listening; once attached, saves the totals and logs the table of this start and of the whole run."""
    self._compile.close()
    run = self.summary()
    if self._path is not None:
      self.save(run)
      if self._cache is not None:
        self._log(self._cache.describe())
      self._log(table(run))
    return run


def read(model_dir: str) -> dict[str, Any] | None:
  """MODEL_DIR/goodput.json, or None when the run has none (or it is unreadable: it is a report, not state)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, FILENAME)
  try:
    with tf.io.gfile.GFile(path) as f:
      record = json.load(f)
  except (tf.errors.OpError, OSError, ValueError):
    return None
  return record if isinstance(record, dict) and isinstance(record.get('parts_seconds'), dict) else None


def table(run: dict[str, Any]) -> str:
  """The time table printed at the end of a run: seconds and share of wall time per part."""
  this = run['this_start']
  rows = [('part', 'this start', 'share', 'whole run', 'share')]
  for name in PARTS + ('other',):
    rows.append((name.replace('_', ' '), f"{this['parts_seconds'][name]:.1f} s",
                 f"{this['parts_seconds'][name] / max(this['wall_seconds'], 1e-9):.1%}",
                 f"{run['parts_seconds'][name]:.1f} s", f"{run['parts_seconds'][name] / max(run['wall_seconds'], 1e-9):.1%}"))
  rows.append(('wall', f"{this['wall_seconds']:.1f} s", '', f"{run['wall_seconds']:.1f} s", ''))
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  lines = ['  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
  return '\n'.join([f"Where the time went (goodput {run['goodput']:.1%} over {run['starts']} start(s); "
                    f"{run['device_hours']:.3f} device-hours on {run['devices']} × {run['device_kind']}):"] + lines)


