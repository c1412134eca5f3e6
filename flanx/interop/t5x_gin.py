"""Reads a t5x gin config without t5x and writes the flanx gin for the same run (`python -m flanx.from_t5x_gin`).

Input: a t5x run's `MODEL_DIR/config.gin` (gin.config_str(): flat, every binding spelled out) or t5x-style
gin files with `include`s (t5x's example model gins, configs/runs/finetune.gin, a Flan-T5 fine-tuning gin).
gin's own parser reads the syntax; nothing is imported or bound, so t5x, seqio tasks or flaxformer need not be
installed. Includes are looked up next to the including file, in its parent folders (a t5x checkout) and in
the given search folders; one that cannot be found is reported in the output.

A train config becomes a gin over flanx's runs/finetune.gin; an eval or infer config (t5x's evaluate / infer
scripts) one over runs/eval.gin / runs/infer.gin with the model, task, split, lengths, batch, checkpoint and
decoder. What carries over for training (the t5x name -> the flanx binding): the model (t5x's
`network.T5Config` -> `T5Config`), task, feature lengths, batch size, packing, steps, learning-rate schedule,
Adafactor settings, dropout, z-loss, label smoothing, loss normalizing factor, checkpoint period and retention,
initial checkpoint, microbatches, partitioning and decoding settings. Where the t5x gin leaves a setting
unbound, t5x's default is written (t5x's defaults are not always flanx's: e.g. z_loss 0 and no packing). t5x's
optax optimizers are converted by t5x_gin_optax.py. Every other binding, and every value flanx cannot express, is
listed at the end as a comment with its file and line, unless it would change what trains (another model family,
optimizer or schedule, nothing to train): then T5xGinError names its file and line.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import pathlib
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence

from gin import config_parser


class T5xGinError(ValueError):
  """A t5x gin file that cannot be read or converted (names the file, line and binding)."""


class Ref(NamedTuple):
  """A configurable reference: `@name()` (call=True) or `@name`."""
  name: str
  call: bool

  def __repr__(self) -> str:
    return f"@{self.name}{'()' if self.call else ''}"


class Macro(NamedTuple):
  """A macro reference: `%NAME`."""
  name: str

  def __repr__(self) -> str:
    return f'%{self.name}'


class Binding(NamedTuple):
  scope: str     # 'train' in train/utils.DatasetConfig.batch_size; '' when unscoped
  selector: str  # 'utils.DatasetConfig'; a macro's name for `NAME = value`
  arg: str       # 'batch_size'; '' for a macro
  value: Any
  where: str     # 'file:line'

  @property
  def key(self) -> str:
    scope = f'{self.scope}/' if self.scope else ''
    return f'{scope}{self.selector}.{self.arg}' if self.arg else f'{scope}{self.selector}'


REQUIRED = Macro('gin.REQUIRED')
_MISSING = object()


class _Delegate(config_parser.ParserDelegate):
  """Turns references into plain values instead of resolving them against registered configurables."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Ref(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return Macro(macro_name)


def _read_text(path: str) -> str:
  if path.startswith('gs://'):
    import tensorflow as tf  # only for gs:// paths
    with tf.io.gfile.GFile(path) as f:
      return f.read()
  return pathlib.Path(path).read_text()


class T5xGin:
  """The bindings of a t5x gin file and its includes, in gin's override order (later wins)."""

  def __init__(self, paths: str | Sequence[str], search_paths: Sequence[str] = ()):
    paths = [paths] if isinstance(paths, str) else list(paths)
    self.path = ', '.join(paths)
    self.bindings: dict[tuple[str, str, str], Binding] = {}
    self.missing_includes: list[str] = []
    self.undefined_macros: list[str] = []
    self.used: set[tuple[str, str, str]] = set()
    self._search_paths = [str(p) for p in search_paths]
    for path in paths:  # several files are read in order, as t5x reads repeated --gin_file flags
      self._read(path, [])

  def _resolve_include(self, name: str, including: str) -> Optional[str]:
    if name.startswith('gs://') or os.path.isabs(name):
      return name if name.startswith('gs://') or os.path.exists(name) else None
    here = pathlib.Path(including).resolve().parent if not including.startswith('gs://') else None
    bases = ([here] + list(here.parents) if here else []) + [pathlib.Path(p) for p in self._search_paths]
    for base in bases:
      if (base / name).is_file():
        return str(base / name)
    return None

  def _read(self, path: str, stack: list[str]) -> None:
    if path in stack:
      raise T5xGinError(f'{stack[-1]}: include cycle through {path}')
    try:
      text = _read_text(path)
    except OSError as e:
      raise T5xGinError(f'cannot read t5x gin file {path}: {e}') from None
    try:
      statements = list(config_parser.ConfigParser(text, _Delegate()))
    except SyntaxError as e:
      raise T5xGinError(f'{path}:{e.lineno}: gin syntax error: {e.msg}') from None
    for statement in statements:
      where = f'{path}:{statement.location.line_num}'
      if isinstance(statement, config_parser.IncludeStatement):
        found = self._resolve_include(statement.filename, path)
        if found is None:
          self.missing_includes.append(f"{where}: include '{statement.filename}'")
        else:
          self._read(found, stack + [path])
      elif isinstance(statement, config_parser.BindingStatement):
        key = (statement.scope, statement.selector, statement.arg_name)
        self.bindings.pop(key, None)  # keep the latest binding last
        self.bindings[key] = Binding(*key, statement.value, where)

  def _matches(self, selector: str, name: str) -> bool:
    """t5x names may carry any module prefix (`utils.DatasetConfig`, `t5x.utils.DatasetConfig`)."""
    return selector == name or selector.endswith('.' + name) or name.endswith('.' + selector)

  def find(self, name: str, arg: str, scope: str = '') -> Optional[Binding]:
    """The binding of `name.arg` as seen inside `scope` (a scoped binding beats an unscoped one)."""
    for want_scope in ([scope, ''] if scope else ['']):
      for key, binding in reversed(self.bindings.items()):
        if key[0] == want_scope and key[2] == arg and self._matches(key[1], name):
          self.used.add(key)
          return binding
    return None

  def macro(self, name: str) -> Optional[Binding]:
    """The definition of macro `name`."""
    key = ('', name, '')
    if key in self.bindings:
      self.used.add(key)
      return self.bindings[key]
    return None

  def resolve(self, value: Any, where: str = '') -> Any:
    """The value with macros replaced by their definitions (REQUIRED stays)."""
    seen = set()
    while isinstance(value, Macro) and value != REQUIRED:
      if value.name in seen:
        raise T5xGinError(f'{where}: macro cycle through %{value.name}')
      seen.add(value.name)
      definition = self.macro(value.name)
      if definition is None:
        self.undefined_macros.append(f'{where}: %{value.name}')
        return value  # unresolvable: `get` reports it as unbound
      value, where = definition.value, definition.where
    if isinstance(value, (list, tuple)) and not isinstance(value, (Ref, Macro)):
      return type(value)(self.resolve(v, where) for v in value)
    if isinstance(value, dict):
      return {k: self.resolve(v, where) for k, v in value.items()}
    return value

  def get(self, name: str, arg: str, scope: str = '', default: Any = _MISSING) -> tuple[Any, str]:
    """(resolved value, 'file:line') of a binding, or (default, '') when unbound."""
    binding = self.find(name, arg, scope)
    if binding is None:
      return default, ''
    value = self.resolve(binding.value, binding.where)
    if isinstance(value, Macro) and value != REQUIRED:
      return default, ''
    return value, binding.where

  def origin(self, binding: Binding) -> Binding:
    """The binding that finally defines `binding`'s value (following `%MACRO`s), for messages naming it."""
    seen = set()
    while isinstance(binding.value, Macro) and binding.value != REQUIRED and binding.value.name not in seen:
      seen.add(binding.value.name)
      definition = self.macro(binding.value.name)
      if definition is None:
        break
      binding = definition
    return binding

  def bindings_of(self, name: str, scope: str = '', mark: bool = True) -> list[Binding]:
    """Every `name.arg` binding in `scope` (marked as read unless `mark` is False), in file order."""
    found = [b for key, b in self.bindings.items() if key[0] == scope and key[2] and self._matches(key[1], name)]
    if mark:
      self.used.update((b.scope, b.selector, b.arg) for b in found)
    return found

  def unused(self) -> list[Binding]:
    """Bindings no conversion rule read, in file order."""
    return [b for key, b in self.bindings.items() if key not in self.used]


