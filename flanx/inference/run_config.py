"""Eval and infer on a flanx run read what the command line leaves unset from the run's recorded config.

A checkpoint records the gin config it was trained with (its meta's `config_gin`, else MODEL_DIR/config.gin).
When CHECKPOINT_PATH is a flanx run or checkpoint folder, `fill_unset()` takes from that text, after the command's
own gin files and flags were parsed and only where they left a value unset:
- the model: `T5Config.*` when no T5Config parameter is bound;
- the PEFT method: the run's PEFT (`train.peft`, the macro) and its settings (`LoraConfig.*`, `PromptConfig.*`,
  `PrefixConfig.*`, `IA3Config.*`) when the command sets neither PEFT nor any of those settings;
- the vocabulary: `get_vocabulary.*` when none is bound;
- the task: the run's MIXTURE_OR_TASK_NAME when the command's is unset (gin.REQUIRED or None), with its
  MIXTURE_OR_TASK_MODULE and TASK_FEATURE_LENGTHS (unless given), and the data paths the task module's
  configurables were bound to.
The recorded text is parsed here, never handed to gin whole: its `import` lines are not executed, a binding is
taken only if its value is a Python literal (macros resolved to literals) or a PEFT method's `@LoraConfig()` etc.,
and a recorded task module is imported only if it is part of the shipped `tasks` package (any other module must
be named on the command line). Nothing in it sets how the command behaves (output folders, decoding, steps).
"""

from __future__ import annotations

import ast
import re
from typing import Any, Callable, Sequence

import gin

from flanx import gin_config
from flanx.training import recorded_config

# The model configs a record may describe: the same list export reads (recorded_config), so every PEFT method counts.
MODEL_CONFIGURABLES = recorded_config.MODEL_CONFIGS
METHOD_CONFIGURABLES = tuple(name for name in MODEL_CONFIGURABLES if name != 'T5Config')
_REFERENCES = tuple(f'@{name}()' for name in METHOD_CONFIGURABLES)
_STATEMENT = re.compile(r'^([A-Za-z_][\w./]*)\s*=\s*(.*)$')


def statements(text: str) -> list[tuple[str, str]]:
  """(selector, value text) of each binding and macro in a gin config text (imports, includes, comments skipped)."""
  out: list[list[str]] = []
  for line in text.splitlines():
    stripped = line.strip()
    if not stripped or stripped.startswith('#'):
      continue
    match = _STATEMENT.match(line) if not line[0].isspace() else None
    if match:
      out.append([match.group(1), match.group(2)])
    elif out and (line[0].isspace() or stripped[0] in ')]}'):
      out[-1][1] += ' ' + stripped  # a value gin wrapped over several lines
    elif not re.match(r'^(import|from|include)\b', stripped):
      out.append(['', ''])  # something else: ends the previous statement
  return [(k, v) for k, v in out if k]


def _literal(value: str, macros: dict[str, str], depth: int = 0) -> str | None:
  """`value` as a literal's text (macros followed) or an allowed reference; None otherwise."""
  value = value.strip()
  if value in _REFERENCES:
    return value
  if value.startswith('%') and depth < 10:
    name = value[1:]
    return _literal(macros[name], macros, depth + 1) if name in macros else None
  try:
    ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return None
  return value


def recorded_config(checkpoint_path: str) -> str | None:
  """The config text a flanx checkpoint (run folder: its newest) was written with; None if not a flanx one."""
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  if not checkpoint_path or not isinstance(checkpoint_path, str) or not checkpoints.is_flanx_checkpoint(checkpoint_path):
    return None
  recorded = checkpoints.recorded_config(checkpoint_path)
  return recorded[0] if recorded else None


def _unset(value: Any) -> bool:
  return value is None or value is gin.REQUIRED


def _macro_of(selector: str) -> str:
  """The macro a parameter is bound to (`evaluate.task_feature_lengths = %TASK_FEATURE_LENGTHS`), else itself:
  binding the macro keeps gin's REQUIRED check and every other user of it consistent."""
  try:
    raw = gin.query_parameter(selector)
  except (ValueError, KeyError):
    return selector
  if isinstance(raw, gin.config.ConfigurableReference) and raw.scoped_selector.endswith('gin.macro'):
    return raw.scoped_selector.rsplit('/', 1)[0]
  return selector


