"""t5x-style command lines: repeated --gin_file, --gin_search_paths and --gin.KEY=VALUE overrides."""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import difflib
import importlib
import io
import logging
import os
import pathlib
import re
import sys
import tokenize
from typing import Any, Callable, Sequence

import gin
import gin.config

# The shipped gin files: flanx/gin is a link to the repo's gin/ in a checkout and a copy in an installed wheel.
GIN_DIR = pathlib.Path(__file__).parent / 'gin'


class GinConfigError(ValueError):
  """A gin file or override that cannot be applied (typo, unknown key, missing file)."""


def parse_args(argv: Sequence[str], description: str, parents: Sequence[argparse.ArgumentParser] = ()
               ) -> tuple[argparse.Namespace, list[str], list[str]]:
  """Splits a command line into flags, gin files and gin bindings (from --gin.KEY=VALUE).

  `parents`: the command's own flags (parsers made with add_help=False), so that --help lists them too.
  """
  parser = argparse.ArgumentParser(description=description, parents=list(parents), allow_abbrev=False,
                                   epilog='--gin.KEY=VALUE  a gin binding (t5x style), e.g. --gin.BATCH_SIZE=64 or '
                                   "--gin.MODEL_DIR=\\\"gs://bucket/run\\\"; repeatable, applied after the gin files")
  parser.add_argument('--gin_file', action='append', default=[], help='gin file; repeat, later files win')
  parser.add_argument('--gin_bindings', action='append', default=[], help='a gin binding string; repeatable')
  parser.add_argument('--gin_search_paths', action='append', default=[],
                      help=f'comma-separated folders to resolve gin files and includes (default has {GIN_DIR})')
  parser.add_argument('--coordinator_address', default=None, help='multi-host (GPU clusters): host:port of process 0')
  parser.add_argument('--process_count', type=int, default=None, help='multi-host: number of processes')
  parser.add_argument('--process_index', type=int, default=None, help='multi-host: this process index')
  parser.add_argument('--initialization_timeout', type=int, default=300, help='multi-host: seconds to wait for peers')
  # flanx.cli_errors takes --verbose off the command line before parsing; listed here so --help shows it.
  parser.add_argument('--verbose', action='store_true', help='on an error, print the traceback (or FLANX_VERBOSE=1)')
  parser.add_argument('--compile_cache_dir', default=None, help='JAX persistent compilation cache shared by runs '
                      '(local or gs://; default: a folder under the output); same as --gin.compile_cache.directory')
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith('--gin.'):
      key, sep, value = arg[len('--gin.'):].partition('=')
      if not sep:
        raise GinConfigError(f'{arg}: expected --gin.KEY=VALUE')
      bindings.append(f'{key} = {value}')
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  if args.compile_cache_dir:
    import flanx.training.compile_cache  # noqa: F401  pylint: disable=g-import-not-at-top  (its gin configurable)
    bindings.append(f'compile_cache.directory = {args.compile_cache_dir!r}')
  return args, args.gin_file, args.gin_bindings + bindings


def search_paths(flag_values: Sequence[str]) -> list[pathlib.Path]:
  """Folders gin files are resolved against: the given ones, the working directory, then the repo's gin/."""
  paths = [pathlib.Path(p) for value in flag_values for p in value.split(',') if p]
  return paths + [pathlib.Path.cwd(), GIN_DIR, GIN_DIR.parent]


def resolve_gin_file(name: str, paths: Sequence[pathlib.Path]) -> str:
  """The first existing path for a gin file name (absolute, or relative to a search path); gs:// passes through."""
  if name.startswith('gs://') or os.path.isabs(name):
    return name
  for base in paths:
    candidate = base / name
    if candidate.is_file():
      return str(candidate)
  tried = ', '.join(str(p) for p in paths)
  raise GinConfigError(f'gin file {name!r} not found (searched: {tried})')


