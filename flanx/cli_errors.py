"""How a command line ends when something fails: one line on stderr, an exit code, the traceback kept.

Every `python -m flanx.*` entry point runs its `main` through `run(main)`. A failure prints one line,
`ERROR: <what, where (file:line or key), what to do>`, and exits
- 2 for a user error: bad settings or input (a malformed record, a misspelt gin key, a missing file, a damaged
  checkpoint, a folder that cannot be written, a vocabulary that cannot be read);
- 1 for anything else: a run that failed (non-finite loss, a failed save) or a bug in flanx.
The traceback is printed only with `--verbose` (taken off the command line here) or FLANX_VERBOSE=1. For exit 1,
when the command has a run folder that exists (train: MODEL_DIR, eval/infer: their output folder), the full
traceback is also appended to `<run folder>/errors.log`; a user error writes nothing (its line says what to fix,
and a start refused for bad settings leaves the run folder as it was).

Errors are classified by their classes' qualified names, so classifying imports nothing.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import sys
import traceback
from typing import Callable

VERBOSE_ENV = 'FLANX_VERBOSE'
VERBOSE_FLAG = '--verbose'
LOG_NAME = 'errors.log'
USER_ERROR, FAILURE = 2, 1
_MAX_MESSAGE = 1200  # longer messages keep their start and end (where the advice is)
_STORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")
_GIN_CALLS = re.compile(r"\n\s*In call to configurable '[^']*' \(<[^\n]*>\)")
# Bad settings or input: what the user fixes. Subclasses count too (ChecksumMismatchError is a
# CheckpointRestoreError).
USER_ERRORS = {
    'tasks.records.RecordError': '',  # the error's own `hint`
    'tasks.flan_layouts.LayoutError': '',
    'tasks.registrations.StaleRegistrationError': '',
    'flanx.gin_config.GinConfigError': '',
    'flanx.training.run_checks.RunConfigError': '',
    'flanx.training.run_lease.LeaseHeldError': '',
    'flanx.training.start_step.StartStepError': '',
    'flanx.training.checkpoints.ChecksumMismatchError': 'use another checkpoint of the run (a checkpoint_<step> '
                                                        'folder)',
    'flanx.training.checkpoints.CheckpointRestoreError': '',
    'flanx.training.aot.CompileCheckError': '',
    'flanx.interop.hf_format.HFConversionError': '',
    'flanx.interop.t5x_checkpoint.T5XCheckpointError': '',
    'flanx.interop.t5x_gin.T5xGinError': '',
}
# Runs that failed for a reason the message states (not a bug): exit 1, one line.
FAILURES = (
    'flanx.training.loop.NonFiniteLossError',
    'flanx.training.checkpoints.CheckpointWriteError',
    'flanx.interop.hf_verify.VerificationError',
)
# TensorFlow's file errors (tf.io.gfile on local paths and gs://) that a user fixes; FailedPrecondition only
# about a gs:// path (no network, no credentials).
_TF_USER_ERRORS = {'NotFoundError': 'check the path',
                   'PermissionDeniedError': 'choose a folder you can write to, or fix its permissions',
                   'AlreadyExistsError': 'remove it or choose another name',
                   'UnauthenticatedError': 'set up Google Cloud credentials (gcloud auth application-default login)'}
_GCS_UNREACHABLE = re.compile(r'resolve host|HTTP request|credentials|Could not connect', re.I)
# OS errors about a path the user chose.
_OS_HINTS = {
    errno.ENOENT: 'check the path',
    errno.EACCES: 'choose a folder you can write to, or fix its permissions',
    errno.EPERM: 'choose a folder you can write to, or fix its permissions',
    errno.EROFS: 'the file system is read-only: choose a writable folder',
    errno.ENAMETOOLONG: 'a file or folder name is too long (most file systems allow 255 bytes a name): '
                        'use a shorter one',
    errno.ENOSPC: 'the disk is full: free space or choose another folder',
    errno.EDQUOT: 'the disk quota is exceeded: free space or choose another folder',
    errno.EEXIST: 'remove it or choose another name',
    errno.ENOTDIR: 'a part of the path is a file, not a folder',
    errno.EISDIR: 'the path is a folder: name a file',
    errno.ENOTEMPTY: 'choose an empty or new folder',
}


def _names(cls: type) -> list[str]:
  return [f'{c.__module__}.{c.__qualname__}' for c in cls.__mro__]


def classify(error: BaseException) -> tuple[int, str]:
  """(exit code, one-line message) for an exception that ended a command."""
  for e in _chain(error):  # the error itself first, then what caused it
    names = _names(type(e))
    user = next((n for n in names if n in USER_ERRORS), None)
    if user is not None:
      return USER_ERROR, _join(_text(e), getattr(e, 'hint', '') or USER_ERRORS[user])
    if any(n in FAILURES for n in names):
      return FAILURE, _text(e)
    if isinstance(e, OSError) and e.errno in _OS_HINTS:
      return USER_ERROR, _os_message(e)
    os_error = _STORE_OS_ERROR.search(str(e))  # TensorStore (Orbax, the run lease): a ValueError with the errno
    if isinstance(e, ValueError) and os_error and int(os_error.group(1)) in _OS_HINTS:
      return USER_ERROR, _join(_text(e), _OS_HINTS[int(os_error.group(1))])
    if isinstance(e, (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)):
      return USER_ERROR, _text(e)
    tf_name = next((n.rsplit('.', 1)[1] for n in names if n.startswith('tensorflow.')), None)
    if tf_name in _TF_USER_ERRORS or (tf_name == 'FailedPreconditionError' and 'gs://' in str(e)):
      return USER_ERROR, _tf_message(e, _TF_USER_ERRORS.get(tf_name, ''))
  return FAILURE, (f'{type(error).__name__}: {_text(error)} (an internal error: please report it with the '
                   f'traceback, shown with {VERBOSE_FLAG} or {VERBOSE_ENV}=1)')


def _chain(error: BaseException) -> list[BaseException]:
  """The error, then the ones it was raised from (`raise … from`). TensorFlow's autograph re-raises an error from
  a traced function as a new one (often a StagingError) with the original only as its suppressed context: that
  counts too. (gin's re-raise is a subclass of the original class, so the error itself classifies.) A context
  that is only "during handling of …" does not: that is another failure."""
  seen, out = set(), []
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    out.append(error)
    error = error.__cause__ or (error.__context__ if hasattr(error, 'ag_error_metadata') else None)
  return out


def one_line(error: BaseException | str) -> str:
  """The message of `error` on one line, without gin's 'In call to configurable' lines."""
  return _text(error)


def _text(error: BaseException | str) -> str:
  """The message on one line (gin and TensorFlow messages span several), shortened when huge."""
  text = str(error)
  if 'in user code:' in text:  # raised inside a tf.data function: TensorFlow prepends the traced frames
    text = _raised_in_trace(text)
  text = _GIN_CALLS.sub('', text)  # gin adds the configurables the error passed through
  text = ' '.join(text.split()) or type(error).__name__
  return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE * 2 // 3] + ' … ' + text[-_MAX_MESSAGE // 3:]


def _raised_in_trace(message: str) -> str:
  """The original message of an error that TensorFlow re-raised with the traced frames ('in user code: File …')
  and gin's 'In call to configurable' lines around it."""
  lines = [line.strip() for line in message.splitlines()]
  last = max((i for i, line in enumerate(lines) if re.match(r'\w+(Error|Exception): ', line)), default=None)
  if last is not None:
    lines = lines[last:]
    lines[0] = lines[0].split(': ', 1)[1]
  return ' '.join(line for line in lines if line)


def _join(message: str, hint: str) -> str:
  return f'{message}: {hint}' if hint else message


def _os_message(error: OSError) -> str:
  where = error.filename if error.filename is not None else ''
  if error.filename2 is not None:
    where = f'{where} -> {error.filename2}'
  reason = error.strerror or _text(error)
  return _join(f'{where}: {reason}' if where else reason, _OS_HINTS[error.errno])


def _tf_message(error: BaseException, hint: str) -> str:
  """A TensorFlow file error's message and what to do (also when gs:// is out of reach)."""
  text = _text(getattr(error, 'message', None) or str(error))
  if 'gs://' in text and _GCS_UNREACHABLE.search(text):
    hint = ('gs:// cannot be read from here (no network or credentials); copy the file to a local path and pass '
            'that')
  return _join(text, hint)


def verbose(argv: list[str] | None = None) -> bool:
  """Whether tracebacks are wanted; takes `--verbose` off `argv` (sys.argv by default), so the command's own
  flag parsers never see it."""
  argv = sys.argv if argv is None else argv
  found = VERBOSE_FLAG in argv[1:]
  argv[1:] = [a for a in argv[1:] if a != VERBOSE_FLAG]
  return found or os.environ.get(VERBOSE_ENV, '').lower() not in ('', '0', 'false', 'no')


def write_log(run_dir: str | None, error: BaseException) -> str | None:
  """Appends the traceback to `<run_dir>/errors.log` when `run_dir` is an existing local folder; never through a
  symlink, never creating the folder. Returns the log's path, or None."""
  if not run_dir or '://' in run_dir or not os.path.isdir(run_dir) or os.path.islink(run_dir):
    return None
  path = os.path.join(run_dir, LOG_NAME)
  text = (f'--- {datetime.datetime.now().isoformat(timespec="seconds")} $ {" ".join(sys.argv)}\n' +
          ''.join(traceback.format_exception(error)))
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)
    with os.fdopen(fd, 'a') as f:
      f.write(text)
  except OSError:
    return None  # a read-only or full folder: the message still says what failed
  return path


