"""The T5 v1.1 / Flan-T5 / UL2 (and T5 1.0) encoder-decoder, in Flax linen.

Linen rather than NNX because t5x's param-tree names (`encoder/layers_0/attention/query/kernel`) fall out of
module names, `nn.scan`/`nn.remat` lift whole layers, and `nn.with_logical_partitioning` gives every parameter
the logical axis names that `flanx.training.partitioning` maps onto a mesh: t5x checkpoints map 1:1.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flanx.model import peft
from flanx.model.config import T5Config

Array = jax.Array
PyTree = Any

_NEG_INF = -1e10  # additive mask value; finite so fully masked (padding) rows stay NaN-free


def _param(module: nn.Module, name: str, init: Callable, shape: tuple[int, ...], axes: tuple[str, ...]):
  """A float32 parameter annotated with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def _constrain(x: Array, axes: tuple[str, ...]) -> Array:
  return nn.with_logical_constraint(x, axes)


# ----------------------------------------------------------------------------------------------------------------
# Dots whose gradients XLA:CPU runs in YNNPACK. XLA:CPU hands a dot to YNNPACK only when its lhs contracts its
# trailing dims; the weight-gradient dots Xᵀ·dY that autodiff writes contract the leading (token / query) dims and
# fall back to Eigen at a fraction of the speed (benchmarks/hlo_dots.py lists them). The custom gradients below
# transpose the narrow operand in memory first, and compute bf16 dots with float32 accumulation (XLA:CPU turns a
# bf16-output dot into a float32 one). They are the CPU lowering only (`lax.platform_dependent`, decided when a
# step is lowered): TPU and GPU get the plain dots and autodiff's gradients, which their compilers plan best (the
# custom gradients' explicit residuals cost a v4-8 train step 1.7% more temporaries).

def _in_memory_transpose(x: Array, perm: tuple[int, ...]) -> Array:
  """x transposed in memory (folded into neither the dot before nor the dot after it)."""
  barrier = jax.lax.optimization_barrier
  return barrier(jnp.transpose(barrier(x), perm))


def _cpu_dot(a: Array, b: Array, dims: Any) -> Array:
  """dot_general in the operands' dtype; a bf16 dot accumulates into float32 and rounds once, which XLA:CPU runs
  in YNNPACK at bf16 speed (a bf16-output dot becomes a float32 dot with converts around it)."""
  if a.dtype == jnp.float32 and b.dtype == jnp.float32:
    return jax.lax.dot_general(a, b, dims)
  return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32).astype(a.dtype)


def _matmul_dims(x: Array) -> Any:
  return ((x.ndim - 1,), (0,)), ((), ())


def _plain_matmul(x: Array, kernel: Array) -> Array:
  return jax.lax.dot_general(x, kernel, _matmul_dims(x))


@jax.custom_vjp
def _cpu_matmul(x: Array, kernel: Array) -> Array:
  return _cpu_dot(x, kernel, _matmul_dims(x))


def _matmul_fwd(x, kernel):
  return _cpu_matmul(x, kernel), (x, kernel)


def _matmul_bwd(residuals, g):
  x, kernel = residuals
  n = x.ndim - 1
  g = g.astype(x.dtype)
  dx = _cpu_dot(g, kernel, (((n,), (1,)), ((), ())))
  dk = _cpu_dot(_in_memory_transpose(x, (n,) + tuple(range(n))), g,
                ((tuple(range(1, n + 1)), tuple(range(n))), ((), ())))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_cpu_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: Array, kernel: Array) -> Array:
  """x [..., d] · kernel [d, f] -> [..., f]; on CPU the kernel gradient is a plain [d, N] · [N, f] GEMM."""
  return jax.lax.platform_dependent(x, kernel, cpu=_cpu_matmul, default=_plain_matmul)