# ------------------------------------------------------------------------------------------------------------
# Conversion.

# t5x's defaults where a gin leaves a value unbound (t5x/examples/t5/network.py T5Config, models.py
# EncoderDecoderModel, utils.py DatasetConfig / SaveCheckpointConfig, trainer.py Trainer).
T5X_NETWORK_DEFAULTS = dict(dtype='float32', emb_dim=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6,
                            head_dim=64, mlp_dim=2048, mlp_activations=('relu',), dropout_rate=0.1,
                            logits_via_embedding=False)
T5X_MODEL_DEFAULTS = dict(z_loss=0.0, label_smoothing=0.0, loss_normalizing_factor=None)
# t5x's example network's relative position buckets are fixed: 32 buckets, max distance 128.
T5X_RELPOS = dict(relpos_buckets=32, relpos_max_distance=128)
ACTIVATIONS = {('gelu', 'linear'): 'gated-gelu', ('silu', 'linear'): 'gated-silu', ('swish', 'linear'): 'gated-silu',
               ('relu',): 'relu', ('gelu',): 'gelu'}
T5X_ADAFACTOR_ARGS = ('factored', 'multiply_by_parameter_scale', 'beta1', 'decay_rate', 'step_offset',
                      'clipping_threshold', 'weight_decay_rate', 'min_dim_size_to_factor', 'epsilon1', 'epsilon2',
                      'global_norm_clip_threshold', 'max_parameter_scale', 'skip_nan_updates',
                      'weight_decay_rate_lr_exponent')
# t5x learning-rate factors -> flanx schedule, for the products flanx has.
SCHEDULES = {('constant',): 'constant', ('constant', 'linear_warmup'): 'linear_warmup',
             ('constant', 'rsqrt_decay'): 'rsqrt_decay'}
_CHECKPOINT_STEP = re.compile(r'checkpoint_(\d+)/?$')
# network.T5Config arguments that only lay out or rematerialise the same computation (scalable_t5's network).
T5X_NETWORK_LAYOUT_ARGS = ('remat_policy', 'scan_layers', 'param_scan_axis')
# Mixture-of-Experts plumbing (t5x/contrib/moe: moe_trainer.MoeTrainer, moe_partitioning.MoePjitPartitioner,
# NUM_EXPERTS, flaxformer's moe layers).
_MOE = re.compile(r'(?:^|[^A-Za-z])(?:moe|Moe|MoE|MOE)|EXPERT')


@dataclasses.dataclass
class Conversion:
  """The flanx gin being written: includes, macro values, bindings and the comments that explain them."""
  source: str
  includes: list[str] = dataclasses.field(default_factory=list)
  imports: list[str] = dataclasses.field(default_factory=list)
  sections: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)
  dropped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (reason, 'file:line: key = value')

  def section(self, title: str) -> list[str]:
    lines: list[str] = []
    self.sections.append((title, lines))
    return lines

  def drop(self, where: str, key: str, value: Any, why: str) -> None:
    self.dropped.append((why, f'{where}: {key} = {_text(value)}'))

  def render(self) -> str:
    out = [f'# flanx gin converted from the t5x gin {self.source} by `python -m flanx.from_t5x_gin`.',
           '# Values carry t5x semantics; a comment follows each value that needed care.']
    out += [f"include '{name}'" for name in self.includes]
    out += [f'import {module}' for module in self.imports]
    for title, lines in self.sections:
      if lines:
        out += ['', f'# {title}'] + lines
    if self.dropped:
      out += ['', '# Not carried over (no flanx counterpart, or t5x infrastructure flanx does differently).']
      reasons = list(dict.fromkeys(why for why, _ in self.dropped))
      for why in reasons:
        out += ['#', f'# {why}:'] + [f'#   {line}' for reason, line in self.dropped if reason == why]
    return '\n'.join(out) + '\n'


def _text(value: Any) -> str:
  """A gin literal for value (Python literals are valid gin)."""
  return repr(value)


def _flanx_params(fn: Callable) -> set[str]:
  """Names a flanx gin configurable accepts (the converter only writes bindings flanx can parse)."""
  return set(inspect.signature(inspect.unwrap(fn)).parameters)


