"""SIGTERM as a request to stop cleanly, caught from a command's first line (this module imports nothing heavy).

`install()` runs before the command imports jax or reads its config, so a SIGTERM that arrives while the run is
still setting up (imports, restore, compilation) is remembered instead of killing the process: the training loop
then stops before its first step (nothing new to save) or saves and exits at the next step, and exits 0.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def _on_sigterm(signum, frame) -> None:  # pylint: disable=unused-argument
  _requested.set()


def install() -> bool:
  """Catches SIGTERM from now on (main thread only); True if installed."""
  if threading.current_thread() is not threading.main_thread():
    return False
  signal.signal(signal.SIGTERM, _on_sigterm)
  return True


def installed() -> bool:
  """Whether SIGTERM is currently caught by this module."""
  return signal.getsignal(signal.SIGTERM) is _on_sigterm


def requested() -> bool:
  """Whether a SIGTERM arrived since the handler was installed (or since `clear()`)."""
  return _requested.is_set()


def request() -> None:
  """Records a stop request as if SIGTERM had arrived."""
  _requested.set()


def clear() -> None:
  """Forgets earlier stop requests (a new run in the same process)."""
  _requested.clear()
