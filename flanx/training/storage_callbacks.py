"""Quiets the late callbacks of storage operations whose caller already failed ('Event loop is closed').

TensorStore (under orbax) hands each finished read or write to the asyncio loop that awaits it, with
loop.call_soon_threadsafe called from its own C++ thread (so no Python frame calls it). When one operation of a
save or restore fails (disk full, a damaged file), orbax's loop stops and closes while the others are still
running; each of them then fails with 'Event loop is closed' and Python prints its traceback through
sys.unraisablehook, 10 to 100 of them before or after the command's one error line. A damaged checkpoint adds two
more kinds: orbax reads every array at once, and when one read fails the reads of the other arrays (which fail the
same way) are abandoned, so each reports its own error as it is collected, some 60 lines each: an 'Exception ignored
in: <coroutine ...>' traceback, an asyncio '... exception was never retrieved' record, a 'coroutine ... was never
awaited' warning; those are dropped once a read has failed (read_failed). Nothing is lost there that the failed
operation's own error does not report, so those (and only those) are dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_ORBAX = os.sep + os.path.join('orbax', 'checkpoint') + os.sep


def is_late_callback(unraisable) -> bool:
  """Whether `unraisable` (sys.unraisablehook's argument) is a storage thread's result arriving at a closed loop."""
  frame = unraisable.exc_traceback.tb_frame if unraisable.exc_traceback is not None else None
  return (type(unraisable.exc_value) is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'
          and unraisable.object is None and frame is not None and frame.f_back is None
          and frame.f_code.co_name == 'call_soon_threadsafe' and 'asyncio' in frame.f_code.co_filename)


_read_failed = False


def read_failed() -> None:
  """Called when a checkpoint read failed: from then on, the errors of the reads it abandoned are dropped."""
  global _read_failed
  _read_failed = True
  warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited", category=RuntimeWarning)


def is_abandoned_read(unraisable) -> bool:
  """Whether `unraisable` is the error of an orbax coroutine collected after a read had failed."""
  code = getattr(unraisable.object, 'cr_code', None)
  return _read_failed and code is not None and _ORBAX in code.co_filename


class _AbandonedReads(logging.Filter):
  """After a failed read, drops asyncio's '<Future, Task or _GatheringFuture> exception was never retrieved'
  records (flanx itself runs no asyncio: they are the abandoned reads'); passes the rest."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (_read_failed and record.getMessage().partition('\n')[0].endswith('exception was never retrieved'))


_READ_FILTER = _AbandonedReads()


def quiet() -> bool:
  """Installs the filters in sys.unraisablehook (every other unraisable error goes to the previous hook) and on
  asyncio's logger; False when they already were."""
  if hasattr(sys.unraisablehook, 'flanx_previous'):
    return False

  def hook(unraisable):
    if not (is_late_callback(unraisable) or is_abandoned_read(unraisable)):
      hook.flanx_previous(unraisable)

  hook.flanx_previous = sys.unraisablehook
  sys.unraisablehook = hook
  logging.getLogger('asyncio').addFilter(_READ_FILTER)
  return True


def unquiet() -> None:
  """Removes the filters (when the hook is the current one)."""
  if hasattr(sys.unraisablehook, 'flanx_previous'):
    sys.unraisablehook = sys.unraisablehook.flanx_previous
    logging.getLogger('asyncio').removeFilter(_READ_FILTER)