def _bind(lines: list[str], key: str, value: Any, note: str = '') -> None:
  if isinstance(value, Ref) and not value.name.startswith('schedules.'):  # a t5x configurable: flanx has none
    lines.append(f'# {key}: the t5x gin gives {_text(value)}, which flanx cannot express; set it by hand')
    return
  lines.append(f'{key} = {_text(value)}' + (f'  # {note}' if note else ''))


def _module_line(lines: list[str], module: Any) -> None:
  """MIXTURE_OR_TASK_MODULE, when it can be imported here (t5x's task modules, e.g. t5.data.mixtures, cannot)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  names = [m.strip() for m in module.split(',')] if isinstance(module, str) else []
  missing = []
  for name in names:
    try:
      if importlib.util.find_spec(name) is None:
        missing.append(name)
    except (ImportError, ValueError):
      missing.append(name)
  if missing:
    lines.append(f'# MIXTURE_OR_TASK_MODULE: the t5x gin imports {module!r}; {", ".join(missing)} cannot be imported '
                 'here: set the module that registers the task with seqio for flanx')
  else:
    _bind(lines, 'MIXTURE_OR_TASK_MODULE', module if names else None)


def _refs(value: Any) -> list[Ref]:
  if isinstance(value, Ref):
    return [value]
  if isinstance(value, (list, tuple)) and not isinstance(value, Macro):
    return [r for v in value for r in _refs(v)]
  if isinstance(value, dict):
    return [r for v in value.values() for r in _refs(v)]
  return []


def _short(name: str) -> str:
  """'train/optax.adamw' -> 'adamw'."""
  return name.rsplit('/', 1)[-1].rsplit('.', 1)[-1]


def check_model_family(t5x: T5xGin) -> None:
  """Raises T5xGinError, naming the binding, for a model flanx cannot train or decode as the t5x gin would.

  flanx is t5x's encoder-decoder T5 (models.EncoderDecoderModel over the examples/t5 network.Transformer);
  a decoder-only model, Mixture-of-Experts, a flaxformer architecture or a T5Config option flanx lacks would
  silently become a different model.
  """
  def refuse(binding: Binding, what: str, follow: bool = True) -> None:
    b = t5x.origin(binding) if follow else binding
    raise T5xGinError(f'{b.where}: {b.key} = {_text(b.value)}: {what}; converting it would change what trains: '
                      "flanx trains and decodes t5x's encoder-decoder T5 (models.EncoderDecoderModel over "
                      'network.Transformer with network.T5Config)')

  for binding in t5x.bindings.values():
    names = [binding.selector] + [r.name for r in _refs(binding.value)]
    if any(_MOE.search(n) for n in names):
      refuse(binding, 'a Mixture-of-Experts setting (t5x/contrib/moe)', follow=False)
    for name in names:
      configurable = _short(name)
      if configurable.endswith('Model') and configurable != 'EncoderDecoderModel':
        refuse(binding, f'the model class {configurable}')
      if configurable in ('DecoderWrapper', 'TransformerConfig'):
        refuse(binding, 'a decoder-only network (t5x/examples/decoder_only)')
  for binding in t5x.bindings_of('EncoderDecoderModel', mark=False):
    if binding.arg == 'module':
      module = t5x.resolve(binding.value, binding.where)
      if isinstance(module, Ref) and _short(module.name) != 'Transformer':
        refuse(binding, f'the network {module!r} (flaxformer architectures are not read: convert with t5x\'s '
               'examples/t5 model gin of the same size instead, e.g. t5x/examples/t5/t5_1_1/xl.gin, or start '
               "from flanx's gin/models/*.gin)")
  for binding in t5x.bindings_of('T5Config', mark=False):
    value = t5x.resolve(binding.value, binding.where)
    known = binding.arg in T5X_NETWORK_DEFAULTS or binding.arg in ('vocab_size', 'float32_attention_logits')
    if not known and binding.arg not in T5X_NETWORK_LAYOUT_ARGS and not (
        binding.arg == 'scale_attn_logits' and value is False):
      refuse(binding, f'network.T5Config.{binding.arg} has no flanx counterpart')


def _model(t5x: T5xGin, conv: Conversion, kind: str) -> None:
  """t5x's network.T5Config -> flanx T5Config (plus DROPOUT_RATE / ACTIVATION_DTYPE macros)."""
  lines = conv.section('Model (t5x network.T5Config)')
  config_ref, _ = t5x.get('Transformer', 'config', default=None)
  if t5x.find('T5Config', 'vocab_size') is None and config_ref is None:
    conv.drop(t5x.path, 'network.T5Config', None, 'no t5x network.T5Config bindings found: the model is not '
              'described (flaxformer gins are not read); include a flanx models/*.gin for it')
    return
  value = lambda arg: t5x.get('T5Config', arg, default=T5X_NETWORK_DEFAULTS.get(arg, _MISSING))
  vocab, where = value('vocab_size')
  if vocab is _MISSING:
    raise T5xGinError(f'{t5x.path}: network.T5Config.vocab_size is not bound (t5x requires it)')
  _bind(lines, 'T5Config.vocab_size', vocab)
  for t5x_name, flanx_name in (('emb_dim', 'd_model'), ('num_heads', 'num_heads'), ('head_dim', 'd_kv'),
                               ('mlp_dim', 'd_ff'), ('num_encoder_layers', 'num_encoder_layers'),
                               ('num_decoder_layers', 'num_decoder_layers')):
    v, where = value(t5x_name)
    _bind(lines, f'T5Config.{flanx_name}', v, '' if where else 't5x default')
  activations, where = value('mlp_activations')
  activation = ACTIVATIONS.get(tuple(activations))
  if activation is None:
    raise T5xGinError(f'{where or t5x.path}: network.T5Config.mlp_activations = {activations!r}: flanx supports '
                      f'{sorted(ACTIVATIONS)}')
  _bind(lines, 'T5Config.activation', activation, f'mlp_activations = {tuple(activations)!r}')
  tied, where = value('logits_via_embedding')
  _bind(lines, 'T5Config.tie_embeddings', bool(tied), '' if where else 't5x default')
  for name, v in T5X_RELPOS.items():
    _bind(lines, f'T5Config.{name}', v, "fixed in t5x's T5 network")
  lines.append('T5Config.dropout_rate = %DROPOUT_RATE')
  lines.append('T5Config.dtype = %ACTIVATION_DTYPE')
  dropout, where = value('dropout_rate')
  if dropout == REQUIRED and kind != 'train':
    dropout, where = 0.0, 'required in t5x model gins; run gins set it (unused when decoding)'
  _bind(lines, 'DROPOUT_RATE', dropout if dropout == REQUIRED else float(dropout), '' if where else 't5x default')
  dtype, where = value('dtype')
  _bind(lines, 'ACTIVATION_DTYPE', str(dtype), '' if where else 't5x default')
  t5x.find('T5Config', 'scale_attn_logits')  # False (t5x's T5) when it gets here: check_model_family refuses True
  for arg in T5X_NETWORK_LAYOUT_ARGS:
    binding = t5x.find('T5Config', arg)
    if binding is not None:
      conv.drop(binding.where, binding.key, t5x.resolve(binding.value), 'layer scan / rematerialisation: the same '
                'numbers; flanx sets them with T5Config.scan_layers / T5Config.remat (gin/hardware/*.gin)')
  float32_logits, where = t5x.get('T5Config', 'float32_attention_logits', default=False)
  if float32_logits:
    conv.drop(where, 'network.T5Config.float32_attention_logits', True, 'flanx has no such switch')