def _macro_names(value: Any, found: set[str]) -> None:
  if isinstance(value, gin.config.ConfigurableReference):
    selector = value.scoped_selector
    if selector.endswith('gin.macro'):
      found.add(selector.rsplit('/', 1)[0])
  elif isinstance(value, (list, tuple, set)):
    for v in value:
      _macro_names(v, found)
  elif isinstance(value, dict):
    for v in value.values():
      _macro_names(v, found)


# Macros flanx reads itself where no binding does (run_builder.bound_model_config: an export's PEFT macro).
READ_BY_FLANX = ('PEFT',)


def _check_macro_overrides(bindings: Sequence[str]) -> None:
  """gin silently creates a new macro on a misspelt --gin.MACRO=…; refuse macros nothing reads."""
  defined = {scope for (scope, selector) in gin.config._CONFIG if selector == 'gin.macro'}
  used: set[str] = set()
  for params in gin.config._CONFIG.values():
    for v in params.values():
      _macro_names(v, used)
  for binding in bindings:
    key = binding.split('=', 1)[0].strip()
    if '.' in key or '/' in key or key not in defined or key in used or key in READ_BY_FLANX:
      continue
    hint = difflib.get_close_matches(key, sorted(used), n=1)
    suggestion = f'; did you mean {hint[0]}?' if hint else ''
    raise GinConfigError(f'--gin.{key}: no gin file or binding uses the macro {key}{suggestion}')


class _DropSearchMisses(logging.Filter):
  """gin logs an ERROR for every search path an include is not found in; only a final miss matters."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Path not found')


@contextlib.contextmanager
def _quiet_search_misses():
  root = logging.getLogger()
  quiet = _DropSearchMisses()
  root.addFilter(quiet)
  try:
    yield
  finally:
    root.removeFilter(quiet)


def _tolerate_namespace_packages() -> None:
  """gin's python-path reader crashes when an include's first folder (e.g. `runs/`, `models/`) is also an
  importable namespace package, such as a `runs/` folder in the working directory; treat that as 'not found'."""
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if getattr(exists, '__name__', '') == 'system_path_file_exists':
      def safe_exists(path, _exists=exists):
        try:
          return _exists(path)
        except (TypeError, ValueError, ImportError):
          return False
      readers[i] = (reader, safe_exists)


_TASK_MODULE_LINE = re.compile(r'^\s*MIXTURE_OR_TASK_MODULE\s*=\s*([\'"])([\w.,\s]+)\1', re.M)


def import_named_modules(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Imports the modules a command line names, before gin reads it (as t5x users expect).

  MIXTURE_OR_TASK_MODULE (from a binding or a gin file) is imported, so its tasks and configurables exist; a
  module-qualified binding such as `tasks.dolly.dolly_path.path = …` imports `tasks.dolly` first.
  """
  names = []
  for path in gin_files:
    if '://' not in path and os.path.isfile(path):
      names += [m.group(2) for m in _TASK_MODULE_LINE.finditer(pathlib.Path(path).read_text())]
  for binding in bindings:
    key, _, value = binding.partition('=')
    key = key.strip().rsplit('/', 1)[-1]
    if key == 'MIXTURE_OR_TASK_MODULE':
      try:
        names.append(str(ast.literal_eval(value.strip())))
      except (ValueError, SyntaxError):
        pass  # gin reports the malformed value with its own message
      continue
    parts = key.split('.')
    for end in range(len(parts) - 2, 0, -1):  # the last two parts are configurable.parameter
      if _try_import('.'.join(parts[:end])):
        break
  for name in names:
    for module in filter(None, (n.strip() for n in name.split(','))):
      try:
        importlib.import_module(module)
      except ImportError as e:
        raise GinConfigError(f'MIXTURE_OR_TASK_MODULE: cannot import {module!r} ({e})') from None


def _try_import(name: str) -> bool:
  try:
    importlib.import_module(name)
  except ImportError:
    return False
  return True


