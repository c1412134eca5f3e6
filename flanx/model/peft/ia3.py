"""(IA)³ (Liu et al. 2022), as Hugging Face `peft`'s IA3 defines it for T5.

A learned vector rescales chosen projections: for a target module y = (x·W) ⊙ l (l [out]); for a target that is
also a feed-forward module the input is rescaled instead, y = (x ⊙ l)·W (l [in]). Vectors start at one, so step 0
is the base model exactly. peft's defaults for T5 (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and
…_FEEDFORWARD_MODULES_MAPPING): targets k, v, wo with wo feed-forward, in every block (peft matches module names
by suffix: encoder and decoder self-attention, cross-attention, both MLPs). flanx keeps l as `ia3_scale` next to
the kernel, sharded on the kernel's output (or, feed-forward, input) axis. Merging folds l into W's columns (rows).

peft folder: adapter_config.json (peft_type IA3, target_modules, feedforward_modules) and
`base_model.model.<transformers module>.ia3_l`: [out, 1], or [1, in] for a feed-forward module.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import gin

from flanx.model.peft.lora import HF_PROJECTION_NAMES, PEFT_PREFIX, hf_module_name
from flanx.model.peft.method import Method, fold_into_kernels

PyTree = Any


@gin.configurable(module='flanx.model.peft')
@dataclasses.dataclass(frozen=True)
class IA3Config(Method):
  """(IA)³: which projections (transformers' names) get a learned scale, and which of them scale their input."""
  target_modules: tuple[str, ...] = ('k', 'v', 'wo')  # peft's default for T5
  feedforward_modules: tuple[str, ...] = ('wo',)  # peft's default for T5
  base_dtype: str = 'float32'

  name = 'ia3'
  peft_type = 'IA3'
  trained_leaves = ('ia3_scale',)
  can_merge = True

  def __post_init__(self):
    object.__setattr__(self, 'target_modules', tuple(self.target_modules))
    object.__setattr__(self, 'feedforward_modules', tuple(self.feedforward_modules))
    names = set(HF_PROJECTION_NAMES.values())
    if set(self.target_modules) - names or not self.target_modules:
      raise ValueError(f'IA3Config.target_modules={self.target_modules!r}: choose from {sorted(names)}')
    if set(self.feedforward_modules) - set(self.target_modules):
      raise ValueError(f'IA3Config.feedforward_modules={self.feedforward_modules!r} must be among target_modules '
                       f'{self.target_modules!r} (as peft requires)')

  def describe(self) -> str:
    return f'(IA)³ scales on {", ".join(self.target_modules)}'

  def _scaled(self, module_path) -> tuple[bool, bool]:
    """(whether the projection at this module path gets a scale, whether it scales the input)."""
    name = hf_module_name(module_path) if len(module_path) >= 2 else None
    return name in self.target_modules, name in self.feedforward_modules

  def dense(self, module: Any, x: Any, apply_kernel: Any) -> Any:
    targeted, feedforward = self._scaled(module.scope.path)
    if not targeted:
      return apply_kernel(x)
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    size, axis = (x.shape[-1], module.axes[0]) if feedforward else (module.features, module.axes[1])
    scale = module.param('ia3_scale', nn.with_logical_partitioning(nn.initializers.ones, (axis,)), (size,),
                         jnp.float32).astype(module.dtype)
    return apply_kernel(x * scale) if feedforward else apply_kernel(x) * scale

  def merge(self, params: PyTree) -> PyTree:
    """Every scale folded into its kernel (kernel [in, out] times l on the out or, feed-forward, the in axis)."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    def fold(name, module):
      kernel, scale = np.asarray(module['kernel'], np.float32), np.asarray(module['ia3_scale'], np.float32)
      feedforward = HF_PROJECTION_NAMES.get(name) in self.feedforward_modules
      return kernel * (scale[..., :, None] if feedforward else scale[..., None, :])  # scanned: a leading layer axis

    return fold_into_kernels(params, 'ia3_scale', fold)

  def adapter_config(self, config: Any, base_model: str) -> dict[str, Any]:
    return {'peft_type': 'IA3', 'task_type': 'SEQ_2_SEQ_LM', 'target_modules': sorted(self.target_modules),
            'feedforward_modules': sorted(self.feedforward_modules), 'fan_in_fan_out': False,
            'init_ia3_weights': True, 'modules_to_save': None, 'inference_mode': True,
            'base_model_name_or_path': base_model}

  def adapter_tensors(self, params: PyTree, config: Any) -> dict[str, Any]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
    out = {}
    for module_path, hf_module in hf_format.projection_modules(config):
      targeted, feedforward = self._scaled(module_path)
      if targeted:
        value = np.asarray(hf_format.get_param(params, module_path + ('ia3_scale',)), np.float32)
        out[f'{PEFT_PREFIX}{hf_module}.ia3_l'] = np.ascontiguousarray(value[None, :] if feedforward else value[:, None])
    return out

  @classmethod
  def from_adapter(cls, settings: Mapping[str, Any], tensors: Mapping[str, Any], config: Any, folder: str
                   ) -> tuple[PyTree, 'IA3Config']:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
    from flax import traverse_util  # pylint: disable=g-import-not-at-top
    from flanx.model import network  # pylint: disable=g-import-not-at-top
    listed = lambda key: tuple(sorted([settings[key]] if isinstance(settings.get(key), str)
                                      else settings.get(key) or []))
    ia3 = cls(target_modules=listed('target_modules'), feedforward_modules=listed('feedforward_modules'))
    found = {}
    for key, value in tensors.items():
      match = re.fullmatch(re.escape(PEFT_PREFIX) + r'(.+)\.ia3_l(?:\.default)?', key)
      if not match:
        raise ValueError(f'{folder}: unexpected tensor {key!r}')
      found[match.group(1)] = np.asarray(value, np.float32).reshape(-1)
    leaves = {}
    for path, hf in hf_format.projection_modules(config):
      if ia3._scaled(path)[0] and hf not in found:
        raise ValueError(f'{folder}: no (IA)³ vector for {hf}, which its target modules select')
      if ia3._scaled(path)[0]:
        leaves[path + ('ia3_scale',)] = found.pop(hf)
    if found:
      raise ValueError(f'{folder}: (IA)³ vectors on modules its target modules do not select: {sorted(found)[:5]}')
    return network.to_model_layout(config.replace(ia3=ia3), traverse_util.unflatten_dict(leaves)), ia3

  def check_same_as(self, read: 'IA3Config', folder: str) -> None:
    if (sorted(read.target_modules), sorted(read.feedforward_modules)) != (
        sorted(self.target_modules), sorted(self.feedforward_modules)):
      raise ValueError(f'{folder}: its (IA)³ vectors ({read.target_modules}, feed-forward {read.feedforward_modules}) '
                       f'are not the ones this run trains; set IA3Config.target_modules = {read.target_modules}, '
                       f'IA3Config.feedforward_modules = {read.feedforward_modules}')