def _train_dataset_scope(t5x: T5xGin) -> str:
  ref, _ = t5x.get('train', 'train_dataset_cfg', default=None)
  if isinstance(ref, Ref) and '/' in ref.name:
    return ref.name.rsplit('/', 1)[0]
  return 'train'


def _train_eval_data(t5x: T5xGin, conv: Conversion, lines: list[str], train_scope: str) -> None:
  """t5x's train_eval dataset -> train.eval_split; flanx evaluates with the training data's other settings."""
  ref, where = t5x.get('train', 'train_eval_dataset_cfg', default=None)
  if not isinstance(ref, Ref):
    return
  scope = ref.name.rsplit('/', 1)[0] if '/' in ref.name else ''
  split, swhere = t5x.get('DatasetConfig', 'split', scope, default='validation')
  _bind(lines, 'train.eval_split', split, 't5x train_eval dataset split')
  for key, binding in list(t5x.bindings.items()):
    if key[0] != scope or not t5x._matches(key[1], 'DatasetConfig') or key[2] == 'split':
      continue
    t5x.used.add(key)
    value = t5x.resolve(binding.value, binding.where)
    train_value, _ = t5x.get('DatasetConfig', key[2], train_scope, default=None)
    if value != train_value and key[2] not in ('shuffle', 'seed'):
      conv.drop(binding.where, binding.key, value, 'flanx evaluates during training with the training '
                'task, lengths, batch size and packing')


def _steps(t5x: T5xGin, conv: Conversion, lines: list[str], train_params: set[str],
           initial_checkpoint: Optional[str]) -> Optional[int]:
  """TRAIN_STEPS / TRAIN_STEPS_RELATIVE; returns the initial checkpoint's step when its name gives one.

  flanx counts steps as t5x does from a t5x initial checkpoint (train.continue_step, on by default for t5x
  checkpoints): TRAIN_STEPS is absolute and carries over unchanged.
  """
  total, where = t5x.get('train', 'total_steps', default=None)
  relative, rwhere = t5x.get('train', 'relative_steps', default=None)
  match = _CHECKPOINT_STEP.search(initial_checkpoint or '')
  restored = int(match.group(1)) if match else None
  absolute_steps = 'continue_step' in train_params
  if not relative and isinstance(total, int) and total <= (restored or 0):
    b = t5x.origin(t5x.find('train', 'total_steps'))
    past = f" (the initial checkpoint's step is {restored})" if restored else ''
    raise T5xGinError(f'{b.where}: {b.key} = {total}: the t5x run trains no steps{past}; it only evaluates when '
                      'train.run_eval_before_training is set. flanx.train refuses such a TRAIN_STEPS: evaluate with '
                      'python -m flanx.eval (convert a t5x eval gin, or use runs/eval.gin with --gin.CHECKPOINT_PATH), '
                      'or give the t5x gin the number of steps to train')
  if relative:
    if absolute_steps:
      _bind(lines, 'TRAIN_STEPS_RELATIVE', int(relative), 'fine-tuning steps past the initial checkpoint\'s step')
    else:
      _bind(lines, 'TRAIN_STEPS', int(relative), f't5x TRAIN_STEPS_RELATIVE ({rwhere}); flanx counts from 0')
  elif total is None or total == REQUIRED:
    _bind(lines, 'TRAIN_STEPS', REQUIRED, 'required in the t5x gin' if total == REQUIRED else 'not set in the t5x gin')
  elif absolute_steps or restored is None:
    note = f'absolute: the initial checkpoint is at step {restored}' if restored is not None else ''
    _bind(lines, 'TRAIN_STEPS', int(total), note)
  else:
    _bind(lines, 'TRAIN_STEPS', int(total) - restored,
          f't5x TRAIN_STEPS = {total} is absolute; minus the initial checkpoint\'s step {restored}')
  return restored


def _schedule(t5x: T5xGin, conv: Conversion, lines: list[str]) -> None:
  """Trainer.learning_rate_fn (what t5x's Adafactor reads) -> a flanx schedule."""
  binding = t5x.find('Trainer', 'learning_rate_fn')
  fn_ref = t5x.resolve(binding.value, binding.where) if binding else None
  if fn_ref is None and t5x.find('create_learning_rate_scheduler', 'factors') is None:
    lines.append('# learning rate: the t5x gin binds no Trainer.learning_rate_fn; flanx default schedule kept')
    return
  if isinstance(fn_ref, Ref) and not fn_ref.name.endswith('create_learning_rate_scheduler'):
    b = t5x.origin(binding)
    raise T5xGinError(f'{b.where}: {b.key} = {_text(b.value)}: only utils.create_learning_rate_scheduler is '
                      'converted; another schedule would change what trains')
  t5x_scheduler(t5x, lines)


