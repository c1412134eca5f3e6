"""Drops TensorFlow's start-up chatter from stderr while `import tensorflow` runs, and nothing else.

TensorFlow 2.21 logs "oneDNN custom operations are on …" and "Could not find cuda drivers …" from each of its
two copies of the logging library while it loads, before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL
(which flanx sets to 1 unless you chose a level) cannot hide them. The first import of tensorflow in a flanx
process (seqio's, or flanx's own) runs with stderr captured; every captured line except those start-up notices
is written back to stderr when the import ends, so warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

_NOISE = re.compile(rb'(oneDNN custom operations are on|Could not find cuda drivers on your machine|'
                    rb'All log messages before absl::InitializeLog\(\) is called are written to STDERR)')


@contextlib.contextmanager
def _filtered_stderr():
  """Captures file descriptor 2 (C++ and Python writes alike) and replays it without the start-up notices."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no real stderr (embedded, closed): nothing to filter
    yield
    return
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = b''.join(line for line in capture.read().splitlines(keepends=True) if not _NOISE.search(line))
      if kept:
        os.write(2, kept)


class _Loader(importlib.abc.Loader):
  """The tensorflow package's own loader, executed with stderr filtered."""

  def __init__(self, loader, finder):
    self._loader, self._finder = loader, finder

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with contextlib.suppress(ValueError):  # the import happens now: the finder's work is done
      sys.meta_path.remove(self._finder)
    module.__loader__ = module.__spec__.loader = self._loader  # later users see TensorFlow's own loader
    with _filtered_stderr():
      self._loader.exec_module(module)

  def __getattr__(self, name):
    return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
  """Wraps the loader of the first `import tensorflow`; leaves sys.meta_path when that import runs (not on a
  mere look-up: libraries probe `importlib.util.find_spec('tensorflow')` long before anything imports it)."""

  _looking = False  # inside our own look-up: let the other finders answer

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow' or self._looking:
      return None
    self._looking = True
    try:
      spec = importlib.util.find_spec(name)
    finally:
      self._looking = False
    if spec is not None and spec.loader is not None:
      spec.loader = _Loader(spec.loader, self)
    return spec


def install() -> None:
  """Filters the first `import tensorflow` of this process (no-op once TensorFlow is imported)."""
  if 'tensorflow' not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
