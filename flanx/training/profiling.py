"""JAX profiler traces of chosen train steps or decode batches, for TensorBoard's profile plugin or Perfetto.

A window is `(start, count)`: the `count` steps (batches) from step `start` on, where train step `start` is the
update that takes the state from `start` to `start + 1`; `(start, count, every)` repeats the window every
`every` steps. Each window becomes one trace, `<log dir>/plugins/profile/<time>/<host>.xplane.pb` (TensorBoard,
with `pip install tensorboard-plugin-profile`) plus `<host>.trace.json.gz` (https://ui.perfetto.dev).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Sequence


class ProfileWindowError(ValueError):
  """A profile window that is not (start, count) or (start, count, every) of non-negative integers."""


def parse_window(value: Sequence[int] | None, key: str) -> tuple[int, int, int] | None:
  """(start, count, every) from a gin value; None means no profiling."""
  if value is None:
    return None
  values = tuple(value) if isinstance(value, (list, tuple)) else None
  if (values is None or len(values) not in (2, 3) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in values)
      or min(values) < 0 or values[1] < 1 or (len(values) == 3 and 0 < values[2] < values[1])):
    raise ProfileWindowError(f'{key} = {value!r}: expected (start, count) or (start, count, every) with count >= 1 '
                             'and every >= count (e.g. (10, 3): steps 10..12; (10, 3, 1000): also 1010..1012, …)')
  return values[0], values[1], values[2] if len(values) == 3 else 0


class Profiler:
  """Starts a trace before the first step of each window and stops it after the window's last step."""

  def __init__(self, window: tuple[int, int, int] | None, log_dir: str, log: Callable[[str], None] = print):
    self.window, self.log_dir, self.log = window, log_dir, log
    self._first: int | None = None

  def wanted(self, index: int) -> bool:
    if self.window is None:
      return False
    start, count, every = self.window
    offset = index - start
    return offset >= 0 and (offset < count if not every else offset % every < count)

  def before(self, index: int) -> None:
    """Call before step `index`: opens a trace when the step is a window's first."""
    if self._first is None and self.wanted(index):
      import jax  # pylint: disable=g-import-not-at-top
      jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)
      self._first = index

  def after(self, index: int) -> None:
    """Call after step `index` has finished on the device: closes the trace after a window's last step."""
    if self._first is not None and not self.wanted(index + 1):
      self.stop(index)

  def stop(self, last: int | None = None) -> None:
    """Writes the open trace, if any (also at the end of a loop that stopped inside a window)."""
    if self._first is None:
      return
    import jax  # pylint: disable=g-import-not-at-top
    first, self._first = self._first, None
    jax.profiler.stop_trace()
    steps = f'{first}' if last in (None, first) else f'{first}..{last}'
    self.log(f'Profiled step(s) {steps}: {os.path.join(self.log_dir, "plugins", "profile")} '
             '(TensorBoard profile plugin, or the .trace.json.gz in https://ui.perfetto.dev)')

  @contextlib.contextmanager
  def step(self, index: int) -> Iterator[None]:
    """Profiles the work inside as step `index` when it is in a window (the work must finish inside)."""
    self.before(index)
    try:
      yield
    except BaseException:
      self.stop(index)
      raise
    self.after(index)


OFF = Profiler(None, '')