def _tn(a: Array, b: Array) -> Array:
  """aᵀ·b over the last two axes ([..., n, m], [..., n, p] -> [..., m, p]) as (bᵀ·a)ᵀ: only the narrow b
  ([..., n, d_kv]) and the result are transposed in memory, and the dot is a plain batched GEMM."""
  swap = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
  out_t = jnp.einsum('...pn,...nm->...pm', _in_memory_transpose(b, swap), a, preferred_element_type=jnp.float32)
  return _in_memory_transpose(out_t, swap)


def _plain_scores(q: Array, k: Array) -> Array:
  return jnp.einsum('bhqd,bhkd->bhqk', q, k, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _cpu_scores(q: Array, k: Array) -> Array:
  return _plain_scores(q, k)


def _scores_fwd(q, k):
  return _cpu_scores(q, k), (q, k)


def _scores_bwd(residuals, g):
  q, k = residuals
  g = g.astype(q.dtype)
  dq = jnp.einsum('bhqk,bhkd->bhqd', g, k, preferred_element_type=jnp.float32)
  return dq.astype(q.dtype), _tn(g, q).astype(k.dtype)


_cpu_scores.defvjp(_scores_fwd, _scores_bwd)


def attention_scores(q: Array, k: Array) -> Array:
  """q [b, h, q, d] · k [b, h, k, d] -> float32 scores [b, h, q, k]."""
  return jax.lax.platform_dependent(q, k, cpu=_cpu_scores, default=_plain_scores)


_VALUES_DIMS = (((3,), (2,)), ((0, 1), (0, 1)))


def _plain_values(weights: Array, v: Array) -> Array:
  return jnp.einsum('bhqk,bhkd->bhqd', weights, v)


@jax.custom_vjp
def _cpu_values(weights: Array, v: Array) -> Array:
  return _cpu_dot(weights.astype(v.dtype), v, _VALUES_DIMS)


def _values_fwd(weights, v):
  return _cpu_values(weights, v), (weights, v)


def _values_bwd(residuals, g):
  weights, v = residuals
  dw = jnp.einsum('bhqd,bhkd->bhqk', g, v, preferred_element_type=jnp.float32)
  return dw.astype(weights.dtype), _tn(weights, g).astype(v.dtype)


_cpu_values.defvjp(_values_fwd, _values_bwd)


def attention_values(weights: Array, v: Array) -> Array:
  """weights [b, h, q, k] · v [b, h, k, d] -> [b, h, q, d]."""
  return jax.lax.platform_dependent(weights, v, cpu=_cpu_values, default=_plain_values)


class LayerNorm(nn.Module):
  """RMS norm as T5 has it: no bias, no mean subtraction, computed in float32."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.config.layer_norm_eps)
    return (x32 * scale).astype(self.config.dtype)


# jax's truncated normal is cut at ±2 standard deviations; dividing by its std keeps the intended variance (t5x's
# variance_scaling(1.0, 'fan_in', 'truncated_normal')).
_TRUNCATED_NORMAL_STD = 0.87962566103423978


class Dense(nn.Module):
  """Bias-free projection; the kernel is [in, out] as in t5x (truncated: t5x's truncated-normal init)."""
  features: int
  axes: tuple[str, str]
  init_std: float
  dtype: str
  truncated: bool = False
  adapter: Any = None  # the model's PEFT method (flanx.model.peft), which may change this projection
  deterministic: bool = True  # the method's dropout only
  # The CPU-friendly custom gradient (`matmul`); off under remat='dots', whose policy must see the dot itself.
  custom_grad: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = (nn.initializers.truncated_normal(self.init_std / _TRUNCATED_NORMAL_STD) if self.truncated
            else nn.initializers.normal(self.init_std))
    kernel = _param(self, 'kernel', init, (x.shape[-1], self.features), self.axes)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    apply_kernel = (lambda x: matmul(x, kernel)) if self.custom_grad else (lambda x: _plain_matmul(x, kernel))
    return (self.adapter or peft.NO_PEFT).dense(self, x, apply_kernel)


class Embed(nn.Module):
  """The token embedding shared by encoder, decoder and (when tied) the output head."""
  config: T5Config

  def setup(self):
    c = self.config
    self.embedding = _param(self, 'embedding', nn.initializers.normal(1.0), (c.vocab_size, c.d_model),
                            ('vocab', 'embed'))

  def __call__(self, tokens: Array) -> Array:
    return jnp.take(self.embedding, tokens, axis=0).astype(self.config.dtype)

  def attend(self, x: Array) -> Array:
    """Float32 logits against the embedding matrix (tied head), as t5x's attend_dtype=float32."""
    return jnp.einsum('...d,vd->...v', x.astype(jnp.float32), self.embedding)


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """T5's bucketing of (memory - query) distances: exact when small, log-spaced up to max_distance."""
  n = -relative_position
  bucket = jnp.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket = jnp.where(n < 0, num_buckets, 0)
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  # Same float32 expression as the published implementations, so bucket edges agree exactly.
  log_ratio = jnp.log(jnp.maximum(n, max_exact).astype(jnp.float32) / max_exact) / np.log(max_distance / max_exact)
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(n.dtype)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(n < max_exact, n, large)


class RelativePositionBias(nn.Module):
  """One bias table per stack, shared by all its layers: [heads, buckets] → [batch, heads, q, k]."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    c = self.config
    table = _param(self, 'rel_embedding', nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),  # as t5x
                   (c.num_heads, c.relpos_buckets), ('heads', 'relpos_buckets'))
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    buckets = relative_position_bucket(relative, self.bidirectional, c.relpos_buckets, c.relpos_max_distance)
    return jnp.moveaxis(jnp.take(table, buckets, axis=1), 0, 1)  # [b, h, q, k], float32


class Attention(nn.Module):
  """Multi-head attention without the 1/sqrt(d_kv) logit scale (T5 folds it into the query init).

  In decode mode, self-attention keeps its keys/values in the 'cache' collection and writes one position per
  call; cross-attention computes the encoder keys/values once, when the cache is created.
  """
  config: T5Config
  deterministic: bool
  decode: bool = False
  cross: bool = False

  @nn.compact
  def __call__(self, x: Array, kv_inputs: Array | None, mask: Array, bias: Array | None,
               decode_index: Array | None = None, prefix: tuple[Array, Array] | None = None) -> Array:
    """`prefix` (prefix tuning): keys and values [n, heads, d_kv] attended before the layer's own; `mask` and
    `bias` already cover them."""
    c = self.config
    custom = c.remat != 'dots'
    dense = functools.partial(Dense, c.inner_dim, ('embed', 'joined_kv'), dtype=c.dtype, adapter=peft.method(c),
                              deterministic=self.deterministic, custom_grad=custom)
    # Queries, keys, values and the decode caches are [b, h, length, d]: every attention dot reads its operands
    # as stored (batch dims leading, contraction last), and the decode loop never transposes a cache.
    split = lambda t: _constrain(jnp.transpose(t.reshape(t.shape[:-1] + (c.num_heads, c.d_kv)), (0, 2, 1, 3)),
                                 ('batch', 'heads', 'length', 'kv'))
    q = split(dense(init_std=(c.d_model * c.d_kv) ** -0.5, name='query')(x))

    def project_kv():
      return (split(dense(init_std=c.d_model ** -0.5, name='key')(kv_inputs)),
              split(dense(init_std=c.d_model ** -0.5, name='value')(kv_inputs)))

    if self.decode and self.cross:
      if self.has_variable('cache', 'cached_key'):  # encoder keys/values were computed when the cache was made
        k, v = self.get_variable('cache', 'cached_key'), self.get_variable('cache', 'cached_value')
      else:
        k, v = project_kv()
        self.put_variable('cache', 'cached_key', k)
        self.put_variable('cache', 'cached_value', v)
    elif self.decode:
      initialized = self.has_variable('cache', 'cached_key')
      k, v = project_kv()
      cached_k = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
      cached_v = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
      if initialized:  # one new position: write it, then attend over the whole (masked) cache
        start = (0, 0, decode_index, 0)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, start)
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, start)
        k, v = cached_k.value, cached_v.value
    else:
      k, v = project_kv()
    if prefix is not None:  # prefix tuning: [n, h, d] keys/values before the layer's own, the same for every row
      lead = lambda p, t: jnp.concatenate(
          [jnp.broadcast_to(jnp.swapaxes(p, 0, 1).astype(t.dtype), t.shape[:1] + (p.shape[1], p.shape[0], p.shape[2])),
           t], axis=2)
      k, v = lead(prefix[0], k), lead(prefix[1], v)

    scores = (attention_scores(q, k) if custom
              else jnp.einsum('bhqd,bhkd->bhqk', q, k, preferred_element_type=jnp.float32))
    if bias is not None:
      scores = scores + bias
    scores = jnp.where(mask, scores, _NEG_INF)
    weights = jax.nn.softmax(scores, axis=-1)
    # t5x/flaxformer: one dropout mask per (batch, head, key), shared by all queries.
    weights = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(weights, deterministic=self.deterministic)
    weights = weights.astype(c.dtype)
    out = attention_values(weights, v) if custom else jnp.einsum('bhqk,bhkd->bhqd', weights, v)
    out = jnp.transpose(out, (0, 2, 1, 3)).reshape(out.shape[0], out.shape[2], c.inner_dim)
    return Dense(c.d_model, ('joined_kv', 'embed'), (c.num_heads * c.d_kv) ** -0.5, c.dtype,
                 adapter=peft.method(c), deterministic=self.deterministic, custom_grad=custom, name='out')(out)


# GeLU is the tanh approximation, gated or not (t5x's `gelu` is flax's, approximate=True; Flan-T5 trained so).
_ACTIVATIONS = {
    'gated-gelu': functools.partial(jax.nn.gelu, approximate=True),
    'gated-silu': jax.nn.silu,
    'relu': jax.nn.relu,
    'gated-relu': jax.nn.relu,
    'gelu': functools.partial(jax.nn.gelu, approximate=True),
}


class MlpBlock(nn.Module):
  """Feed-forward block: gated (wi_0 · act, wi_1) for v1.1/UL2, plain (wi) for T5 1.0."""
  config: T5Config
  deterministic: bool

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    act = _ACTIVATIONS[c.activation]
    wi = functools.partial(Dense, c.d_ff, ('embed', 'mlp'), c.d_model ** -0.5, c.dtype, truncated=True,
                           adapter=peft.method(c), deterministic=self.deterministic, custom_grad=c.remat != 'dots')
    if c.gated:
      h = act(wi(name='wi_0')(x)) * wi(name='wi_1')(x)
    else:
      h = act(wi(name='wi')(x))
    h = _constrain(h, ('batch', 'length', 'mlp'))
    # t5x drops out the hidden activations broadcast over length; HF drops element-wise.
    h = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(h, deterministic=self.deterministic)
    return Dense(c.d_model, ('mlp', 'embed'), c.d_ff ** -0.5, c.dtype, truncated=True, adapter=peft.method(c),
                 deterministic=self.deterministic, custom_grad=c.remat != 'dots', name='wo')(h)


def _dropout(config: T5Config, x: Array, deterministic: bool) -> Array:
  return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention and MLP sublayers, each with a residual."""
  config: T5Config
  deterministic: bool

  @nn.compact
  def __call__(self, x: Array, mask: Array, bias: Array) -> tuple[Array, None]:
    c, det = self.config, self.deterministic
    h = LayerNorm(c, name='pre_attention_layer_norm')(x)
    x = x + _dropout(c, Attention(c, det, name='attention')(h, h, mask, bias), det)
    h = LayerNorm(c, name='pre_mlp_layer_norm')(x)
    x = x + _dropout(c, MlpBlock(c, det, name='mlp')(h), det)
    return _constrain(x, ('batch', 'length', 'embed')), None


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention, cross-attention and MLP sublayers."""
  config: T5Config
  deterministic: bool
  decode: bool

  @nn.compact
  def __call__(self, x: Array, encoded: Array | None, self_mask: Array, self_bias: Array, cross_mask: Array,
               decode_index: Array | None, prefix: tuple[Array, Array] | None = None) -> tuple[Array, None]:
    c, det = self.config, self.deterministic
    h = LayerNorm(c, name='pre_self_attention_layer_norm')(x)
    h = Attention(c, det, self.decode, name='self_attention')(h, h, self_mask, self_bias, decode_index, prefix)
    x = x + _dropout(c, h, det)
    h = LayerNorm(c, name='pre_cross_attention_layer_norm')(x)
    h = Attention(c, det, self.decode, cross=True, name='encoder_decoder_attention')(h, encoded, cross_mask, None)
    x = x + _dropout(c, h, det)
    h = LayerNorm(c, name='pre_mlp_layer_norm')(x)
    x = x + _dropout(c, MlpBlock(c, det, name='mlp')(h), det)
    return _constrain(x, ('batch', 'length', 'embed')), None


_REMAT_POLICIES = {
    'full': None,
    'dots': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _run_layers(parent: nn.Module, layer_cls: type[nn.Module], num_layers: int, x: Array, *args,
                per_layer: Any = None, **layer_kwargs) -> Array:
  """Applies `num_layers` layers, looped (layers_i) or scanned (layers, leading 'layers' axis), remat optional.
  `per_layer` (a tree with a leading layer axis, or None) gives layer i its slice as the last argument."""
  c: T5Config = parent.config
  if c.remat != 'none':
    layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[c.remat], prevent_cse=not c.scan_layers)
  extra = () if per_layer is None else (per_layer,)
  if c.scan_layers:
    scanned = nn.scan(layer_cls, variable_axes={'params': 0, 'cache': 1}, split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * len(args) + (0,) * len(extra), length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
    x, _ = scanned(c, name='layers', **layer_kwargs)(x, *args, *extra)
    return x
  for i in range(num_layers):
    layer_extra = tuple(jax.tree.map(lambda t, i=i: t[i], e) for e in extra)
    x, _ = layer_cls(c, name=f'layers_{i}', **layer_kwargs)(x, *args, *layer_extra)
  return x


def _segment_mask(q_segments: Array, k_segments: Array) -> Array:
  return (q_segments[:, None, :, None] == k_segments[:, None, None, :])


class Encoder(nn.Module):
  """Bidirectional stack over (optionally packed) inputs."""
  config: T5Config
  embedder: Embed

  @nn.compact
  def __call__(self, tokens: Array, segment_ids: Array | None, positions: Array | None,
               deterministic: bool) -> Array:
    c = self.config
    valid = tokens > 0
    mask = valid[:, None, None, :] & valid[:, None, :, None]
    if segment_ids is not None:
      mask &= _segment_mask(segment_ids, segment_ids)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    bias = RelativePositionBias(c, bidirectional=True, name='relpos_bias')(positions, positions)
    x = peft.method(c).embed_inputs(self, self.embedder(tokens), positions)  # prompt tuning
    x = _dropout(c, x, deterministic)
    x = _constrain(x, ('batch', 'length', 'embed'))
    x = _run_layers(self, EncoderLayer, c.num_encoder_layers, x, mask, bias, deterministic=deterministic)
    x = LayerNorm(c, name='encoder_norm')(x)
    return nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)  # element-wise here, as t5x's network


class Decoder(nn.Module):
  """Causal stack with cross-attention; in decode mode it consumes one token per call using the cache."""
  config: T5Config
  embedder: Embed

  @nn.compact
  def __call__(self, encoded: Array | None, encoder_tokens: Array | None, tokens: Array,
               encoder_segment_ids: Array | None, segment_ids: Array | None, positions: Array | None,
               deterministic: bool, decode: bool) -> Array:
    c = self.config
    length = tokens.shape[1]
    decode_index = None
    if decode and self.has_variable('cache', 'decode_position'):
      # One step: the query is position `decode_index`; keys are the cache's slots up to and including it.
      position = self.variable('cache', 'decode_position', jnp.zeros, (), jnp.int32)
      decode_index = position.value
      position.value = decode_index + 1
      encoder_valid = self.get_variable('cache', 'encoder_valid')
      key_positions = self.get_variable('cache', 'key_positions')
      query_positions = jnp.full((tokens.shape[0], 1), decode_index)
      self_mask = (key_positions <= decode_index)[:, None, None, :]
    else:
      encoder_valid = encoder_tokens > 0
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(length), tokens.shape)
      if decode:  # creating the cache: remember what later single-token calls need
        self.put_variable('cache', 'decode_position', jnp.zeros((), jnp.int32))
        self.put_variable('cache', 'encoder_valid', encoder_valid)
        self.put_variable('cache', 'key_positions', positions)
      query_positions = key_positions = positions
      idx = jnp.arange(length)
      self_mask = (idx[None, :] <= idx[:, None])[None, None]
      if segment_ids is not None:
        self_mask = self_mask & _segment_mask(segment_ids, segment_ids)
    cross_mask = encoder_valid[:, None, None, :]
    if segment_ids is not None and encoder_segment_ids is not None:
      cross_mask = cross_mask & _segment_mask(segment_ids, encoder_segment_ids)
    relpos = RelativePositionBias(c, bidirectional=False, name='relpos_bias')
    self_bias = relpos(query_positions, key_positions)
    prefix = peft.method(c).decoder_prefix(self, c)  # prefix tuning: n keys/values before every layer's own
    if prefix is not None:  # they sit at positions -n..-1 before each segment's first token, visible to all
      n = prefix[0].shape[1]
      prefix_positions = jnp.broadcast_to(jnp.arange(-n, 0), (query_positions.shape[0], n))
      self_bias = jnp.concatenate([relpos(query_positions, prefix_positions), self_bias], axis=-1)
      self_mask = jnp.concatenate([jnp.ones(self_mask.shape[:-1] + (n,), bool), self_mask], axis=-1)

    x = _dropout(c, self.embedder(tokens), deterministic)
    x = _constrain(x, ('batch', 'length', 'embed'))
    x = _run_layers(self, DecoderLayer, c.num_decoder_layers, x, encoded, self_mask, self_bias, cross_mask,
                    decode_index, per_layer=prefix, deterministic=deterministic, decode=decode)
    x = LayerNorm(c, name='decoder_norm')(x)
    x = _dropout(c, x, deterministic)
    if c.tie_embeddings:
      logits = self.embedder.attend(x) * (c.d_model ** -0.5)
    else:
      # float32 logits for stability, as t5x (also in a bfloat16 model).
      logits = Dense(c.vocab_size, ('embed', 'vocab'), c.d_model ** -0.5, 'float32', truncated=True,
                     custom_grad=c.remat != 'dots',
                     name='logits_dense')(x)
    return _constrain(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))


class Transformer(nn.Module):
  """Encoder-decoder with a shared token embedding; logits are float32 [batch, target_length, vocab]."""
  config: T5Config

  def setup(self):
    self.token_embedder = Embed(self.config)
    self.encoder = Encoder(self.config, self.token_embedder)
    self.decoder = Decoder(self.config, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
             encoder_positions: Array | None = None, *, deterministic: bool = True) -> Array:
    """Encoder hidden states [batch, input_length, d_model]."""
    return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions, deterministic)

  def decode(self, encoded: Array | None, encoder_input_tokens: Array | None, decoder_input_tokens: Array,
             encoder_segment_ids: Array | None = None, decoder_segment_ids: Array | None = None,
             decoder_positions: Array | None = None, *, deterministic: bool = True, decode: bool = False) -> Array:
    """Decoder logits; with decode=True and an existing cache, one step for [batch, 1] tokens."""
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids,
                        decoder_segment_ids, decoder_positions, deterministic, decode)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               encoder_segment_ids: Array | None = None, decoder_segment_ids: Array | None = None,
               encoder_positions: Array | None = None, decoder_positions: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """Teacher-forced logits for a (packed or padded) batch."""
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions, deterministic=deterministic)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids,
                       decoder_segment_ids, decoder_positions, deterministic=deterministic)


# ----------------------------------------------------------------------------------------------------------------
# Params: init, abstract shapes, logical axes, scanned <-> canonical layout.

def _dummy_batch(config: T5Config, batch: int = 1, input_length: int = 2, target_length: int = 2):
  return jnp.ones((batch, input_length), jnp.int32), jnp.ones((batch, target_length), jnp.int32)


def init_params(config: T5Config, rng: Array) -> PyTree:
  """Freshly initialised float32 params (plain arrays, logical-axis boxes removed)."""
  model = Transformer(config)
  variables = model.init(rng, *_dummy_batch(config))
  return nn.unbox(variables['params'])


@functools.lru_cache(maxsize=32)
def _abstract_boxed(config: T5Config) -> PyTree:
  """The boxed (logically annotated) param shapes of `config`, traced once per config."""
  return jax.eval_shape(lambda: Transformer(config).init(jax.random.key(0), *_dummy_batch(config)))['params']


def abstract_params(config: T5Config) -> PyTree:
  """Param shapes/dtypes as jax.ShapeDtypeStruct, computed without allocating anything."""
  return nn.unbox(_abstract_boxed(config))


def logical_axes(config: T5Config) -> PyTree:
  """The logical axis names (a PartitionSpec of names) of every param, same tree as the params."""
  return nn.get_partition_spec(_abstract_boxed(config))


def param_count(config: T5Config) -> int:
  """Number of parameters, computed abstractly."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_params(config)))


def unstack_layers(params: PyTree) -> PyTree:
  """Scanned params (encoder/layers, decoder/layers with a leading layer axis) → canonical layers_i."""
  params = dict(params)
  for stack in ('encoder', 'decoder'):
    if stack in params and 'layers' in params[stack]:
      tree = dict(params[stack])
      stacked = tree.pop('layers')
      n = jax.tree.leaves(stacked)[0].shape[0]
      for i in range(n):
        tree[f'layers_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
      params[stack] = tree
  return params


def stack_layers(params: PyTree) -> PyTree:
  """Canonical layers_i params → the scanned layout (inverse of unstack_layers)."""
  params = dict(params)
  for stack in ('encoder', 'decoder'):
    if stack in params and 'layers_0' in params[stack]:
      tree = dict(params[stack])
      names = sorted((k for k in tree if k.startswith('layers_')), key=lambda k: int(k.split('_')[1]))
      layers = [tree.pop(k) for k in names]
      tree['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
      params[stack] = tree
  return params


def to_model_layout(config: T5Config, params: PyTree) -> PyTree:
  """Canonical or scanned params → the layout `config` expects."""
  return stack_layers(params) if config.scan_layers else unstack_layers(params)


# ----------------------------------------------------------------------------------------------------------------
# Incremental decoding.

def init_cache(config: T5Config, params: PyTree, encoded: Array, encoder_input_tokens: Array,
               max_decode_length: int) -> PyTree:
  """A decoder cache for `max_decode_length` steps; encoder keys/values are projected once, here.

  Leaves are either scalars shared by the batch (the decode position) or carry the batch axis first, so
  decoding code can tile and reorder them per beam.
  """
  model = Transformer(config)
  dummy = jnp.zeros((encoded.shape[0], max_decode_length), jnp.int32)
  _, variables = model.apply({'params': params}, encoded, encoder_input_tokens, dummy, decode=True,
                             mutable=['cache'], method=Transformer.decode)
  return variables['cache']


def make_step_fn(config: T5Config, params: PyTree) -> Callable[[Array, PyTree], tuple[Array, PyTree]]:
  """step_fn(tokens [b, 1], cache) -> (float32 logits [b, vocab], cache), for flanx.model.decoding."""
  model = Transformer(config)

  def step_fn(tokens: Array, cache: PyTree) -> tuple[Array, PyTree]:
    logits, variables = model.apply({'params': params, 'cache': cache}, None, None, tokens, decode=True,
                                    mutable=['cache'], method=Transformer.decode)
    return logits[:, -1, :], variables['cache']

  return step_fn