def t5x_scheduler(t5x: T5xGin, lines: list[str], extra_offset: int = 0, note: str = '') -> None:
  """utils.create_learning_rate_scheduler -> a flanx schedule (constant, linear_warmup, rsqrt_decay).

  `extra_offset` is added to its step_offset (an optax optimizer's schedule counts the optimizer's updates).
  """
  get = lambda arg, default: t5x.get('create_learning_rate_scheduler', arg, default=default)
  factors, fwhere = get('factors', 'constant * linear_warmup * rsqrt_decay')  # t5x defaults
  base, _ = get('base_learning_rate', 0.5)
  warmup, _ = get('warmup_steps', 1000)
  offset, _ = get('step_offset', 0)
  floor, _ = get('min_learning_rate', 1e-8)
  names = tuple(sorted(f.strip() for f in factors.split('*')))
  kind = SCHEDULES.get(names)
  if kind is None:
    raise T5xGinError(f'{fwhere or t5x.path}: utils.create_learning_rate_scheduler.factors = {factors!r}: flanx '
                      "converts 'constant', 'constant * linear_warmup' and 'constant * rsqrt_decay'; another "
                      'schedule would change what trains')
  _bind(lines, 'train.learning_rate_schedule', Ref(f'schedules.{kind}', True), note)
  lines.append(f'schedules.{kind}.learning_rate = %LEARNING_RATE')
  _bind(lines, 'LEARNING_RATE', float(base))
  _bind(lines, f'schedules.{kind}.min_learning_rate', float(floor))
  if kind != 'constant':
    _bind(lines, f'schedules.{kind}.warmup_steps', int(warmup))
    _bind(lines, f'schedules.{kind}.step_offset', int(offset) + extra_offset,
          f"t5x's step_offset {offset} + the restored step {extra_offset}" if extra_offset else '')
  for arg in ('decay_factor', 'steps_per_decay', 'steps_per_cycle'):
    t5x.find('create_learning_rate_scheduler', arg)  # unused by these factors


def _optimizer(t5x: T5xGin, conv: Conversion, lines: list[str], restored_step: Optional[int],
               fresh_state_default: bool) -> None:
  """t5x adafactor.Adafactor -> flanx adafactor (same defaults).

  From a t5x checkpoint flanx starts a fresh Adafactor state whose count restarts at 0 (train.
  restore_optimizer_state=False): t5x's `step_offset = <checkpoint step>` (restart the decay there) is then
  flanx's step_offset 0.
  """
  from flanx.training import adafactor  # pylint: disable=g-import-not-at-top
  t5x.find('EncoderDecoderModel', 'optimizer_def')  # Adafactor (t5x_gin_optax converts the optax ones)
  accepted = _flanx_params(adafactor.adafactor)
  for arg in T5X_ADAFACTOR_ARGS:
    binding = t5x.find('Adafactor', arg)
    if binding is None:
      continue
    value = t5x.resolve(binding.value, binding.where)
    if arg not in accepted:
      conv.drop(binding.where, f'adafactor.Adafactor.{arg}', value, 'flanx Adafactor has no such option yet')
    elif not isinstance(value, (bool, int, float, type(None))):
      conv.drop(binding.where, f'adafactor.Adafactor.{arg}', value, 'only plain values carry over')
    elif arg == 'step_offset' and fresh_state_default and restored_step and value == restored_step:
      _bind(lines, 'adafactor.step_offset', 0, f't5x step_offset = {value}, the checkpoint\'s step: flanx\'s fresh '
            'optimizer count restarts there')
    else:
      _bind(lines, f'adafactor.{arg}', value)
  if fresh_state_default and restored_step:
    lines.append('# optimizer state: flanx starts a fresh Adafactor state at the checkpoint\'s step; t5x continues '
                 'the checkpoint\'s state when it holds one: then set train.restore_optimizer_state = True')
  rules = t5x.find('Adafactor', 'logical_factor_rules')
  if rules is None:
    conv.drop(t5x.path, 'adafactor.Adafactor.logical_factor_rules', None,
              "unbound: t5x factors by parameter size; flanx factors by logical axis names (t5x's "
              "standard_logical_factor_rules)")
  elif not (isinstance(rules.value, Ref) and rules.value.name.endswith('standard_logical_factor_rules')):
    conv.drop(rules.where, 'adafactor.Adafactor.logical_factor_rules', rules.value,
              "flanx uses t5x's standard_logical_factor_rules")
  for arg in ('factor_map', 'dtype_momentum', 'learning_rate'):
    binding = t5x.find('Adafactor', arg)
    if binding is not None:
      conv.drop(binding.where, f'adafactor.Adafactor.{arg}', binding.value, 'no flanx counterpart')


def _checkpoints(t5x: T5xGin, conv: Conversion, lines: list[str]) -> Optional[str]:
  """Save period / retention and the initial checkpoint; returns the initial checkpoint path."""
  period, where = t5x.get('SaveCheckpointConfig', 'period', default=None)
  if period:
    _bind(lines, 'CHECKPOINT_PERIOD', int(period))
  else:
    lines.append('# CHECKPOINT_PERIOD: t5x saves only at the end of this run (no period); flanx keeps its '
                 'periodic default')
  keep, where = t5x.get('SaveCheckpointConfig', 'keep', default=None)
  _bind(lines, 'train.keep_checkpoints', keep, '' if where else 't5x default: keep all')
  for arg in ('dtype', 'save_dataset', 'checkpoint_steps', 'keep_dataset_checkpoints'):
    binding = t5x.find('SaveCheckpointConfig', arg)
    if binding is not None and not (arg == 'dtype' and t5x.resolve(binding.value) == 'float32'):
      conv.drop(binding.where, f'utils.SaveCheckpointConfig.{arg}', t5x.resolve(binding.value),
                'flanx saves float32 params and its data position with every checkpoint')
  path, where = t5x.get('RestoreCheckpointConfig', 'path', default=None)
  if isinstance(path, (list, tuple)):
    conv.drop(where, 'utils.RestoreCheckpointConfig.path', path, 'flanx restores one initial checkpoint')
    path = None
  _bind(lines, 'INITIAL_CHECKPOINT_PATH', path)
  mode, mwhere = t5x.get('RestoreCheckpointConfig', 'mode', default='latest')
  if path and mode != 'specific':
    lines.append(f"# t5x restore mode {mode!r}: flanx restores exactly INITIAL_CHECKPOINT_PATH, and resumes from "
                 f"MODEL_DIR's newest checkpoint when there is one")
  for arg in ('dtype', 'strict', 'fallback_to_scratch', 'restore_dataset', 'assignment_map',
              'state_transformation_fns', 'checkpointer_cls'):
    binding = t5x.find('RestoreCheckpointConfig', arg)
    if binding is not None and arg != 'dtype':
      conv.drop(binding.where, f'utils.RestoreCheckpointConfig.{arg}', binding.value,
                'flanx restores params strictly, in float32, without optimizer or data state')
  return path if isinstance(path, str) else None