def tasks_module(name: str):
  """flanx's own `tasks.<name>`, imported where the engine first needs it. Importing any of `tasks` registers the
  whole package's gin configurables, and by then train/eval/infer have usually locked the config (a run on the
  user's own task module has not imported `tasks` before), so the import runs with the config unlocked."""
  with gin.unlock_config():
    return importlib.import_module(f'tasks.{name}')


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str], search_path_flags: Sequence[str] = (),
              finalize: bool = True) -> None:
  """Parses gin files and bindings; unknown configurables, parameters or macros fail here, before any work.

  finalize=False leaves the config open: a task module imported later (export) may still add configurables.
  """
  _tolerate_namespace_packages()
  paths = search_paths(search_path_flags)
  for path in paths:
    gin.add_config_file_search_path(str(path))
  files = [resolve_gin_file(f, paths) for f in gin_files]
  import_named_modules(files, bindings)
  try:
    with _quiet_search_misses():
      gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except (ValueError, IOError, SyntaxError, tokenize.TokenError) as e:
    raise _parse_error(e, bindings) from None
  _check_macro_overrides(bindings)
  check_macro_values(files, bindings, paths)
  _reapply_task_registrations()
  if finalize:
    gin.finalize()


_UNPARSED = re.compile(r"Failed to parse token '([^']*)' \((?:(.+), )?line (\d+)\)")
_BARE_WORD = re.compile(r'^[^\s\'"@%(){}\[\],]+$')


def _parse_error(error: Exception, bindings: Sequence[str]) -> GinConfigError:
  """gin's "malformed node or string … <ast.Name object>" for an unquoted string, as the key and value it was,
  with the quoting that works; other parse errors as gin words them."""
  if isinstance(error, tokenize.TokenError):  # an unclosed bracket or string: find the binding that has it
    bad = next((b for b in bindings if not _tokenizes(b)), None)
    where = '--gin.' + '='.join(p.strip() for p in bad.partition('=')[::2]) if bad else 'a gin file'
    return GinConfigError(f'{where}: does not parse ({error.args[0]}): check its brackets and quotes')
  if isinstance(error, SyntaxError) and error.filename and _starts_with_bom(error.filename):
    return GinConfigError(f'{error.filename}: starts with a UTF-8 byte-order mark, which gin cannot read: save it '
                          'as UTF-8 without one')
  found = _UNPARSED.search(str(error))
  if not found or 'malformed node or string' not in str(error):
    return GinConfigError(_one_line(str(error)))
  token, file, line = found.group(1), found.group(2), int(found.group(3))
  if file and isinstance(error, SyntaxError) and error.filename:  # str(SyntaxError) shows the base name only
    file, line = error.filename, error.lineno or line
  if file:
    try:
      source = pathlib.Path(file).read_text(encoding='utf-8').splitlines()[line - 1]
    except (OSError, IndexError, UnicodeDecodeError):
      source = ''
    where = f'{file}, line {line}' + (f' ({source.strip()})' if source.strip() else '')
  else:  # gin reads the bindings as one text, one binding a line
    fits = lambda b: token in b.partition('=')[2]
    source = bindings[line - 1] if 0 < line <= len(bindings) and fits(bindings[line - 1]) else next(
        (b for b in bindings if fits(b)), '')
    where = '--gin.' + '='.join(p.strip() for p in source.partition('=')[::2]) if source else 'a --gin binding'
  key, _, value = (p.strip() for p in source.partition('='))
  if key and _BARE_WORD.match(value):
    fix = f"""write it as "{value}" (on a command line: --gin.{key}='"{value}"')"""
  else:
    fix = f"quote the string {token!r}"
  return GinConfigError(f'{where}: {token!r} is not a gin value: strings need quotes, {fix}; a reference is '
                        '@name() and a macro %NAME')


def _starts_with_bom(path: str) -> bool:
  try:
    with open(path, 'rb') as f:
      return f.read(3) == b'\xef\xbb\xbf'
  except OSError:
    return False


