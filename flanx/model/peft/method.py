"""The one interface every parameter-efficient tuning method implements (see flanx/model/peft/__init__.py).

A method is its config dataclass (gin-configurable, stored in the T5Config field named like the method) with these
hooks. The defaults leave the model untouched, so the network, the trainer and the exporters call them
unconditionally; a method overrides only what it changes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

PyTree = Any


class Method:
  """Hooks of one PEFT method; `self` is its config (LoraConfig, PromptConfig, PrefixConfig, IA3Config)."""
  name = ''  # the PEFT macro's value and the T5Config field that holds this config
  peft_type = ''  # Hugging Face peft's PeftType of the exported folder
  trained_leaves: tuple[str, ...] = ()  # names of the param leaves the method adds and trains
  can_merge = False  # whether `merge` folds the method into plain weights (--merge)
  base_dtype = 'float32'  # storage dtype of the frozen base (bfloat16 halves its memory)

  def describe(self) -> str:
    """How the run's log names what trains."""
    return self.name

  # --- the network (flanx.model.network calls these) -----------------------------------------------------------
  def dense(self, module: Any, x: Any, apply_kernel: Callable[[Any], Any]) -> Any:
    """A projection's output: `apply_kernel(x)` (x·W) changed by the method; `module` is the flax Dense."""
    del module
    return apply_kernel(x)

  def embed_inputs(self, module: Any, x: Any, positions: Any) -> Any:
    """The encoder's input embeddings [b, L, d] (positions: in-segment positions [b, L])."""
    del module, positions
    return x

  def decoder_prefix(self, module: Any, config: Any) -> Any:
    """Keys and values that lead every decoder self-attention: (k, v), each [layers, n, heads, d_kv], or None."""
    del module, config
    return None

  def prompt_length(self) -> int:
    """Placeholder tokens the inputs carry in front (flanx.training.data, InferenceModel)."""
    return 0

  def needs_dropout_rng(self) -> bool:
    """Whether the method's own dropout needs a key during training."""
    return False

  def needs_vocabulary(self) -> bool:
    """Whether `init_from_base` needs the task's vocabulary."""
    return False

  def init_from_base(self, params: PyTree, seed: int, encode: Callable[[str], Any] | None) -> PyTree:
    """The whole model's params with the trained part set from the pretrained base where the method says so."""
    del seed, encode
    return params

  # --- Hugging Face peft folders (flanx.interop.peft_adapter) -----------------------------------------------------
  def adapter_config(self, config: Any, base_model: str) -> dict[str, Any]:
    """adapter_config.json for a model `config` (T5Config) on `base_model`."""
    raise NotImplementedError

  def adapter_tensors(self, params: PyTree, config: Any) -> dict[str, Any]:
    """adapter_model.safetensors' tensors (float32 numpy, peft's key names) from the model's params."""
    raise NotImplementedError

  def merge(self, params: PyTree) -> PyTree:
    """A plain model's params with the method folded into the weights (only when `can_merge`)."""
    raise ValueError(f'{self.name} has no weights to fold into the base')

  @classmethod
  def from_adapter(cls, settings: Mapping[str, Any], tensors: Mapping[str, Any], config: Any, folder: str
                   ) -> tuple[PyTree, 'Method']:
    """(flanx params of the method in `config`'s layout, its config) read from a peft folder."""
    raise ValueError(f'{folder}: reading a {cls.peft_type} adapter back is not supported')

  def check_same_as(self, read: 'Method', folder: str) -> None:
    """Raises when an adapter read from `folder` is not the one this config trains (naming the bindings)."""
    if read != self:
      raise ValueError(f'{folder}: its adapter ({read}) is not the one this run trains ({self})')


def fold_into_kernels(params: PyTree, leaf: str, fold: Callable[[str, Mapping[str, Any]], Any]) -> PyTree:
  """`params` with every projection that holds `leaf` replaced by {'kernel': fold(its module name, its params)}:
  a merged model's params (canonical or scanned)."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict) and leaf in value:
      out[key] = {'kernel': fold(key, value)}
    elif isinstance(value, dict):
      out[key] = fold_into_kernels(value, leaf, fold)
    else:
      out[key] = value
  return out