def _partitioning(t5x: T5xGin, conv: Conversion, lines: list[str]) -> None:
  """PjitPartitioner -> make_mesh.model; 2-D parameter partitioning -> axis_rules.fsdp."""
  num, where = t5x.get('PjitPartitioner', 'num_partitions', default=None)
  submesh, swhere = t5x.get('PjitPartitioner', 'model_parallel_submesh', default=None)
  if submesh:
    _bind(lines, 'make_mesh.model', int(math.prod(submesh)),
          f't5x model_parallel_submesh = {tuple(submesh)!r}: flanx takes only the size')
  elif num:
    _bind(lines, 'make_mesh.model', int(num))
  params_2d, pwhere = t5x.get('standard_logical_axis_rules', 'parameter_partitioning_dims', default=1)
  acts_2d, awhere = t5x.get('standard_logical_axis_rules', 'activation_partitioning_dims', default=1)
  if num or submesh or pwhere:
    _bind(lines, 'axis_rules.fsdp', params_2d == 2, 'parameter_partitioning_dims = 2: embed over data'
          if params_2d == 2 else '')
  if acts_2d != 1:
    conv.drop(awhere, 'partitioning.standard_logical_axis_rules.activation_partitioning_dims', acts_2d,
              'flanx shards activations over data only')
  rules = t5x.find('PjitPartitioner', 'logical_axis_rules')
  standard = isinstance(getattr(rules, 'value', None), Ref) and rules.value.name.endswith('standard_logical_axis_rules')
  if rules is not None and not standard:
    conv.drop(rules.where, 'partitioning.PjitPartitioner.logical_axis_rules', rules.value,
              "flanx's rules are t5x's standard ones")


def _decoding(t5x: T5xGin, conv: Conversion, kind: str) -> None:
  """Decoder choice and options -> decode_options (used by flanx.eval / flanx.infer with this gin).

  t5x's default decoder is beam search with predict_batch_with_aux.num_decodes (default 1) beams; that is
  written out for eval and infer configs. For infer, values go into runs/infer.gin's macros.
  """
  from flanx.inference import predict  # pylint: disable=g-import-not-at-top
  accepted = _flanx_params(predict.decode_options)
  lines = conv.section('Decoding (t5x decode_fn / predict_batch_with_aux)')
  decode_fn, where = t5x.get('EncoderDecoderModel', 'decode_fn', default=None)
  sampling = isinstance(decode_fn, Ref) and decode_fn.name.endswith('temperature_sample')
  if isinstance(decode_fn, Ref) and not sampling and not decode_fn.name.endswith('beam_search'):
    conv.drop(where, 'models.EncoderDecoderModel.decode_fn', decode_fn, 'flanx decodes by beam search or sampling')
  options: dict[str, Any] = {}
  num_decodes, _ = t5x.get('predict_batch_with_aux', 'num_decodes', default=None)
  if sampling:
    options['mode'] = 'sample'
    for t5x_arg, flanx_arg in (('temperature', 'temperature'), ('topk', 'top_k'), ('topp', 'top_p'),
                               ('max_decode_steps', 'max_decode_steps'), ('rescale_log_probs', 'rescale_log_probs')):
      value, _ = t5x.get('temperature_sample', t5x_arg, default=None)
      if value is not None:
        options[flanx_arg] = value
    if num_decodes:
      options['num_decodes'] = num_decodes
  elif decode_fn is not None or num_decodes or t5x.find('beam_search', 'alpha'):
    options['mode'] = 'beam'
    options['beam_size'] = num_decodes or 1  # t5x passes num_decodes (default 1) as the beam size
    alpha, _ = t5x.get('beam_search', 'alpha', default=None)
    if alpha is not None:
      options['alpha'] = alpha
    steps, _ = t5x.get('beam_search', 'max_decode_step', default=None)
    if steps and steps > 0:
      options['max_decode_steps'] = steps
  return_all, rwhere = t5x.get('predict_batch_with_aux', 'return_all_decodes', default=None)
  if return_all is not None:
    options['return_all_decodes'] = return_all
  if not options and kind != 'train':
    options = {'mode': 'beam', 'beam_size': 1}
    lines.append("# t5x's default decoder: beam search, num_decodes = 1 beam, alpha 0.6")
  if not options:
    return
  conv.imports.append('flanx.inference.predict')
  for name, value in options.items():
    if kind == 'infer' and name in INFER_DECODE_MACROS:
      _bind(lines, INFER_DECODE_MACROS[name], value)
    elif name in accepted:
      _bind(lines, f'decode_options.{name}', value)
    else:
      conv.drop(where or rwhere or t5x.path, f'decode option {name}', value, 'flanx decode_options has no such option')


# decode_options bound through runs/infer.gin's macros (so --gin.DECODE_MODE etc. keep working).
INFER_DECODE_MACROS = {'mode': 'DECODE_MODE', 'beam_size': 'BEAM_SIZE', 'temperature': 'TEMPERATURE', 'top_k': 'TOP_K',
                       'top_p': 'TOP_P'}


def _script_kind(t5x: T5xGin) -> str:
  """'train', 'evaluate' or 'infer': which t5x script the gin configures."""
  selectors = {b.selector.rsplit('.', 1)[-1] for b in t5x.bindings.values() if b.arg}
  for kind in ('train', 'evaluate', 'infer'):
    if kind in selectors:
      return kind
  if t5x.macro('TRAIN_STEPS') is not None:
    return 'train'
  if t5x.find('T5Config', 'vocab_size') is not None:
    return 'model'  # a model gin alone: becomes a flanx models/*.gin
  raise T5xGinError(f'{t5x.path}: not a t5x train, eval, infer or model config (no train / evaluate / infer '
                    'bindings, no TRAIN_STEPS, no network.T5Config)')