def _tokenizes(text: str) -> bool:
  try:
    list(tokenize.generate_tokens(io.StringIO(text).readline))
  except tokenize.TokenError:
    return False
  return True


_BINDING_LINE = re.compile(r'\n\s*In bindings string line \d+\n\s*(.*)')
_FILE_LINE = re.compile(r'\n\s*In file "([^"]*)", line (\d+)\n\s*(.*)')


def _one_line(message: str) -> str:
  """gin's "<problem>\\n  In bindings string line 1\\n    <binding>" (or "In file …, line N") on one line, naming the
  --gin flag or file and line first."""
  binding, in_file = _BINDING_LINE.search(message), _FILE_LINE.search(message)
  problem = ' '.join(message.splitlines()[0].split())
  if binding:
    key, _, value = (p.strip() for p in binding.group(1).partition('='))
    return f'--gin.{key}={value}: {problem}'
  if in_file:
    return f'{in_file.group(1)}, line {in_file.group(2)} ({in_file.group(3).strip()}): {problem}'
  return ' '.join(message.split())


def _reapply_task_registrations() -> None:
  """Re-runs the task registrations `import tasks` made whose gin settings were just parsed (their
  `on_error`, dataset lists, caps...), so those settings take effect (tasks/registrations.py)."""
  registrations = sys.modules.get('tasks.registrations')
  if registrations is not None:
    registrations.reapply()


def _macro_literal(name: str) -> Any:
  """A macro's value, following `A = %B` chains; None-like _NOT_LITERAL when unset or not a literal."""
  seen = set()
  while name not in seen:
    seen.add(name)
    params = gin.config._CONFIG.get((name, 'gin.macro'))  # pylint: disable=protected-access
    if not params or 'value' not in params:
      return _NOT_LITERAL
    value = params['value']
    if not isinstance(value, gin.config.ConfigurableReference):
      return value
    if not value.scoped_selector.endswith('gin.macro') or value.scoped_selector.startswith('gin.'):
      return _NOT_LITERAL  # @configurable() or %gin.REQUIRED: nothing to check here
    name = value.scoped_selector.rsplit('/', 1)[0]
  return _NOT_LITERAL


_NOT_LITERAL = object()
_INCLUDE = re.compile(r'''^\s*include\s+['"](.+)['"]''')


def _where_macro_is_set(name: str, gin_files: Sequence[str], bindings: Sequence[str],
                        paths: Sequence[pathlib.Path]) -> str:
  """'--gin.NAME' or 'file, line N' of the assignment that wins (the last one in gin's reading order)."""
  if any(b.split('=', 1)[0].strip() == name for b in bindings):
    return f'--gin.{name}'
  assignment = re.compile(rf'^\s*{re.escape(name)}\s*=')
  found, visited = [], set()

  def scan(path: str) -> None:
    if path in visited or path.startswith('gs://') or not os.path.isfile(path):
      return
    visited.add(path)
    with open(path, encoding='utf-8', errors='replace') as f:
      for number, line in enumerate(f, 1):
        include = _INCLUDE.match(line)
        if include:
          try:
            scan(resolve_gin_file(include.group(1), paths))
          except GinConfigError:
            pass
        elif assignment.match(line):
          found.append(f'{path}, line {number}')

  for path in gin_files:
    scan(path)
  return found[-1] if found else 'gin config'


def check_macro_values(gin_files: Sequence[str], bindings: Sequence[str], paths: Sequence[pathlib.Path]) -> None:
  """t5x's standard macros must have the right type and range; a bad one fails here, before any work."""
  from flanx.training import run_checks  # pylint: disable=g-import-not-at-top  (no heavy imports)
  for name, (ok, expected) in run_checks.MACRO_RULES.items():
    value = _macro_literal(name)
    if value is not _NOT_LITERAL and not ok(value):
      where = _where_macro_is_set(name, gin_files, bindings, paths)
      raise GinConfigError(f'{name} = {value!r} ({where}): expected {expected}')


