"""Import-time registrations and the gin settings they read.

`import tasks` registers the default tasks by calling gin-configurable functions (`register_dolly`,
`register_cot`, `register_flan2022`, `register_dolly_flan`). Their arguments (Dolly's `on_error`, the CoT
`datasets` list, Flan caps, ...) are read at that moment. t5x parses gin before it imports the task module,
so its bindings apply. A program that imports the module first (so that gin knows the names) and parses
gin afterwards must call `reapply()` after parsing; flanx's command lines do. Building a dataset while a
binding of a registration function differs from what it ran with is an error (`check()`), never a
silently ignored setting.
"""

from typing import Any, Callable, Dict, List

import gin

# (function, the gin bindings it ran with), in registration order.
_TRACKED: List[List[Any]] = []


class StaleRegistrationError(RuntimeError):
  """A gin binding of a registration function set after that registration ran."""


def _name(fn: Callable[..., Any]) -> str:
  return f'{fn.__module__}.{fn.__name__}'


def track(fn: Callable[..., Any], call: bool = True) -> Any:
  """Runs the gin-configurable registration `fn()` (call=False: it has just run) and remembers the gin
  bindings it ran with; returns what `fn` returned."""
  result = fn() if call else None
  bindings = dict(gin.get_bindings(fn))
  for entry in _TRACKED:
    if entry[0] is fn:
      entry[1] = bindings
      return result
  _TRACKED.append([fn, bindings])
  return result


def stale() -> Dict[str, Dict[str, Any]]:
  """{registration: {parameter: binding now}} for registrations whose gin bindings changed since they ran."""
  out = {}
  for fn, used in _TRACKED:
    now = dict(gin.get_bindings(fn))
    if now != used:
      out[_name(fn)] = {k: v for k, v in now.items() if used.get(k, object()) != v} or now
  return out


def reapply() -> List[str]:
  """Re-runs the registrations from the first stale one on, in order (later ones may hold its tasks in
  mixtures), with the current gin bindings; returns their names. Call after parsing gin."""
  redo = False
  names = []
  for entry in _TRACKED:
    fn, used = entry
    redo = redo or dict(gin.get_bindings(fn)) != used
    if redo:
      fn()
      entry[1] = dict(gin.get_bindings(fn))
      names.append(_name(fn))
  return names


def check() -> None:
  """Raises StaleRegistrationError when a registration's gin bindings changed after it ran."""
  changed = stale()
  if changed:
    detail = '; '.join(f'{name}: {params}' for name, params in changed.items())
    raise StaleRegistrationError(
        f'gin bindings set after the tasks were registered cannot take effect any more ({detail}). '
        'Call tasks.registrations.reapply() after parsing gin (flanx does), or parse gin before importing '
        'the task module (t5x does).')
