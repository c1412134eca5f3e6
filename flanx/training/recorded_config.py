"""A config recorded in a checkpoint (meta `config_gin`, MODEL_DIR/config.gin) is data, never code.

Commands that describe a checkpoint by the config it was written with (`flanx.export`) read it through `apply`,
which keeps only what describes the model and its vocabulary: bindings of `train`, `T5Config`, the PEFT method
configs (`LoraConfig`, `PromptConfig`, `PrefixConfig`, `IA3Config`), the learning-rate schedules and optimizers
(for the model card), `get_vocabulary`, and macros,
whose values may refer to no other configurables. Everything else is left out: `import` lines (the configurables
above are registered by importing flanx's own modules here), `include`s, dynamic registration, and any binding
of how the command itself behaves (`export_checkpoint.overwrite`, output paths, verification). Command-line
flags and bindings are parsed after it, so they always win. A task module the recorded config names is imported
only when it belongs to the packages flanx ships (`tasks.*`) or the command line imported it already
(`check_task_module`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

import gin
from gin import config_parser

# Configurables a recorded config may bind or refer to: the model, its vocabulary, how it was trained (card).
# The model: T5Config and the PEFT method configs (flanx.model.peft.METHODS; a test keeps the two in step).
MODEL_CONFIGS = ('T5Config', 'LoraConfig', 'PromptConfig', 'PrefixConfig', 'IA3Config')
DESCRIBING = ('train', *MODEL_CONFIGS, 'constant', 'linear_warmup', 'rsqrt_decay', 'warmup_cosine_decay', 'adafactor',
              'adamw_optimizer', 'adam_optimizer', 'lion_optimizer', 'get_vocabulary')
# What registers them (flanx's own code; imported here, never by the recorded text).
_REGISTERING = ('flanx.model.config', 'flanx.model.peft', 'flanx.training.schedules', 'flanx.training.adafactor',
                'flanx.training.optimizer', 'flanx.training.loop', 'tasks.vocab')
# What their values may refer to (never `train` or anything else that would run when a value is read).
REFERABLE = tuple(name for name in DESCRIBING if name != 'train')
SHIPPED_PACKAGES = ('flanx', 'tasks')

_named_task_modules: set[str] = set()  # task modules the last applied recorded config named


class RecordedConfigError(ValueError):
  """A recorded config that cannot be read (damaged), or names a task module that may not be imported from it."""


class _References(config_parser.ParserDelegate):
  """Collects the configurables and macros a statement's value refers to."""

  def __init__(self):
    self.names: list[str] = []

  def configurable_reference(self, scoped_selector, evaluate):
    self.names.append(scoped_selector)
    return scoped_selector

  def macro(self, name):
    return name


def _configurable_name(selector: str) -> str:
  return selector.rsplit('/', 1)[-1].rsplit('.', 1)[-1]


def _shipped(module: str) -> bool:
  return module.split('.')[0] in SHIPPED_PACKAGES


def filter_config(text: str, source: str) -> tuple[str, list[str]]:
  """(the recorded config reduced to what describes the model and vocabulary, lines naming what was left out
  that would have run code or changed the command)."""
  references = _References()
  statements = []  # (first line, kept, why dropped or '')
  try:
    for statement in config_parser.ConfigParser(text, references):
      refs, references.names = references.names, []
      line = statement.location.line_num
      where = f'line {line}'
      if isinstance(statement, config_parser.ImportStatement):
        module = statement.module
        quiet = _shipped(module) and not statement.is_from
        why = '' if quiet else f'{where}: import {module} (a recorded config imports nothing)'
        statements.append((line, False, why))
      elif isinstance(statement, config_parser.IncludeStatement):
        statements.append((line, False, f'{where}: include {statement.filename!r}'))
      elif isinstance(statement, config_parser.BindingStatement):
        scope, selector, arg_name = statement.scope, statement.selector, statement.arg_name
        key = f'{scope + "/" if scope else ""}{selector}{"." + arg_name if arg_name else ""}'
        bad_refs = [r for r in refs if _configurable_name(r) not in REFERABLE]
        if bad_refs:
          statements.append((line, False, f'{where}: {key} refers to {", ".join("@" + r for r in bad_refs)}'))
        elif not arg_name or _configurable_name(selector) in DESCRIBING:  # a macro, or a describing binding
          statements.append((line, True, ''))
        else:  # e.g. export_checkpoint.overwrite: how this command behaves is the command line's to say
          command = _configurable_name(selector) in ('export_checkpoint', 'evaluate', 'infer', 'checkpoint_checksums')
          statements.append((line, False, f'{where}: {key} (set it on the command line)' if command else ''))
      else:  # a block declaration (dynamic registration)
        statements.append((line, False, f'{where}: {type(statement).__name__}'))
  except (SyntaxError, ValueError) as e:
    raise RecordedConfigError(f'the config recorded in {source} cannot be read ({e}): the checkpoint is damaged; '
                              'pass the model config with --gin_file=models/….gin (and --vocab)') from None
  lines = text.splitlines(keepends=True)
  starts = [line for line, _, _ in statements] + [len(lines) + 1]
  kept = ''.join(''.join(lines[start - 1:end - 1]) for (start, keep, _), end in zip(statements, starts[1:]) if keep)
  return kept, [why for _, keep, why in statements if not keep and why]


def apply(text: str, source: str, log: Callable[[str], None] = print) -> None:
  """Binds what the recorded config `text` (from `source`) says about the model and vocabulary; reports (one
  line) what was left out. Parse the command line's bindings afterwards: they win."""
  for module in _REGISTERING:
    importlib.import_module(module)
  kept, dropped = filter_config(text, source)
  if filter_config(kept, source)[0] != kept:  # defence in depth: what is kept must survive its own filter
    raise RecordedConfigError(f'the config recorded in {source} cannot be read safely; pass the model config '
                              'with --gin_file=models/….gin (and --vocab)')
  if dropped:
    log(f'Ignored in the config recorded in {source} (it describes the model; it runs no code and sets nothing '
        f'of this command): {"; ".join(dropped)}.')
  try:
    with gin.unlock_config():
      gin.parse_config(kept, skip_unknown=True)
  except (SyntaxError, ValueError) as e:
    raise RecordedConfigError(f'the config recorded in {source} cannot be applied ({e}); pass the model config '
                              'with --gin_file=models/….gin (and --vocab)') from None
  _named_task_modules.clear()
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  named = gin_config.run_value('mixture_or_task_module')
  _named_task_modules.update(m.strip() for m in str(named or '').split(',') if m.strip())


def reset() -> None:
  """Forgets the task modules of an earlier recorded config (a new command in the same process)."""
  _named_task_modules.clear()


def check_task_module(module: str | None) -> None:
  """An error if `module` (MIXTURE_OR_TASK_MODULE as resolved) would import code only a recorded config named:
  modules of the shipped packages, and those the command line imported, are fine."""
  for name in filter(None, (m.strip() for m in str(module or '').split(','))):
    if name in _named_task_modules and not _shipped(name) and name not in sys.modules:
      raise RecordedConfigError(
          f'the recorded config names the task module {name!r}, and a recorded config may not import code: if '
          f'you trust it, pass --gin.MIXTURE_OR_TASK_MODULE="{name}" (or give the vocabulary with --vocab)')
