"""TensorFlow's start-up notices (printed before absl logging starts, so no TF_CPP_MIN_LOG_LEVEL hides them) are
dropped from the first `import tensorflow` of a flanx process; every other stderr line of that import is kept."""

import os
import subprocess
import sys

import pytest

from flanx import _quiet_tf


def test_only_the_start_up_notices_are_dropped(capfd):
  with _quiet_tf._filtered_stderr():
    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n'
                b'I0000 00:00:1.2 123 port.cc:153] oneDNN custom operations are on. You may see ...\n'
                b'W0000 00:00:1.3 123 something.cc:1] a real warning\n'
                b'I0000 00:00:1.4 123 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not '
                b'be used.\n')
    print('python stderr too', file=sys.stderr)
  lines = capfd.readouterr().err.splitlines()  # (pytest captures Python's sys.stderr apart from descriptor 2)
  assert sorted(lines) == ['W0000 00:00:1.3 123 something.cc:1] a real warning', 'python stderr too']


@pytest.mark.slow  # imports TensorFlow in a fresh process
def test_importing_tensorflow_after_flanx_prints_no_start_up_notices():
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  # A library probing for TensorFlow first (transformers and others do) must not use the filter up.
  proc = subprocess.run([sys.executable, '-c', 'import flanx, importlib.util; importlib.util.find_spec("tensorflow"); '
                         'import seqio, tensorflow as tf; '
                         'assert type(tf.__spec__.loader).__name__ != "_Loader"; print("ok")'],
                        env=env, capture_output=True, text=True, timeout=300, check=True)
  assert proc.stdout == 'ok\n'
  for notice in ('oneDNN custom operations', 'Could not find cuda drivers', 'absl::InitializeLog'):
    assert notice not in proc.stderr
