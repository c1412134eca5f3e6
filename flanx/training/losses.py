"""Token cross-entropy with z-loss and label smoothing, t5x's loss weights and loss-normalizing factors.

Per token (fp32, from logits [b, l, V] and int targets [b, l]), with log Z = logsumexp(logits):
  soft targets q: 1 - ls on the target, ls / (V - 1) elsewhere (t5x label smoothing)
  loss  = -sum_k q_k log softmax_k - H(q) + z_loss * (log Z)^2    (H(q) subtracted: a perfect fit costs 0)
computed as log Z - sum_k q_k x_k without a one-hot; the gradient is hand-written (custom_vjp over logits, CE
and z-loss together) so only the logits and log Z are kept for the backward pass, and the [tokens, vocab] logits
gradient is built once, in one pass. Accuracy comes from the same pass: a token counts as correct when its
target's logit equals the row's maximum (no separate argmax over the vocabulary; it differs from argmax only on
exact ties, where argmax would pick the lowest id).

The batch loss is sum(loss * weights) / loss_normalizing_factor, where the factor is (as in t5x):
  None                      -> no division: the summed loss (t5x default)
  a number                  -> that constant (233472 = 2048 * 114 for Flan-T5, pretrained in Mesh TF)
  'NUM_REAL_TARGET_TOKENS'  -> sum of the loss weights
  'NUM_TOTAL_TARGET_TOKENS' -> b * l
  'AVERAGE_PER_SEQUENCE'    -> weights are first divided by their sum within each sequence (each packed
                               segment, found by decoder_segment_ids), the factor is the sum of the new weights
                               (the number of sequences with any weight): every sequence counts equally.
With gradient accumulation, compute (weights, factor) once on the whole batch with loss_weights_and_factor and
pass the numeric factor to every microbatch's token_loss, so the accumulated loss equals the full-batch one.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
NormalizingFactor = Union[None, float, int, str, Array]
SPECIAL_FACTORS = ('NUM_REAL_TARGET_TOKENS', 'NUM_TOTAL_TARGET_TOKENS', 'AVERAGE_PER_SEQUENCE')


def _smoothing(label_smoothing: float, vocab_size: int) -> tuple[float, float, float]:
  """(confidence, low_confidence, entropy of the soft targets)."""
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1)
  entropy = -(confidence * np.log(confidence) if confidence > 0 else 0.0)
  entropy -= (vocab_size - 1) * low * np.log(low + 1e-20)
  return confidence, low, float(entropy)


def _forward(logits, targets, z_loss, label_smoothing):
  x = logits.astype(jnp.float32)
  row_max = jnp.max(x, axis=-1)
  log_z = row_max + jnp.log(jnp.sum(jnp.exp(x - row_max[..., None]), axis=-1))
  target_logit = jnp.take_along_axis(x, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  confidence, low, entropy = _smoothing(label_smoothing, x.shape[-1])
  cross_ent = log_z - (confidence - low) * target_logit
  if low:
    cross_ent = cross_ent - low * jnp.sum(x, axis=-1)
  z_term = z_loss * jnp.square(log_z)
  hit = (target_logit >= row_max).astype(jnp.float32)
  return cross_ent - entropy + z_term, z_term, hit, log_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cross_entropy_and_hits(logits: Array, targets: Array, z_loss: float,
                            label_smoothing: float) -> tuple[Array, Array, Array]:
  """Per-token (loss including z-loss, z-loss term, 1.0 where the target's logit is the maximum), float32."""
  loss, z_term, hit, _ = _forward(logits, targets, z_loss, label_smoothing)
  return loss, z_term, hit


def cross_entropy_with_logits(logits: Array, targets: Array, z_loss: float = 0.0,
                              label_smoothing: float = 0.0) -> tuple[Array, Array]:
  """Per-token (loss including z-loss, z-loss term), both float32 [b, l]."""
  loss, z_term, _ = _cross_entropy_and_hits(logits, targets, float(z_loss), float(label_smoothing))
  return loss, z_term


def _ce_fwd(logits, targets, z_loss, label_smoothing):
  loss, z_term, hit, log_z = _forward(logits, targets, z_loss, label_smoothing)
  return (loss, z_term, hit), (logits, targets, log_z)


def _ce_bwd(z_loss, label_smoothing, residuals, cotangents):
  logits, targets, log_z = residuals
  g_loss, g_z, _ = cotangents  # the hit flags are not differentiable
  confidence, low, _ = _smoothing(label_smoothing, logits.shape[-1])
  softmax = jnp.exp(logits.astype(jnp.float32) - log_z[..., None])
  # d loss = (1 + 2 z log Z) softmax - q ; d z_term = 2 z log Z softmax.
  softmax_coef = g_loss * (1.0 + 2.0 * z_loss * log_z) + g_z * 2.0 * z_loss * log_z
  is_target = jnp.arange(logits.shape[-1]) == targets[..., None]
  q = jnp.where(is_target, confidence, low)
  grad = softmax_coef[..., None] * softmax - g_loss[..., None] * q
  return grad.astype(logits.dtype), None


_cross_entropy_and_hits.defvjp(_ce_fwd, _ce_bwd)


def _per_sequence_sums(weights: Array, segment_ids: Array) -> Array:
  """For every token, the sum of the weights of the tokens in its row sharing its segment id."""
  length = weights.shape[-1]

  def one_row(w, seg):
    sums = jax.ops.segment_sum(w, seg, num_segments=length + 1)
    return sums[seg]

  return jax.vmap(one_row)(weights, segment_ids.astype(jnp.int32))


def loss_weights_and_factor(batch: Mapping[str, Any],
                            loss_normalizing_factor: NormalizingFactor = None) -> tuple[Optional[Array], Any]:
  """(per-token loss weights or None, numeric normalizing factor or None) for a t5x-style batch."""
  weights = batch.get('decoder_loss_weights')
  if loss_normalizing_factor is None or not isinstance(loss_normalizing_factor, str):
    return weights, loss_normalizing_factor
  name = loss_normalizing_factor.upper()
  if name not in SPECIAL_FACTORS:
    raise ValueError(f'loss_normalizing_factor {loss_normalizing_factor!r}: expected None, a number or one of '
                     f'{SPECIAL_FACTORS}')
  targets = batch['decoder_target_tokens']
  if weights is None:  # t5x: without explicit weights every non-padding target token counts
    weights = (targets > 0).astype(jnp.float32)
  weights = jnp.asarray(weights, jnp.float32)
  if name == 'NUM_REAL_TARGET_TOKENS':
    return weights, jnp.sum(weights)
  if name == 'NUM_TOTAL_TARGET_TOKENS':
    return weights, float(np.prod(targets.shape))
  segment_ids = batch.get('decoder_segment_ids')
  if segment_ids is not None:
    per_sequence = _per_sequence_sums(weights, segment_ids)
  else:
    per_sequence = jnp.sum(weights, axis=-1, keepdims=True)
  weights = jnp.where(per_sequence > 0, weights / jnp.where(per_sequence > 0, per_sequence, 1.0), 0.0)
  return weights, jnp.sum(weights)


def token_loss(logits: Array, targets: Array, weights: Optional[Array] = None, *, z_loss: float = 1e-4,
               label_smoothing: float = 0.0,
               loss_normalizing_factor: Union[None, float, Array] = None,
               per_example: bool = False) -> tuple[Array, dict[str, Array]]:
  """Weighted, normalized cross-entropy of logits [b, l, V] vs targets [b, l] and t5x's metric ingredients.

  per_example=True sums over the length axis only: every value is [b] (rank scoring, per-example eval).

  Returns (loss, aux) with aux: loss, z_loss, cross_ent_loss (loss - z_loss), all after normalization;
  weight_sum (the sum of weights: t5x's nonpadding token count), num_correct (weighted hits: target logit = max),
  accuracy = num_correct / weight_sum, num_tokens = b * l, loss_per_nonpadding_target_token = loss / weight_sum.
  """
  if logits.ndim != targets.ndim + 1 or logits.shape[:-1] != targets.shape:
    raise ValueError(f'token_loss: logits {logits.shape} do not match targets {targets.shape}')
  if isinstance(loss_normalizing_factor, str):
    raise ValueError('token_loss takes a numeric loss_normalizing_factor; resolve names with '
                     'loss_weights_and_factor first')
  per_token, z_term, correct = _cross_entropy_and_hits(logits, targets, float(z_loss), float(label_smoothing))
  total = functools.partial(jnp.sum, axis=-1) if per_example else jnp.sum
  if weights is None:
    weights = jnp.ones(targets.shape, jnp.float32)
  else:
    weights = jnp.asarray(weights, jnp.float32)
    per_token, z_term, correct = per_token * weights, z_term * weights, correct * weights
  weight_sum = total(weights)
  loss, z_total = total(per_token), total(z_term)
  if loss_normalizing_factor is not None:
    loss, z_total = loss / loss_normalizing_factor, z_total / loss_normalizing_factor
  num_correct = total(correct)
  aux = {
      'loss': loss,
      'z_loss': z_total,
      'cross_ent_loss': loss - z_total,
      'weight_sum': weight_sum,
      'num_correct': num_correct,
      'accuracy': num_correct / jnp.maximum(weight_sum, 1e-8),
      'num_tokens': jnp.asarray(float(np.prod(targets.shape[-1 if per_example else 0:])), jnp.float32),
      'loss_per_nonpadding_target_token': loss / jnp.maximum(weight_sum, 1e-8),
  }
  return loss, aux


def compute_loss(logits: Array, batch: Mapping[str, Any], *, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                 loss_normalizing_factor: NormalizingFactor = None) -> tuple[Array, dict[str, Array]]:
  """token_loss on a t5x-style batch (decoder_target_tokens, decoder_loss_weights, decoder_segment_ids)."""
  weights, factor = loss_weights_and_factor(batch, loss_normalizing_factor)
  return token_loss(logits, batch['decoder_target_tokens'], weights, z_loss=z_loss,
                    label_smoothing=label_smoothing, loss_normalizing_factor=factor)