def _task_configurable(selector: str) -> bool:
  """Whether `selector`'s configurable is defined in the shipped `tasks` package (e.g. a data path)."""
  name = selector.rsplit('/', 1)[-1].rsplit('.', 1)[0]
  try:
    match = gin.config._REGISTRY.get_match(name)  # pylint: disable=protected-access
  except (ValueError, KeyError):
    return False
  module = getattr(getattr(match, 'wrapped', None), '__module__', '') or ''
  return module == 'tasks' or module.startswith('tasks.')


def _check_task_module(module: str | None, source: str) -> None:
  for name in filter(None, (n.strip() for n in (module or '').split(','))):
    if not (name == 'tasks' or name.startswith('tasks.')):
      raise gin_config.GinConfigError(
          f'{source} names MIXTURE_OR_TASK_MODULE={module!r}; a recorded config never imports modules outside '
          f"the shipped `tasks` package: pass --gin.MIXTURE_OR_TASK_MODULE=\\\"{module}\\\" if you trust it")


def fill_unset(configurable: str, command_bindings: Sequence[str] = (), log: Callable[[str], None] = print
               ) -> list[str]:
  """Binds the recorded settings the parsed command (its --gin. flags: `command_bindings`) left unset (see the
  module doc); returns the bindings made."""
  given = {b.split('=', 1)[0].strip().rsplit('/', 1)[-1] for b in command_bindings}
  checkpoint_path = gin_config.gin_value(f'{configurable}.checkpoint_path')
  text = recorded_config(checkpoint_path)
  if not text:
    return []
  found = statements(text)
  macros = {k: v for k, v in found if '.' not in k and '/' not in k}
  train = {k.split('.', 1)[1]: v for k, v in found if k.startswith('train.')}
  chosen: list[str] = []

  def take(selector: str, value: str | None) -> None:
    literal = None if value is None else _literal(value, macros)
    if literal is not None:
      chosen.append(f'{_macro_of(selector)} = {literal}')

  if not gin_config.configurable_bindings('T5Config'):  # the base model
    for key, value in found:
      if key.split('.', 1)[0] == 'T5Config':
        take(key, value)
  peft_given = {'PEFT', f'{configurable}.peft'} & given or not _unset(gin_config.gin_value(f'{configurable}.peft'))
  if not peft_given and not any(gin_config.configurable_bindings(c) for c in METHOD_CONFIGURABLES):
    for key, value in found:  # the PEFT method the run trained, with its settings
      if key.split('.', 1)[0] in METHOD_CONFIGURABLES:
        take(key, value)
    if 'peft' in train:
      take(f'{configurable}.peft', train['peft'])
  vocabulary = [(k, v) for k, v in found if k.startswith('get_vocabulary.')]
  if vocabulary:
    gin_config.tasks_module('vocab')  # registers get_vocabulary
    if not gin_config.configurable_bindings('get_vocabulary'):
      for key, value in vocabulary:
        take(key, value)
  if _unset(gin_config.gin_value(f'{configurable}.mixture_or_task_name')) and 'mixture_or_task_name' in train:
    take(f'{configurable}.mixture_or_task_name', train['mixture_or_task_name'])
    module = _literal(train.get('mixture_or_task_module', 'None'), macros)
    if module is not None and _unset(gin_config.gin_value(f'{configurable}.mixture_or_task_module')):
      _check_task_module(ast.literal_eval(module), f'the recorded config of {checkpoint_path}')
      take(f'{configurable}.mixture_or_task_module', module)
      from flanx.training import data  # pylint: disable=g-import-not-at-top
      data.import_task_modules(ast.literal_eval(module))
    if 'task_feature_lengths' in train and not {'TASK_FEATURE_LENGTHS', f'{configurable}.task_feature_lengths'} & given:
      take(f'{configurable}.task_feature_lengths', train['task_feature_lengths'])
  for key, value in found:  # data paths and other settings of the task modules' configurables
    if '.' in key and key.split('.', 1)[0] not in ('train', *MODEL_CONFIGURABLES, 'get_vocabulary') and \
        _task_configurable(key) and gin_config.gin_value(key, _MISSING) is _MISSING:
      take(key, value)
  if chosen:
    gin.parse_config(chosen)
    log(f'From the recorded config of {checkpoint_path}: ' + '; '.join(chosen))
  return chosen


_MISSING = object()
