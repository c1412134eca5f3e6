"""JAX's persistent compilation cache for train, eval and infer: a restart compiles nothing it compiled before.

On by default, in a folder under the command's output (`MODEL_DIR/compile_cache` for train, `<output
dir>/compile_cache` for eval and infer). `--compile_cache_dir=…` (or the gin binding `compile_cache.directory`)
names a shared folder instead, local or gs://; JAX's own `JAX_COMPILATION_CACHE_DIR` is honoured when neither
is set. `compile_cache.enabled = False` turns it off. JAX stores only programs whose compile took at least
`compile_cache.min_compile_seconds`; unset, that is 0 for a local folder (every program: a restart compiles
nothing, and reading a small entry from a local disk takes milliseconds) and JAX's default, 1 s, for a remote one
(gs://…: there the small ones are cheaper to compile than to fetch). The traced train step is kept in the same
folder (step_cache).

As JAX warns, a cache folder is trusted code: share one only with people who may run programs on your machines.
Hits and misses are counted from JAX's monitoring events and logged.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

import gin

FOLDER = 'compile_cache'
_HIT, _REQUEST, _WRITE = ('/jax/compilation_cache/cache_hits', '/jax/compilation_cache/compile_requests_use_cache',
                          '/jax/compilation_cache/cache_misses')  # JAX's 'cache_misses' counts entries written


class CacheStats:
  """Counts the persistent cache's lookups in this process while it is open."""

  def __init__(self, directory: str | None):
    import jax  # pylint: disable=g-import-not-at-top
    self.directory, self.requests, self.hits, self.written = directory, 0, 0, 0
    self._monitoring = jax.monitoring
    self._monitoring.register_event_listener(self._on_event)

  def _on_event(self, event: str, **_) -> None:
    if event == _REQUEST:
      self.requests += 1
    elif event == _HIT:
      self.hits += 1
    elif event == _WRITE:
      self.written += 1

  @property
  def misses(self) -> int:
    return self.requests - self.hits

  def describe(self) -> str:
    if self.directory is None:
      return 'Compile cache: off.'
    return (f'Compile cache {self.directory}: {self.hits} hit(s), {self.misses} miss(es) '
            f'({self.written} new entr{"y" if self.written == 1 else "ies"} written).')

  def close(self) -> None:
    self._monitoring.unregister_event_listener(self._on_event)


@gin.configurable(denylist=['default_dir'])
def compile_cache(default_dir: str | None, directory: str | None = None, enabled: bool = True,
                  min_compile_seconds: float | None = None) -> tuple[str | None, float | None]:
  """(folder, minimum compile seconds) of the persistent compilation cache (folder None: off)."""
  if not enabled:
    return None, min_compile_seconds
  default = os.path.join(default_dir, FOLDER) if default_dir else None
  return directory or os.environ.get('JAX_COMPILATION_CACHE_DIR') or default, min_compile_seconds


@contextlib.contextmanager
def enabled(default_dir: str | None) -> Iterator[CacheStats]:
  """Uses the persistent cache (see compile_cache) inside; JAX's previous cache settings are restored after."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as jax_cache  # pylint: disable=g-import-not-at-top
  directory, min_seconds = compile_cache(default_dir)
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs')
  previous = {name: getattr(jax.config, name) for name in names}
  if min_seconds is None:
    min_seconds = previous[names[1]] if directory is None or '://' in directory else 0.0
  wanted = {names[0]: directory, names[1]: float(min_seconds)}
  _set(jax, jax_cache, wanted)
  stats = CacheStats(directory)
  try:
    yield stats
  finally:
    stats.close()
    _set(jax, jax_cache, previous)


def _set(jax: Any, jax_cache: Any, values: dict[str, Any]) -> None:
  for name, value in values.items():
    jax.config.update(name, value)
  jax_cache.reset_cache()  # JAX opens its cache folder once; make it open the one just set


def cached(entry: Callable[[], Any], default_dir: Callable[[], str | None]) -> Callable[[], Any]:
  """`entry` (a command line's gin-configured function) run with the cache on; `default_dir()` is asked once gin
  has been parsed. Prints the hits and misses after."""

  def run() -> Any:
    from flanx.training import runtime  # pylint: disable=g-import-not-at-top
    with enabled(default_dir()) as stats:
      try:
        return entry()
      finally:
        if runtime.is_first_host():
          print(stats.describe(), flush=True)

  return run