def run(main: Callable[[], int | None], run_dir: Callable[[], str | None] | None = None) -> int:
  """Calls a command's `main()` and turns an exception into one line on stderr and an exit code (2: user
  error, 1: anything else). `run_dir()` names the command's run folder, for errors.log (None: no log)."""
  show = verbose()
  from flanx.training import storage_callbacks  # pylint: disable=g-import-not-at-top  (stdlib only)
  storage_callbacks.quiet()  # a failed checkpoint read or write: its error is the one line, not 10-100 tracebacks
  try:
    return main() or 0
  except KeyboardInterrupt:
    if show:
      traceback.print_exc()
    print('ERROR: interrupted', file=sys.stderr, flush=True)
    return 130
  except SystemExit as e:
    if isinstance(e.code, str):  # raise SystemExit('message'): a usage message
      print(f'ERROR: {e.code}', file=sys.stderr, flush=True)
      return USER_ERROR
    raise
  except Exception as e:  # pylint: disable=broad-except
    code, message = classify(e)
    log = None
    if code != USER_ERROR:  # a user error's line says all; a failed start leaves the run folder as it was
      try:
        log = write_log(run_dir() if run_dir else None, e)
      except Exception:  # pylint: disable=broad-except  (the run folder's name may itself be what failed)
        pass
    if show:
      traceback.print_exc()
    elif log:
      message += f' [traceback: {log}]'
    print(f'ERROR: {message}', file=sys.stderr, flush=True)
    return code
