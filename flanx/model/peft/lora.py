"""LoRA (Hu et al. 2021) on chosen T5 projections, as Hugging Face `peft` defines it for T5.

A targeted projection y = x·W becomes y = x·W + dropout(x)·A·B · (alpha / r), with A [in, r] drawn like peft's
(kaiming-uniform, bound 1/sqrt(in)) and B [r, out] zero, so step 0 is the base model exactly. The adapter lives next
to its kernel (`…/query/lora_a`, `…/query/lora_b`) and is sharded like it: A on the kernel's input axis, B on its
output axis.

Targets use transformers' T5 module names — q, k, v, o (attention), wi, wi_0, wi_1, wo (MLP) — restricted to
the blocks named in `blocks`: 'encoder' (encoder self-attention), 'decoder' (decoder self-attention), 'cross'
(encoder-decoder attention) and 'mlp' (both stacks' MLPs). peft's `target_modules` is written from the same
choice, so an exported adapter applies to exactly these modules.

peft folder: adapter_config.json (peft_type LORA, r, lora_alpha, lora_dropout, target_modules as a regex matched
in full against module names) and `base_model.model.<transformers module>.lora_A.weight` [r, in] /
`….lora_B.weight` [out, r], i.e. flanx's `lora_a` [in, r] and `lora_b` [r, out] transposed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import gin

from flanx.model.peft.method import Method, fold_into_kernels

PyTree = Any

# flanx (t5x) module names → transformers' T5 module names.
HF_PROJECTION_NAMES = {'query': 'q', 'key': 'k', 'value': 'v', 'out': 'o', 'wi': 'wi', 'wi_0': 'wi_0',
                       'wi_1': 'wi_1', 'wo': 'wo'}
_BLOCKS = {'attention': 'encoder', 'self_attention': 'decoder', 'encoder_decoder_attention': 'cross', 'mlp': 'mlp'}
ADAPTER_LEAVES = ('lora_a', 'lora_b')
PEFT_PREFIX = 'base_model.model.'  # peft's key prefix in adapter_model.safetensors


def hf_module_name(module_path: Sequence[str]) -> str | None:
  """transformers' name (q, k, v, o, wi, wi_0, wi_1, wo) of a flanx projection module path, else None."""
  return HF_PROJECTION_NAMES.get(module_path[-1])


def module_block(module_path: Sequence[str]) -> str | None:
  """The LoraConfig block ('encoder', 'decoder', 'cross', 'mlp') a projection module path belongs to, else None."""
  return _BLOCKS.get(module_path[-2]) if len(module_path) >= 2 else None


