"""t5x's optax optimizers in a t5x gin -> flanx's (part of `python -m flanx.from_t5x_gin`, see t5x_gin.py).

t5x wraps optax (t5x/optimizers.py): `OPTIMIZER = @optimizers.chain()` with `transformations = [@optax.clip(),
@optax.adamw()]`, `@optimizers.adamw()` alone, or `@optimizers.OptaxWrapper()` with `optax_optimizer = @optax.adamw()`. The optax optimizer's own `learning_rate` (a number, an optax
schedule or t5x's utils.create_learning_rate_scheduler) is what trains: t5x's OptaxWrapper ignores the learning
rate the Trainer passes (Trainer.learning_rate_fn then only feeds the logged `learning_rate`).

Converted: adamw / adam / lion with every hyperparameter (optax's defaults written out where the gin leaves one
unbound), optax.clip_by_global_norm / optax.clip ahead of it, and a constant, optax.warmup_cosine_decay_schedule
or create_learning_rate_scheduler learning rate. Anything else the optimizer binds would change what trains, so
it raises T5xGinError naming the binding.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

from flanx.interop.t5x_gin import (Binding, Conversion, Ref, T5xGin, T5xGinError, _bind, _flanx_params, _short,
                                   _text, t5x_scheduler)

OPTIMIZERS = {'adamw': 'adamw_optimizer', 'adam': 'adam_optimizer', 'lion': 'lion_optimizer'}
# optax gradient clipping ahead of the optimizer -> (its argument, the flanx optimizer's argument), in the order
# flanx applies them.
CLIPS = {'clip_by_global_norm': ('max_norm', 'global_norm_clip'), 'clip': ('max_delta', 'update_clip')}
_PLAIN = (bool, int, float)


def _selector(ref: Ref) -> tuple[str, str]:
  """(scope, configurable) of a reference: '@train/optax.adamw()' -> ('train', 'optax.adamw')."""
  scope, _, name = ref.name.rpartition('/')
  return scope, name


def _args(t5x: T5xGin, ref: Ref) -> dict[str, Binding]:
  """The bindings a reference's call receives (scoped ones over unscoped, as gin applies them)."""
  scope, name = _selector(ref)
  found = {b.arg: b for b in t5x.bindings_of(name)}
  if scope:
    found.update({b.arg: b for b in t5x.bindings_of(name, scope)})
  return found


def _refuse(t5x: T5xGin, binding: Binding, what: str) -> None:
  b = t5x.origin(binding)
  raise T5xGinError(f'{b.where}: {b.key} = {_text(b.value)}: {what}; converting it would change what trains')


def _optax_defaults(name: str) -> dict[str, Any]:
  import optax  # pylint: disable=g-import-not-at-top
  return {p.name: p.default for p in inspect.signature(getattr(optax, name)).parameters.values()}


def convert(t5x: T5xGin, conv: Conversion, lines: list[str], restored_step: Optional[int]) -> bool:
  """Writes the flanx optimizer and schedule for an optax optimizer_def; False when the gin uses Adafactor."""
  binding = t5x.find('EncoderDecoderModel', 'optimizer_def')
  optimizer = t5x.resolve(binding.value, binding.where) if binding else None
  if not isinstance(optimizer, Ref) or _short(optimizer.name) == 'Adafactor':
    return False
  from flanx.training import optimizer as flanx_optimizer  # pylint: disable=g-import-not-at-top
  name = _short(optimizer.name)
  if name == 'chain':
    chain = _args(t5x, optimizer).get('transformations')
    if chain is None:
      _refuse(t5x, binding, 'optimizers.chain without transformations')
    steps = t5x.resolve(chain.value, chain.where)
    where_steps = chain
  elif name == 'OptaxWrapper':  # optimizers.OptaxWrapper.optax_optimizer = @optax.adamw()
    inner = _args(t5x, optimizer).get('optax_optimizer')
    if inner is None:
      _refuse(t5x, binding, 'optimizers.OptaxWrapper without optax_optimizer')
    steps, where_steps = [t5x.resolve(inner.value, inner.where)], inner
  elif name in OPTIMIZERS:
    steps, where_steps = [optimizer], binding
  else:
    _refuse(t5x, binding, f'the optimizer {name!r}: flanx converts adafactor.Adafactor and optax adamw, adam and '
            'lion (after optax.clip_by_global_norm / optax.clip in optimizers.chain)')
  if not isinstance(steps, (list, tuple)) or not all(isinstance(s, Ref) and s.call for s in steps) or not steps:
    _refuse(t5x, where_steps, 'expected a list of optax calls such as [@optax.clip(), @optax.adamw()]')
  *clips, last = steps
  kind = _short(last.name)
  clip_kinds = [_short(s.name) for s in clips]
  if (kind not in OPTIMIZERS or any(c not in CLIPS for c in clip_kinds) or len(set(clip_kinds)) < len(clip_kinds)
      or clip_kinds != [c for c in CLIPS if c in clip_kinds]):
    _refuse(t5x, where_steps, 'flanx converts optax adamw, adam or lion, optionally after '
            'optax.clip_by_global_norm then optax.clip')
  factory = OPTIMIZERS[kind]
  accepted = _flanx_params(getattr(flanx_optimizer, factory)) - {'learning_rate', 'param_axes'}
  conv.imports.append('flanx.training.optimizer')
  lines.append(f'train.optimizer = @{factory}  # t5x: {_text(optimizer)} = optax {" -> ".join(clip_kinds + [kind])}')

  for clip in clips:
    arg, flanx_arg = CLIPS[_short(clip.name)]
    args = _args(t5x, clip)
    for other in set(args) - {arg}:
      _refuse(t5x, args[other], f'optax.{_short(clip.name)} takes only {arg}')
    value = t5x.resolve(args[arg].value, args[arg].where) if arg in args else None
    if not isinstance(value, _PLAIN):
      _refuse(t5x, args.get(arg, where_steps), f'optax.{_short(clip.name)} needs a number for {arg}')
    _bind(lines, f'{factory}.{flanx_arg}', float(value), f'optax.{_short(clip.name)}({arg}={value!r})')

  args = _args(t5x, last)
  defaults = _optax_defaults(kind)
  for arg, b in args.items():
    value = t5x.resolve(b.value, b.where)
    if arg == 'learning_rate':
      continue
    if arg not in defaults:
      _refuse(t5x, b, f'optax.{kind} has no argument {arg}')
    if arg in accepted and isinstance(value, _PLAIN):
      _bind(lines, f'{factory}.{arg}', value)
    elif value != defaults[arg]:
      _refuse(t5x, b, f'flanx {factory} takes {sorted(accepted)} as plain numbers')
  for arg in sorted(accepted - set(args)):
    if arg in defaults:
      _bind(lines, f'{factory}.{arg}', defaults[arg], f'optax.{kind} default')
  if 'learning_rate' not in args:
    _refuse(t5x, binding, f'optax.{kind} needs a learning_rate (t5x would fail)')
  _learning_rate(t5x, lines, args['learning_rate'], kind, restored_step)
  _report_unused(t5x, conv, kind)
  return True