def _eval_or_infer(t5x: T5xGin, conv: Conversion, kind: str) -> None:
  """t5x's evaluate / infer script settings -> flanx runs/eval.gin / runs/infer.gin macros."""
  lines = conv.section(f'Task, data and checkpoint (t5x {kind})')
  ref, _ = t5x.get(kind, 'dataset_cfg', default=None)
  scope = ref.name.rsplit('/', 1)[0] if isinstance(ref, Ref) and '/' in ref.name else ''
  data = lambda arg, default: t5x.get('DatasetConfig', arg, scope, default=default)
  name, _ = data('mixture_or_task_name', None)
  if name is None or name == REQUIRED:
    lines.append('# MIXTURE_OR_TASK_NAME: not set in the t5x gin; set --gin.MIXTURE_OR_TASK_NAME')
  else:
    _bind(lines, 'MIXTURE_OR_TASK_NAME', name)
  module, _ = data('module', None)
  _module_line(lines, None if module == REQUIRED else module)
  lengths, where = data('task_feature_lengths', None)
  if isinstance(lengths, dict):
    _bind(lines, 'TASK_FEATURE_LENGTHS', dict(lengths))
    if 'targets' in lengths:
      _bind(lines, 'MAX_DECODE_LENGTH', int(lengths['targets']), "t5x decodes up to the targets length")
  else:
    lines.append("# TASK_FEATURE_LENGTHS: t5x computes the dataset's maximum lengths (None); flanx needs them: set "
                 '--gin.TASK_FEATURE_LENGTHS and --gin.MAX_DECODE_LENGTH')
  batch, _ = data('batch_size', None)
  if isinstance(batch, int):
    _bind(lines, 'BATCH_SIZE', batch)
  split, _ = data('split', 'test')
  _bind(lines, 'EVAL_SPLIT' if kind == 'evaluate' else 'INFER_SPLIT', split)
  cached, _ = data('use_cached', False)
  _bind(lines, 'USE_CACHED_TASKS' if kind == 'evaluate' else 'infer.use_cached_tasks', bool(cached))
  for arg in ('shuffle', 'seed', 'pack', 'use_custom_packing_ops'):
    t5x.find('DatasetConfig', arg, scope)  # evaluation reads every example once, unpacked, in order
  path, where = t5x.get('RestoreCheckpointConfig', 'path', default=None)
  if isinstance(path, str):
    _bind(lines, 'CHECKPOINT_PATH', path)
  else:
    lines.append('# CHECKPOINT_PATH: not set in the t5x gin; set --gin.CHECKPOINT_PATH')
  for arg in ('mode', 'dtype'):
    t5x.find('RestoreCheckpointConfig', arg)  # flanx evaluates exactly the given checkpoint, in float32
  output_dir, _ = t5x.get(kind, 'output_dir', default=None)
  macro = 'EVAL_OUTPUT_DIR' if kind == 'evaluate' else 'INFER_OUTPUT_DIR'
  if isinstance(output_dir, str):
    _bind(lines, macro, output_dir)
  if kind == 'infer':
    mode, where = t5x.get('infer', 'mode', default='predict')
    if mode != 'predict':
      conv.drop(where, 'infer_script.infer.mode', mode, 'flanx.infer predicts; flanx.eval scores')
    prompt, where = t5x.get('predict_batch_with_aux', 'prompt_with_targets', default=False)
    if prompt:
      _bind(lines, 'infer.prompt_with_targets', True)


# t5x plumbing the conversion implies (which model, dataset or checkpoint config a run uses).
PLUMBING = (('train', 'model'), ('train', 'train_dataset_cfg'), ('train', 'checkpoint_cfg'),
            ('train', 'partitioner'), ('train', 'trainer_cls'), ('train', 'summarize_config_fn'),
            ('train', 'dataset_cfg'), ('train', 'restore_checkpoint_cfg'),
            ('EncoderDecoderModel', 'module'), ('EncoderDecoderModel', 'optimizer_def'),
            ('CheckpointConfig', 'restore'), ('CheckpointConfig', 'save'), ('Trainer', 'learning_rate_fn'),
            ('PjitPartitioner', 'logical_axis_rules'))


