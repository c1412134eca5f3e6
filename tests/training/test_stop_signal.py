"""The first Ctrl-C asks the run to stop cleanly like SIGTERM; a second one aborts; afterwards Ctrl-C is given back
to whoever handled it before (a notebook, Python's default). Real signals sent to this process."""

import os
import signal
import sys
import time

import pytest

from flanx.training import stop_signal


def _deliver(signum):
  os.kill(os.getpid(), signum)
  time.sleep(0.01)  # Python runs the handler at the next bytecode boundary of the main thread


@pytest.fixture
def handlers():
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  stop_signal.clear()
  yield
  signal.signal(signal.SIGINT, before[0])
  signal.signal(signal.SIGTERM, before[1])
  stop_signal.clear()


def test_first_ctrl_c_requests_a_clean_stop_and_the_second_aborts(handlers, capsys):
  previous = signal.getsignal(signal.SIGINT)
  assert stop_signal.install()
  _deliver(signal.SIGINT)
  assert stop_signal.requested() and stop_signal.reason() == 'Ctrl-C (SIGINT)'
  assert 'press Ctrl-C again to abort' in capsys.readouterr().err
  with pytest.raises(KeyboardInterrupt, match='second Ctrl-C'):
    _deliver(signal.SIGINT)
  stop_signal.install()
  stop_signal.release_sigint()
  assert signal.getsignal(signal.SIGINT) is previous  # given back
  assert not stop_signal.requested()  # the next run in this process starts normally


def test_sigterm_stays_requested_and_named(handlers):
  stop_signal.install()
  _deliver(signal.SIGTERM)
  assert stop_signal.requested() and stop_signal.reason() == 'SIGTERM'
  stop_signal.release_sigint()
  assert stop_signal.requested()  # SIGTERM means the machine goes away: it is not forgotten


def test_a_swallowed_second_ctrl_c_still_aborts_at_the_next_check(handlers):
  from flanx.training import runtime  # pylint: disable=g-import-not-at-top
  stop_signal.install()
  _deliver(signal.SIGINT)
  try:
    _deliver(signal.SIGINT)
  except KeyboardInterrupt:
    pass  # as if a gc callback had swallowed it
  with pytest.raises(stop_signal.SecondInterrupt):
    runtime.PreemptionFlag().is_set()


def test_a_second_ctrl_c_swallowed_in_a_gc_callback_prints_no_traceback(handlers, capsys):
  import types  # pylint: disable=g-import-not-at-top
  previous, seen = sys.unraisablehook, []
  try:
    sys.unraisablehook = lambda unraisable: seen.append(unraisable.exc_value)  # whoever handled them before
    stop_signal.install()
    swallowed = types.SimpleNamespace(exc_type=stop_signal.SecondInterrupt, exc_value=stop_signal.SecondInterrupt('x'),
                                      exc_traceback=None, err_msg='Exception ignored in', object=None)
    sys.unraisablehook(swallowed)
    assert capsys.readouterr().err == ''
    other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError('kept'), exc_traceback=None,
                                  err_msg='Exception ignored in', object=None)
    sys.unraisablehook(other)
    assert seen == [other.exc_value]  # anything else still reaches the previous hook
  finally:
    sys.unraisablehook = previous
