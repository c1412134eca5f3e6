"""Parameter-efficient tuning: LoRA, prompt tuning, prefix tuning and (IA)³ as plug-ins behind one interface.

Each method is one module here (lora.py, prompt.py, prefix.py, ia3.py): a gin-configurable config dataclass that
implements `Method` (method.py): which params it adds and trains, how they start, how it changes the network
(a projection, the encoder's input embeddings, the decoder's self-attention keys), how it exports to and reads
from a Hugging Face `peft` folder, and whether it merges into the weights. A run picks one with the macro
`PEFT = '<name>'`, which puts the method's config (default bindings) into the T5Config field of the same name.
Adding a method: its module, an entry in METHODS below and that T5Config field (and its config's name in
flanx.training.recorded_config.DESCRIBING, so an export reads it from the recorded config; a test checks).

Everything else (network, steps, trainer, inference, export) calls the hooks of `method(config)` without asking
which method it is; with no method the hooks leave the model as it is (full fine-tuning).
"""

from __future__ import annotations

from typing import Any, Sequence

# The methods' configs and the helpers other modules and gin files use, re-exported under flanx.model.peft.
from flanx.model.peft.ia3 import IA3Config
from flanx.model.peft.lora import (ADAPTER_LEAVES, HF_PROJECTION_NAMES, LoraConfig, hf_module_name, merge_lora,
                                   module_block)
from flanx.model.peft.method import Method
from flanx.model.peft.prefix import PrefixConfig
from flanx.model.peft.prompt import (PROMPT_INITS, PROMPT_PLACEHOLDER_ID, PromptConfig, add_prompt_placeholders,
                                     prompt_init_ids)

PyTree = Any

# name (the PEFT macro's value, the T5Config field) → the method's config class.
METHODS: dict[str, type[Method]] = {m.name: m for m in (LoraConfig, PromptConfig, PrefixConfig, IA3Config)}
_TRAINED_LEAVES = frozenset(leaf for m in METHODS.values() for leaf in m.trained_leaves)
NO_PEFT = Method()  # full fine-tuning: every hook leaves the model unchanged


def method(config: Any) -> Method:
  """The PEFT method `config` (a T5Config) trains with, or NO_PEFT."""
  chosen = [getattr(config, name) for name in METHODS if getattr(config, name, None) is not None]
  if len(chosen) > 1:
    raise ValueError(f'T5Config sets {len(chosen)} PEFT methods ({", ".join(m.name for m in chosen)}); choose one')
  return chosen[0] if chosen else NO_PEFT


def configure(config: Any, name: str | None) -> Any:
  """The model config for a run's PEFT setting: None (full fine-tuning) or a METHODS name (its gin-bound config)."""
  if name in (None, '', 'none'):
    return config
  if name not in METHODS:
    raise ValueError(f'PEFT={name!r}: expected None or one of {sorted(METHODS)}')
  return config if getattr(config, name) is not None else config.replace(**{name: METHODS[name]()})


def is_peft(config: Any) -> bool:
  """Whether `config` trains a PEFT method on a frozen base."""
  return method(config) is not NO_PEFT


def base_config(config: Any) -> Any:
  """The plain model a PEFT config adapts (no method)."""
  return config.replace(**{name: None for name in METHODS})


def base_dtype(config: Any) -> str:
  """The storage dtype of a PEFT run's frozen base ('float32' otherwise)."""
  return method(config).base_dtype


def prompt_length(config: Any) -> int:
  """How many placeholder tokens lead every encoder input (0 without prompt tuning)."""
  return method(config).prompt_length()


def is_adapter_path(path: Sequence[Any]) -> bool:
  """Whether a param (key path) is one a PEFT method adds and trains."""
  return getattr(path[-1], 'key', path[-1]) in _TRAINED_LEAVES


def split_trainable(params: dict) -> tuple[dict, dict]:
  """(adapter params, frozen base params): two nested dicts with disjoint leaves."""
  trainable, frozen = {}, {}
  for key, value in params.items():
    if isinstance(value, dict):
      t, f = split_trainable(value)
      if t:
        trainable[key] = t
      if f:
        frozen[key] = f
    elif is_adapter_path([key]):
      trainable[key] = value
    else:
      frozen[key] = value
  return trainable, frozen


def trained_part(config: Any, tree: PyTree) -> tuple[PyTree, PyTree]:
  """(trained, frozen) halves of a param-shaped tree: all and None, or the method's params and the base."""
  return split_trainable(tree) if is_peft(config) else (tree, None)


def combine(trainable: dict, frozen: dict) -> dict:
  """The full param tree from its two halves (inverse of split_trainable)."""
  out = dict(frozen)
  for key, value in trainable.items():
    out[key] = combine(value, out.get(key, {})) if isinstance(value, dict) else value
  return out


def resume_signature(config: Any, base: str | None) -> dict[str, Any]:
  """What a PEFT run resumes only with, beyond its T5Config (whose method field holds the PEFT settings): the frozen
  base it trained on."""
  return {'INITIAL_CHECKPOINT_PATH': base} if is_peft(config) else {}


# The run-signature keys a resumed run must match (flanx.training.run_checks): every method's settings, the base.
RESUME_KEYS = tuple(f'T5Config.{name}' for name in METHODS) + ('INITIAL_CHECKPOINT_PATH',)


def check_export_mode(config: Any, adapter_only: bool, merge: bool, where: str) -> None:
  """Refuses export flags the run cannot honour: --adapter_only/--merge need a PEFT run; a PEFT run needs one of
  them (--adapter_only only, for a method that cannot merge)."""
  m = method(config)
  if m is NO_PEFT:
    if adapter_only or merge:
      raise ValueError(f'{where}: --adapter_only/--merge need a PEFT run (PEFT = one of {sorted(METHODS)}); this '
                       'run tuned the whole model')
  elif not m.can_merge and not adapter_only:
    raise ValueError(f'{where} holds {m.describe()}: pass --adapter_only (a peft {m.peft_type} folder); it has no '
                     'weights to --merge into')
  elif m.can_merge and adapter_only == merge:
    raise ValueError(f'{where} holds {m.describe()}: pass --adapter_only (a peft adapter folder) or --merge '
                     '(a plain Hugging Face folder with them folded in)')