def convert(t5x: T5xGin) -> Conversion:
  """The flanx gin (as a Conversion) that runs like the t5x gin; raises T5xGinError on unusable input."""
  from flanx.training import loop  # pylint: disable=g-import-not-at-top
  train_params = _flanx_params(loop.train)
  conv = Conversion(source=t5x.path)
  check_model_family(t5x)
  kind = _script_kind(t5x)
  if kind == 'model':
    conv.imports.append('flanx.model.config')
    _model(t5x, conv, kind)
    return _finish(t5x, conv, kind)
  conv.includes.append({'train': 'runs/finetune.gin', 'evaluate': 'runs/eval.gin', 'infer': 'runs/infer.gin'}[kind])
  conv.imports += ['flanx.model.config', 'flanx.training.partitioning']
  _model(t5x, conv, kind)
  if kind != 'train':
    _eval_or_infer(t5x, conv, kind)
    _partitioning(t5x, conv, conv.section('Partitioning (t5x PjitPartitioner)'))
    _decoding(t5x, conv, kind)
    return _finish(t5x, conv, kind)
  conv.imports += ['flanx.training.adafactor', 'flanx.training.schedules']

  lines = conv.section('Task, data and steps (t5x train / train DatasetConfig)')
  scope = _train_dataset_scope(t5x)
  data = lambda arg, default=_MISSING: t5x.get('DatasetConfig', arg, scope, default=default)
  for arg, macro in (('mixture_or_task_name', 'MIXTURE_OR_TASK_NAME'), ('task_feature_lengths',
                     'TASK_FEATURE_LENGTHS'), ('batch_size', 'BATCH_SIZE')):
    value, where = data(arg, None)
    if value is None:
      lines.append(f'# {macro}: not set in the t5x gin; set --gin.{macro}')
    else:
      _bind(lines, macro, dict(value) if isinstance(value, dict) else value)
  module, where = data('module', None)
  _module_line(lines, None if module == REQUIRED else module)
  pack, where = data('pack', False)
  _bind(lines, 'train.pack', bool(pack), '' if where else "t5x's DatasetConfig default: no packing")
  shuffle, where = data('shuffle', True)
  _bind(lines, 'train.shuffle', bool(shuffle))
  cached, where = data('use_cached', False)
  _bind(lines, 'USE_CACHED_TASKS', bool(cached))
  seed, where = data('seed', None)
  if isinstance(seed, int):
    _bind(lines, 'train.data_seed', seed)
  else:
    lines.append('# data seed: t5x draws a fresh one each run (seed = None); flanx uses train.data_seed (fixed)')
  for arg in ('split',):
    value, where = data(arg, 'train')
    if value != 'train':
      conv.drop(where, f'{scope}/utils.DatasetConfig.split', value, 'flanx trains on the train split')
  _train_eval_data(t5x, conv, lines, scope)
  random_seed, where = t5x.get('train', 'random_seed', default=None)
  if isinstance(random_seed, int):
    _bind(lines, 'SEED', random_seed, 'params init and dropout')
  else:
    lines.append('# SEED: t5x draws a random seed each run (random_seed = None); flanx uses SEED (fixed)')
  eval_period, where = t5x.get('train', 'eval_period', default=None)
  if isinstance(eval_period, int):
    _bind(lines, 'EVAL_PERIOD', eval_period)
  eval_steps, where = t5x.get('train', 'eval_steps', default=None)
  if isinstance(eval_steps, int):
    _bind(lines, 'train.eval_batches', eval_steps, 't5x eval_steps')
  microbatches, where = t5x.get('Trainer', 'num_microbatches', default=None)
  _bind(lines, 'NUM_MICROBATCHES', int(microbatches or 1))

  ckpt_lines = conv.section('Checkpoints (t5x utils.CheckpointConfig)')
  initial = _checkpoints(t5x, conv, ckpt_lines)
  restored_step = _steps(t5x, conv, lines, train_params, initial)

  loss_lines = conv.section('Loss (t5x models.EncoderDecoderModel)')
  for arg, target in (('z_loss', 'train.z_loss'), ('label_smoothing', 'train.label_smoothing'),
                      ('loss_normalizing_factor', 'LOSS_NORMALIZING_FACTOR')):
    value, where = t5x.get('EncoderDecoderModel', arg, default=T5X_MODEL_DEFAULTS[arg])
    if isinstance(value, Ref) and value.name.rsplit('.', 2)[-2:-1] == ['SpecialLossNormalizingFactor']:
      value = value.name.rsplit('.', 1)[-1]  # @losses.SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS
    if not isinstance(value, (int, float, str, type(None))):
      conv.drop(where, f'models.EncoderDecoderModel.{arg}', value, 'only plain values carry over')
      continue
    _bind(loss_lines, target, value, '' if where else 't5x default')

  opt_lines = conv.section('Learning rate and optimizer (t5x EncoderDecoderModel.optimizer_def, '
                           'Trainer.learning_rate_fn)')
  from flanx.interop import t5x_gin_optax  # pylint: disable=g-import-not-at-top
  if not t5x_gin_optax.convert(t5x, conv, opt_lines, restored_step):  # t5x's Adafactor
    _schedule(t5x, conv, opt_lines)
    _optimizer(t5x, conv, opt_lines, restored_step, 'restore_optimizer_state' in train_params)
  _partitioning(t5x, conv, conv.section('Partitioning (t5x PjitPartitioner)'))
  _decoding(t5x, conv, kind)
  return _finish(t5x, conv, kind)


def _finish(t5x: T5xGin, conv: Conversion, kind: str) -> Conversion:
  """Marks the plumbing as read and lists everything else that did not carry over."""
  for name, arg in PLUMBING:
    t5x.get(kind if name == 'train' else name, arg, default=None)  # marks it and the macros it names as read
  model_dir, where = t5x.get('train', 'model_dir', default=None)
  if kind == 'train' and isinstance(model_dir, str):
    conv.sections.append(('Run folder', [f'# MODEL_DIR: the t5x run wrote to {model_dir!r}; give flanx its own '
                                         f'with --gin.MODEL_DIR']))
  for line in t5x.missing_includes:
    conv.dropped.insert(0, ('includes not found, their bindings are not carried over (pass --gin_search_paths)',
                            line))
  for line in dict.fromkeys(t5x.undefined_macros):
    conv.dropped.append(('macros used but never defined in the given files (pass the other --gin_file too)', line))
  referenced = _referenced_macros(t5x)
  for binding in t5x.unused():
    if binding.arg == '' and (binding.value == REQUIRED or binding.selector not in referenced):
      continue  # a macro nothing uses has no effect in t5x either
    training_only = kind != 'train' and any(p in binding.key for p in TRAINING_ONLY)
    why = 'a training setting: no effect on evaluation or inference' if training_only else _reason(binding)
    conv.drop(binding.where, binding.key, binding.value, why)
  return conv


def _referenced_macros(t5x: T5xGin) -> set[str]:
  found: set[str] = set()

  def visit(value):
    if isinstance(value, Macro):
      found.add(value.name)
    elif isinstance(value, (list, tuple)) and not isinstance(value, Ref):
      for v in value:
        visit(v)
    elif isinstance(value, dict):
      for v in value.values():
        visit(v)

  for binding in t5x.bindings.values():
    visit(binding.value)
  return found


TRAINING_ONLY = ('Adafactor', 'z_loss', 'label_smoothing', 'loss_normalizing_factor', 'Z_LOSS', 'LABEL_SMOOTHING',
                 'LOSS_NORMALIZING_FACTOR', 'learning_rate', 'Trainer', 'OPTIMIZER')

# Why common t5x bindings have no flanx counterpart (pattern in the binding's key -> reason).
REASONS = (
    (('infer_eval', 'Evaluator', 'JSONLogger', 'EVALUATOR_', 'JSON_WRITE'),
     "flanx's in-training generation eval (train.inference_eval, on by default) decodes the training task's "
     'eval split (train.eval_split, train.eval_batches); other tasks: python -m flanx.eval'),
    (('Vocabulary', 'vocabulary', 'VOCABULARY'), 'flanx takes the vocabulary from the seqio task'),
    (('hardware_rng', 'HARDWARE_RNG'), "flanx uses JAX's default PRNG"),
    (('stats_period', 'gc_period', 'concurrent_metrics', 'use_orbax', 'run_eval_before_training', 'actions'),
     'flanx runs its own loop'),
    (('checkpoint_period', 'shard_id', 'num_shards', 'merge_epoch_results', 'write_fn'),
     'flanx.infer writes one output file per run'),
)


def _reason(binding: Binding) -> str:
  for patterns, why in REASONS:
    if any(p in binding.key or p in repr(binding.value) for p in patterns):
      return why
  return 'not read by this converter'


def convert_file(paths: str | Sequence[str], search_paths: Sequence[str] = ()) -> str:
  """The flanx gin text for a t5x gin file, or several read in order (t5x's repeated --gin_file)."""
  return convert(T5xGin(paths, search_paths)).render()
