"""SIGTERM and the first Ctrl-C as a request to stop cleanly, caught from a command's first line (this module
imports nothing heavy).

`install()` runs before the command imports jax or reads its config, so a SIGTERM or Ctrl-C (SIGINT) that
arrives while the run is still setting up (imports, restore, compilation) is remembered instead of killing the
process: the training loop then stops before its first step (nothing new to save) or saves and exits at the next
step, and exits 0. A second Ctrl-C aborts at once (KeyboardInterrupt), without saving.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_requested = threading.Event()
_aborted = threading.Event()  # a second Ctrl-C came (its KeyboardInterrupt may have been swallowed, e.g. in a gc hook)
_reason = ['SIGTERM']  # what asked to stop: 'SIGTERM' or 'Ctrl-C (SIGINT)'
_previous_sigint: list = [None]  # the SIGINT handler before install() (a notebook's interrupt, Python's default)


ABORT_MESSAGE = ('Aborted by a second Ctrl-C: nothing saved since the last checkpoint; rerun the same command to '
                 'resume from it.')


class SecondInterrupt(KeyboardInterrupt):
  """The second Ctrl-C: abort now, without saving."""


def _on_signal(signum, frame) -> None:  # pylint: disable=unused-argument
  if signum == signal.SIGINT:
    if _requested.is_set():  # the second Ctrl-C: abort now, without saving
      _aborted.set()
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise SecondInterrupt('a second Ctrl-C: aborted without saving')
    _reason[0] = 'Ctrl-C (SIGINT)'
    sys.stderr.write('\nCtrl-C: stopping at the next step with a checkpoint; press Ctrl-C again to abort without '
                     'saving.\n')
    sys.stderr.flush()
  else:
    _reason[0] = 'SIGTERM'
  _requested.set()


def install() -> bool:
  """Catches SIGTERM and Ctrl-C from now on (main thread only); True if installed."""
  if threading.current_thread() is not threading.main_thread():
    return False
  signal.signal(signal.SIGTERM, _on_signal)
  if sys.excepthook is sys.__excepthook__:  # an abort while still importing: one line, not a traceback
    sys.excepthook = _one_line_abort
  if not getattr(sys.unraisablehook, 'flanx_stop_signal', False):
    sys.unraisablehook = _quiet_swallowed_abort(sys.unraisablehook)
  current = signal.getsignal(signal.SIGINT)
  if current is not _on_signal:
    _previous_sigint[0] = current
    signal.signal(signal.SIGINT, _on_signal)
  return True


def _quiet_swallowed_abort(previous):
  """A second Ctrl-C that lands in a callback Python cannot raise from (jax's gc hook) is 'ignored' with a
  printed traceback; the abort is already recorded (_aborted) and happens at the next check, so print nothing."""

  def hook(unraisable) -> None:
    if isinstance(unraisable.exc_value, SecondInterrupt):
      return
    previous(unraisable)

  hook.flanx_stop_signal = True
  return hook


def _one_line_abort(kind, value, traceback) -> None:
  if issubclass(kind, SecondInterrupt):  # uncaught: every `finally` has run; exit as a shell expects of Ctrl-C
    sys.stderr.write(ABORT_MESSAGE + '\n')
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)  # pylint: disable=protected-access
  else:
    sys.__excepthook__(kind, value, traceback)


def release_sigint() -> None:
  """Gives Ctrl-C back to its handler before install() (a run inside a notebook or another program), and forgets
  a stop that Ctrl-C requested, so the next run in this process starts normally."""
  if threading.current_thread() is not threading.main_thread():
    return
  if signal.getsignal(signal.SIGINT) is _on_signal and _previous_sigint[0] is not None:
    signal.signal(signal.SIGINT, _previous_sigint[0])
    _previous_sigint[0] = None
  if _reason[0] != 'SIGTERM':
    _requested.clear()
    _aborted.clear()
    _reason[0] = 'SIGTERM'


def raise_if_aborted() -> None:
  """Raises SecondInterrupt if a second Ctrl-C came (for checks that run where an interrupt was swallowed)."""
  if _aborted.is_set():
    raise SecondInterrupt('a second Ctrl-C: aborted without saving')


def installed() -> bool:
  """Whether SIGTERM is currently caught by this module."""
  return signal.getsignal(signal.SIGTERM) is _on_signal


def requested() -> bool:
  """Whether a SIGTERM or Ctrl-C arrived since the handler was installed (or since `clear()`)."""
  return _requested.is_set()


def reason() -> str:
  """What requested the stop: 'SIGTERM' or 'Ctrl-C (SIGINT)'."""
  return _reason[0]


def request() -> None:
  """Records a stop request as if SIGTERM had arrived."""
  _reason[0] = 'SIGTERM'
  _requested.set()


def clear() -> None:
  """Forgets earlier stop requests (a new run in the same process)."""
  _requested.clear()
  _aborted.clear()
  _reason[0] = 'SIGTERM'