def _learning_rate(t5x: T5xGin, lines: list[str], binding: Binding, kind: str, restored_step: Optional[int]) -> None:
  """The optax optimizer's learning_rate -> train.learning_rate_schedule (LEARNING_RATE: its value or peak)."""
  value = t5x.resolve(binding.value, binding.where)
  offset = restored_step or 0  # the optax schedule counts the updates of flanx's fresh optimizer state
  note = (f"optax counts its own updates: flanx's fresh optimizer state starts at the restored step {offset}"
          if offset else '')
  if isinstance(value, _PLAIN) and not isinstance(value, bool):
    _bind(lines, 'train.learning_rate_schedule', Ref('schedules.constant', True), f'optax.{kind} learning_rate')
    lines.append('schedules.constant.learning_rate = %LEARNING_RATE')
    _bind(lines, 'LEARNING_RATE', float(value))
    _bind(lines, 'schedules.constant.min_learning_rate', 0.0, 'optax applies no floor')
    return
  if isinstance(value, Ref) and value.call and _short(value.name) == 'create_learning_rate_scheduler':
    t5x_scheduler(t5x, lines, extra_offset=offset, note=f'optax.{kind} learning_rate')
    return
  if not (isinstance(value, Ref) and value.call and _short(value.name) == 'warmup_cosine_decay_schedule'):
    _refuse(t5x, binding, 'flanx converts a number, optax.warmup_cosine_decay_schedule or '
            'utils.create_learning_rate_scheduler as the learning rate')
  args = _args(t5x, value)
  defaults = _optax_defaults('warmup_cosine_decay_schedule')
  got = {}
  for arg, default in defaults.items():
    b = args.pop(arg, None)
    got[arg] = t5x.resolve(b.value, b.where) if b else default
    if got[arg] is inspect.Parameter.empty or not isinstance(got[arg], _PLAIN):
      _refuse(t5x, b or binding, f'optax.warmup_cosine_decay_schedule needs a number for {arg}')
  for b in args.values():
    _refuse(t5x, b, f'optax.warmup_cosine_decay_schedule has no argument {b.arg}')
  _bind(lines, 'train.learning_rate_schedule', Ref('schedules.warmup_cosine_decay', True),
        f'optax.{kind} learning_rate = optax.warmup_cosine_decay_schedule')
  lines.append('schedules.warmup_cosine_decay.peak_value = %LEARNING_RATE')
  _bind(lines, 'LEARNING_RATE', float(got.pop('peak_value')))
  for arg, v in got.items():
    _bind(lines, f'schedules.warmup_cosine_decay.{arg}', v)
  _bind(lines, 'schedules.warmup_cosine_decay.step_offset', offset, note)


def _report_unused(t5x: T5xGin, conv: Conversion, kind: str) -> None:
  """Adafactor and Trainer.learning_rate_fn settings the t5x run itself does not use with an optax optimizer."""
  for b in t5x.bindings_of('Adafactor') + t5x.bindings_of('standard_logical_factor_rules'):
    conv.drop(b.where, b.key, t5x.resolve(b.value), f'unused by the t5x run: its optimizer is optax.{kind}')
  learning_rate_fn = t5x.find('Trainer', 'learning_rate_fn')
  scheduler = [b for b in t5x.bindings_of('create_learning_rate_scheduler', mark=False)
               if (b.scope, b.selector, b.arg) not in t5x.used]
  for b in ([learning_rate_fn] if learning_rate_fn else []) + scheduler:
    t5x.used.add((b.scope, b.selector, b.arg))
    conv.drop(b.where, b.key, t5x.resolve(b.value), "t5x's Trainer.learning_rate_fn only feeds the logged "
              'learning_rate when the optimizer is optax (OptaxWrapper trains with the optax learning_rate)')