def binding_source(configurable: str, param: str) -> str:
  """'MACRO (configurable.param)' when gin bound the parameter to a macro, else 'configurable.param'."""
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    if scope or not (selector == configurable or selector.endswith('.' + configurable)):
      continue
    value = params.get(param)
    if isinstance(value, gin.config.ConfigurableReference) and value.scoped_selector.endswith('gin.macro'):
      return f'{value.scoped_selector.rsplit("/", 1)[0]} ({configurable}.{param})'
  return f'{configurable}.{param}'


def write_config(model_dir: str, filename: str = 'config.gin') -> str:
  """Writes the effective gin config (operative and full) next to the run's checkpoints."""
  import tensorflow as tf  # gfile handles gs:// model dirs
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, filename)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(gin.config_str())
  return path


def run(entry: Callable[[], Any], description: str, argv: Sequence[str] | None = None,
        parents: Sequence[argparse.ArgumentParser] = (), prepare: Callable[[Sequence[str]], Any] | None = None) -> Any:
  """Parses the command line, starts the multi-host runtime, parses gin, then calls `entry()`.

  `prepare(bindings)` runs after parsing, before the config is locked (e.g. to fill settings from a run's record).
  """
  from flanx.training import runtime
  args, files, bindings = parse_args(sys.argv[1:] if argv is None else argv, description, parents)
  runtime.initialize_distributed(args.coordinator_address, args.process_count, args.process_index,
                                 args.initialization_timeout)
  parse_gin(files, bindings, args.gin_search_paths, finalize=prepare is None)
  if prepare is not None:
    prepare(bindings)
    gin.finalize()
  return entry()


# ----------------------------------------------------------------------------------------------------------------
# Reading a parsed config back (export and import describe the run that wrote a checkpoint).

# Configurables whose bindings describe a run, in the order they are consulted.
RUN_CONFIGURABLES = ('train', 'evaluate', 'infer')


def parse_bool(text: str) -> bool:
  """true/false, yes/no, 1/0, on/off (flag values)."""
  if text.lower() in ('1', 'true', 'yes', 'on'):
    return True
  if text.lower() in ('0', 'false', 'no', 'off'):
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def gin_value(selector: str, default: Any = None) -> Any:
  """The value gin binds to `selector` (references and macros evaluated), or `default` when unbound."""
  try:
    value = gin.query_parameter(selector)
  except (ValueError, KeyError):
    return default
  return copy.deepcopy(value)  # gin evaluates @refs() and %macros on deepcopy


def macro_value(name: str, default: Any = None) -> Any:
  """The literal value of the macro `name` (following `A = %B`), or `default` when it is unset or not a literal."""
  value = _macro_literal(name)
  return default if value is _NOT_LITERAL else value


def run_value(name: str, default: Any = None) -> Any:
  """A run setting (e.g. 'model_config') as bound to train, evaluate or infer, whichever binds it first."""
  for configurable in RUN_CONFIGURABLES:
    value = gin_value(f'{configurable}.{name}')
    if value is not None:
      return value
  return default


def configurable_bindings(name: str) -> dict[str, Any]:
  """gin's bindings of one configurable ({} when it has none)."""
  try:
    return gin.get_bindings(name)
  except (ValueError, KeyError):
    return {}


def describe_binding(selector: str, fallback: str) -> str:
  """'@constant() with learning_rate=0.001'-style text for a bound configurable reference."""
  try:
    ref = gin.query_parameter(selector)
  except (ValueError, KeyError):
    ref = None
  name = ref.selector if isinstance(ref, gin.config.ConfigurableReference) else fallback
  args = ', '.join(f'{k}={v!r}' for k, v in sorted(configurable_bindings(name).items()))
  label = str(ref) if ref is not None else f'{fallback} (flanx default)'
  return f'{label} with {args}' if args else label
