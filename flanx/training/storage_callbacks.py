"""Quiets the late callbacks of storage operations whose caller already failed ('Event loop is closed').

TensorStore (under orbax) hands each finished read or write to the asyncio loop that awaits it, with
loop.call_soon_threadsafe called from its own C++ thread (so no Python frame calls it). When one operation of a
save or restore fails (disk full, a damaged file), orbax's loop stops and closes while the others are still
running; each of them then fails with 'Event loop is closed' and Python prints its traceback through
sys.unraisablehook, 10 to 100 of them before or after the command's one error line. Nothing is lost there that the
failed operation's own error does not report, so those (and only those) are dropped.
"""

from __future__ import annotations

import sys


def is_late_callback(unraisable) -> bool:
  """Whether `unraisable` (sys.unraisablehook's argument) is a storage thread's result arriving at a closed loop."""
  frame = unraisable.exc_traceback.tb_frame if unraisable.exc_traceback is not None else None
  return (type(unraisable.exc_value) is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'
          and unraisable.object is None and frame is not None and frame.f_back is None
          and frame.f_code.co_name == 'call_soon_threadsafe' and 'asyncio' in frame.f_code.co_filename)


def quiet() -> bool:
  """Installs the filter in sys.unraisablehook (every other unraisable error goes to the previous hook); False when
  it already was."""
  if hasattr(sys.unraisablehook, 'flanx_previous'):
    return False

  def hook(unraisable):
    if not is_late_callback(unraisable):
      hook.flanx_previous(unraisable)

  hook.flanx_previous = sys.unraisablehook
  sys.unraisablehook = hook
  return True


def unquiet() -> None:
  """Removes the filter (when it is the current hook)."""
  if hasattr(sys.unraisablehook, 'flanx_previous'):
    sys.unraisablehook = sys.unraisablehook.flanx_previous