@gin.configurable(module='flanx.model.peft')
@dataclasses.dataclass(frozen=True)
class LoraConfig(Method):
  """LoRA rank, scale (alpha / rank), dropout on the adapter's input, and where adapters go."""
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  target_modules: tuple[str, ...] = ('q', 'v')  # peft's default for T5
  blocks: tuple[str, ...] = ('encoder', 'decoder', 'cross', 'mlp')
  # Frozen base weights stored in this dtype on the device (bfloat16 halves their memory); adapters stay float32.
  base_dtype: str = 'float32'

  name = 'lora'
  peft_type = 'LORA'
  trained_leaves = ADAPTER_LEAVES
  can_merge = True

  def __post_init__(self):
    unknown = set(self.target_modules) - set(HF_PROJECTION_NAMES.values())
    if unknown or not self.target_modules:
      raise ValueError(f'LoraConfig.target_modules={self.target_modules!r}: choose from '
                       f'{sorted(set(HF_PROJECTION_NAMES.values()))}')
    if set(self.blocks) - set(_BLOCKS.values()) or not self.blocks:
      raise ValueError(f'LoraConfig.blocks={self.blocks!r}: choose from {sorted(set(_BLOCKS.values()))}')
    if self.rank < 1:
      raise ValueError(f'LoraConfig.rank must be positive, got {self.rank}')
    object.__setattr__(self, 'target_modules', tuple(self.target_modules))
    object.__setattr__(self, 'blocks', tuple(self.blocks))

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def targets(self, module_path: Sequence[str]) -> bool:
    """Whether the projection at this module path (e.g. encoder/layers_0/attention/query) gets an adapter."""
    return len(module_path) >= 2 and hf_module_name(module_path) in self.target_modules and (
        module_block(module_path) in self.blocks)

  def hf_target_regex(self) -> str:
    """peft's `target_modules` as a regex over transformers' module names (fullmatch), for exactly these targets."""
    stacks = {'encoder': r'encoder\.block\.\d+\.layer\.0\.SelfAttention',
              'decoder': r'decoder\.block\.\d+\.layer\.0\.SelfAttention',
              'cross': r'decoder\.block\.\d+\.layer\.1\.EncDecAttention',
              'mlp': r'(?:encoder\.block\.\d+\.layer\.1|decoder\.block\.\d+\.layer\.2)\.DenseReluDense'}
    attention = [m for m in self.target_modules if m in ('q', 'k', 'v', 'o')]
    mlp = [m for m in self.target_modules if m not in ('q', 'k', 'v', 'o')]
    parts = []
    for block in self.blocks:
      names = mlp if block == 'mlp' else attention
      if names:
        parts.append(f"{stacks[block]}\\.(?:{'|'.join(names)})")
    return r'.*(?:' + '|'.join(parts) + ')'

  def describe(self) -> str:
    return f'LoRA adapters (rank {self.rank})'

  def needs_dropout_rng(self) -> bool:
    return self.dropout > 0.0

  def dense(self, module: Any, x: Any, apply_kernel: Any) -> Any:
    """x·W + dropout(x)·A·B·(alpha/r): A kaiming-uniform (bound 1/sqrt(in)), B zero; sharded like the kernel."""
    y = apply_kernel(x)
    if not self.targets(module.scope.path):
      return y
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    fan_in, dtype = x.shape[-1], module.dtype
    bound = fan_in ** -0.5
    uniform = lambda key, shape, dt: jax.random.uniform(key, shape, dt, -bound, bound)
    a = module.param('lora_a', nn.with_logical_partitioning(uniform, (module.axes[0], None)), (fan_in, self.rank),
                     jnp.float32)
    b = module.param('lora_b', nn.with_logical_partitioning(nn.initializers.zeros, (None, module.axes[1])),
                     (self.rank, module.features), jnp.float32)
    x = nn.Dropout(self.dropout)(x, deterministic=module.deterministic)
    h = jnp.einsum('...d,dr->...r', x.astype(dtype), a.astype(dtype))
    return y + jnp.einsum('...r,rf->...f', h, b.astype(dtype)) * jnp.asarray(self.scale, dtype)

  def merge(self, params: PyTree) -> PyTree:
    """Folds every adapter into its kernel (kernel + A·B·scale) and drops the adapters: a plain model's params."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    def fold(_, module):
      a, b, kernel = (np.asarray(module[k], np.float32) for k in ('lora_a', 'lora_b', 'kernel'))
      return kernel + np.matmul(a, b) * self.scale

    return fold_into_kernels(params, 'lora_a', fold)

  def adapter_config(self, config: Any, base_model: str) -> dict[str, Any]:
    return {'peft_type': 'LORA', 'task_type': 'SEQ_2_SEQ_LM', 'r': self.rank, 'lora_alpha': self.alpha,
            'lora_dropout': self.dropout, 'target_modules': self.hf_target_regex(), 'bias': 'none',
            'fan_in_fan_out': False, 'inference_mode': True, 'init_lora_weights': True, 'use_rslora': False,
            'modules_to_save': None, 'base_model_name_or_path': base_model}

  def adapter_tensors(self, params: PyTree, config: Any) -> dict[str, Any]:
    """peft's state dict (float32) for the adapters in `params` (canonical or scanned)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
    out = {}
    for module_path, hf_module in hf_format.projection_modules(config):
      if not self.targets(module_path):
        continue
      for ours, theirs in (('lora_a', 'lora_A'), ('lora_b', 'lora_B')):
        value = np.asarray(hf_format.get_param(params, module_path + (ours,)), np.float32)
        out[f'{PEFT_PREFIX}{hf_module}.{theirs}.weight'] = np.ascontiguousarray(value.T)
    return out

  @classmethod
  def from_adapter(cls, settings: Mapping[str, Any], tensors: Mapping[str, Any], config: Any, folder: str
                   ) -> tuple[PyTree, 'LoraConfig']:
    """(flanx adapter params in `config`'s layout, its LoraConfig) from a peft LoRA folder (to continue tuning)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
    from flax import traverse_util  # pylint: disable=g-import-not-at-top
    from flanx.model import network  # pylint: disable=g-import-not-at-top
    modules = {}
    for key in tensors:
      match = re.fullmatch(re.escape(PEFT_PREFIX) + r'(.+)\.lora_([AB])(?:\.default)?\.weight', key)
      if not match:
        raise ValueError(f'{folder}: unexpected tensor {key!r}')
      modules.setdefault(match.group(1), {})[match.group(2)] = tensors[key]
    names = {hf: path for path, hf in hf_format.projection_modules(config)}
    unknown = sorted(set(modules) - set(names))
    if unknown:
      raise ValueError(f'{folder}: adapters on modules this model does not have: {unknown[:5]}')
    targets = {hf_module_name(names[hf]) for hf in modules}
    blocks = {module_block(names[hf]) for hf in modules}
    lora = cls(rank=int(settings['r']), alpha=float(settings['lora_alpha']),
               dropout=float(settings.get('lora_dropout') or 0.0), target_modules=tuple(sorted(targets)),
               blocks=tuple(sorted(blocks)))
    leaves = {}
    for hf, path in names.items():
      if lora.targets(path) and hf not in modules:
        raise ValueError(f'{folder}: no adapter for {hf}, which its target modules select')
      if lora.targets(path):
        leaves[path + ('lora_a',)] = modules[hf]['A'].T.astype(np.float32)
        leaves[path + ('lora_b',)] = modules[hf]['B'].T.astype(np.float32)
    return network.to_model_layout(config.replace(lora=lora), traverse_util.unflatten_dict(leaves)), lora

  def check_same_as(self, read: 'LoraConfig', folder: str) -> None:
    modules = lambda lora: [m for m in _all_projections() if lora.targets(m)]
    if read.scale != self.scale or read.rank != self.rank or modules(read) != modules(self):
      raise ValueError(
          f'{folder}: its adapter (rank {read.rank}, alpha {read.alpha}, modules {read.hf_target_regex()}) is not the '
          f'one this run trains (LoraConfig: rank {self.rank}, alpha {self.alpha}, modules '
          f'{self.hf_target_regex()}); set LoraConfig.rank = {read.rank}, LoraConfig.alpha = {read.alpha}, '
          f'LoraConfig.target_modules = {read.target_modules}, LoraConfig.blocks = {read.blocks}')


def _all_projections() -> list[tuple[str, str]]:
  """(block module, projection) name pairs of one layer of every stack: enough to compare two LoraConfigs."""
  return [(block, proj) for block in _BLOCKS for proj in HF_PROJECTION_NAMES]


def merge_lora(params: PyTree, lora: LoraConfig) -> PyTree:
  """Folds every adapter into its kernel and drops the adapters (LoraConfig.merge)."""
  return lora.merge(params)
