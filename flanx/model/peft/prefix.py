"""Prefix tuning (Li & Liang 2021), as Hugging Face `peft`'s PREFIX_TUNING computes it for T5.

peft learns one tensor P [n, 2·L·inner] (n = num_virtual_tokens, L = the encoder's layer count, peft's
`num_layers`, inner = heads·d_kv, peft's `token_dim`) and reads it as n virtual key/value positions per attention:
viewed [n, 2L, heads, d_kv], doubled to 4L entries for the encoder-decoder model's two submodules and cut into L
groups of four (self key, self value, cross key, cross value) per decoder layer. For T5 its cache then drops the
cross-attention entries, and T5's encoder takes no cache, so what the model sees is: decoder layer i's
self-attention attends first to the n prefix keys P[:, (4i) mod 2L] with values P[:, (4i+1) mod 2L], then to its
own (causal) keys; encoder and cross-attention are untouched. With L > 2 the layers i and i + L/2 share a prefix
(and half of P is never read): that is peft's arithmetic, kept so exported adapters give flanx's logits. The
decoder's positions count from n (T5 sees the prefix as cache positions 0..n-1), so the relative-position bias
of prefix key j for a query at in-segment position q is that of the distance (j - n) - q; among real tokens nothing
changes. flanx keeps P as `decoder/prefix_embedding` (peft's own layout), or, with `prefix_projection`, computes
it as peft's prefix encoder does: an embedding [n, inner] through Linear(inner, encoder_hidden_size) · tanh ·
Linear(·, 2·L·inner), trained whole (`decoder/prefix_embedding`, `prefix_w1`, `prefix_b1`, `prefix_w2`,
`prefix_b2`). Each packed segment sees the same prefix at the same relative distances as an unpacked example.

peft folder: adapter_config.json (peft_type PREFIX_TUNING, num_virtual_tokens, token_dim = inner,
num_transformer_submodules 2, num_attention_heads, num_layers, prefix_projection, encoder_hidden_size) and one
tensor, `prompt_embeddings` [n, 2·L·inner]: P itself (with projection, the projected P, which peft's inference
mode reads directly).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import gin

from flanx.model.peft.method import Method

PyTree = Any


@gin.configurable(module='flanx.model.peft')
@dataclasses.dataclass(frozen=True)
class PrefixConfig(Method):
  """Prefix tuning: how many virtual key/value positions lead the decoder's self-attention (see the module doc)."""
  num_virtual_tokens: int = 20  # peft has no default; 20 is its documentation's example
  prefix_projection: bool = False  # peft's default: train P directly
  encoder_hidden_size: int | None = None  # projection's hidden size; None = token_dim, as peft
  base_dtype: str = 'float32'

  name = 'prefix'
  peft_type = 'PREFIX_TUNING'
  trained_leaves = ('prefix_embedding', 'prefix_w1', 'prefix_b1', 'prefix_w2', 'prefix_b2')

  def __post_init__(self):
    if self.num_virtual_tokens < 1:
      raise ValueError(f'PrefixConfig.num_virtual_tokens must be positive, got {self.num_virtual_tokens}')

  def describe(self) -> str:
    return f'a {self.num_virtual_tokens}-position prefix' + (' (projected)' if self.prefix_projection else '')

  def decoder_prefix(self, module: Any, config: Any) -> Any:
    """(k, v) [L, n, heads, d_kv] for decoder layers 0..L-1, from the trained params in the decoder's scope."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    layers, n, inner = config.num_encoder_layers, self.num_virtual_tokens, config.inner_dim
    if config.num_decoder_layers != layers:
      raise ValueError(f'PrefixConfig: peft sizes the prefix by the encoder\'s {layers} layers; this model\'s decoder '
                       f'has {config.num_decoder_layers} (prefix tuning needs equal stacks)')
    param = lambda name, init, shape, axes: module.param(name, nn.with_logical_partitioning(init, axes), shape,
                                                         jnp.float32)
    width = 2 * layers * inner
    if self.prefix_projection:
      hidden = self.encoder_hidden_size or inner
      embedding = param('prefix_embedding', nn.initializers.normal(1.0), (n, inner), (None, None))
      w1 = param('prefix_w1', _torch_linear_init(inner), (inner, hidden), (None, None))
      b1 = param('prefix_b1', _torch_linear_init(inner), (hidden,), (None,))
      w2 = param('prefix_w2', _torch_linear_init(hidden), (hidden, width), (None, None))
      b2 = param('prefix_b2', _torch_linear_init(hidden), (width,), (None,))
      table = jnp.tanh(embedding @ w1 + b1) @ w2 + b2
    else:
      table = param('prefix_embedding', nn.initializers.normal(1.0), (n, width), (None, None))
    table = table.reshape(n, 2 * layers, config.num_heads, config.d_kv).astype(config.dtype)
    index = jnp.arange(layers) * 4 % (2 * layers)
    return jnp.moveaxis(table[:, index], 1, 0), jnp.moveaxis(table[:, index + 1], 1, 0)

  def adapter_config(self, config: Any, base_model: str) -> dict[str, Any]:
    return {'peft_type': 'PREFIX_TUNING', 'task_type': 'SEQ_2_SEQ_LM', 'num_virtual_tokens': self.num_virtual_tokens,
            'token_dim': config.inner_dim, 'num_transformer_submodules': 2, 'num_attention_heads': config.num_heads,
            'num_layers': config.num_encoder_layers, 'prefix_projection': self.prefix_projection,
            'encoder_hidden_size': self.encoder_hidden_size or config.inner_dim, 'inference_mode': True,
            'modules_to_save': None, 'base_model_name_or_path': base_model}

  def adapter_tensors(self, params: PyTree, config: Any) -> dict[str, Any]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    return {'prompt_embeddings': np.ascontiguousarray(prefix_table(params['decoder'], self), np.float32)}

  @classmethod
  def from_adapter(cls, settings: Mapping[str, Any], tensors: Mapping[str, Any], config: Any, folder: str
                   ) -> tuple[PyTree, 'PrefixConfig']:
    import numpy as np  # pylint: disable=g-import-not-at-top
    if settings.get('token_dim') != config.inner_dim or settings.get('num_layers') != config.num_encoder_layers:
      raise ValueError(f'{folder}: a prefix for token_dim {settings.get("token_dim")}, {settings.get("num_layers")} '
                       f'layers; this model has inner dim {config.inner_dim}, {config.num_encoder_layers} layers')
    table = np.asarray(tensors['prompt_embeddings'], np.float32)  # projected or not, peft saves P itself
    return {'decoder': {'prefix_embedding': table}}, cls(num_virtual_tokens=int(settings['num_virtual_tokens']))

  def check_same_as(self, read: 'PrefixConfig', folder: str) -> None:
    if read.num_virtual_tokens != self.num_virtual_tokens or self.prefix_projection:
      raise ValueError(f'{folder}: its prefix ({read.num_virtual_tokens} positions, unprojected) is not the one this '
                       f'run trains; set PrefixConfig.num_virtual_tokens = {read.num_virtual_tokens}, '
                       'PrefixConfig.prefix_projection = False')


def prefix_table(decoder_params: PyTree, prefix: PrefixConfig) -> Any:
  """P [n, 2·L·inner] (float32 numpy) from the decoder's prefix params (computed through the projection if any)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  get = lambda name: np.asarray(decoder_params[name], np.float32)
  if not prefix.prefix_projection:
    return get('prefix_embedding')
  return np.tanh(get('prefix_embedding') @ get('prefix_w1') + get('prefix_b1')) @ get('prefix_w2') + get('prefix_b2')


def _torch_linear_init(fan_in: int) -> Any:
  """torch.nn.Linear's default initialisation: uniform in ±1/sqrt(fan_in) (weights and biases)."""
  import jax  # pylint: disable=g-import-not-at-top
  bound = fan_in ** -0.5
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
