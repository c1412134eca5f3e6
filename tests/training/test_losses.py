"""flanx.training.losses against torch's cross_entropy, torch autograd and hand-written formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flanx.training import losses

B, L, V = 3, 7, 11


def _data(seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal((B, L, V))).astype(np.float32)
  targets = rng.integers(0, V, (B, L)).astype(np.int32)
  weights = (rng.random((B, L)) > 0.3).astype(np.float32)
  return logits, targets, weights


def _log_z(logits):
  x = logits.astype(np.float64)
  m = x.max(-1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def _smoothed_entropy(ls, v):
  low = ls / (v - 1)
  return -((1 - ls) * np.log(1 - ls) + (v - 1) * low * np.log(low))


def _torch_ce(logits, targets, weights, ls):
  """torch CE per token, its label smoothing rescaled to t5x's (ls on the V-1 wrong classes), ignored where w=0.

  torch gives every class ls_t / V; t5x gives the wrong ones ls / (V-1) and the target 1 - ls: ls_t = ls V / (V-1).
  """
  t = torch.tensor(np.where(weights > 0, targets, -100), dtype=torch.long).reshape(-1)
  out = F.cross_entropy(torch.tensor(logits, dtype=torch.float64).reshape(-1, V), t, ignore_index=-100,
                        reduction='none', label_smoothing=ls * V / (V - 1))
  return out.numpy().reshape(B, L)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_matches_torch_cross_entropy_and_hand_z_loss(label_smoothing):
  logits, targets, weights = _data()
  z = 1e-4
  loss, aux = losses.token_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), z_loss=z,
                                label_smoothing=label_smoothing)
  ce = _torch_ce(logits, targets, weights, label_smoothing)
  entropy = _smoothed_entropy(label_smoothing, V) if label_smoothing else 0.0
  z_terms = z * _log_z(logits) ** 2
  want_ce = np.sum((ce - entropy) * weights)
  want_z = np.sum(z_terms * weights)
  np.testing.assert_allclose(aux['z_loss'], want_z, rtol=1e-5)
  np.testing.assert_allclose(aux['cross_ent_loss'], want_ce, rtol=1e-5)
  np.testing.assert_allclose(loss, want_ce + want_z, rtol=1e-5)  # default factor None: the sum
  np.testing.assert_allclose(aux['weight_sum'], weights.sum())
  hits = (logits.argmax(-1) == targets) * weights
  np.testing.assert_allclose(aux['accuracy'], hits.sum() / weights.sum(), rtol=1e-6)


def test_num_real_target_tokens_equals_torch_mean_with_ignore_index():
  logits, targets, weights = _data(1)
  batch = {'decoder_target_tokens': jnp.asarray(targets), 'decoder_loss_weights': jnp.asarray(weights)}
  loss, _ = losses.compute_loss(jnp.asarray(logits), batch, z_loss=0.0,
                                loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  t = torch.tensor(np.where(weights > 0, targets, -100), dtype=torch.long).reshape(-1)
  want = F.cross_entropy(torch.tensor(logits).reshape(-1, V), t, ignore_index=-100, reduction='mean')
  np.testing.assert_allclose(loss, want.item(), rtol=1e-5)


def test_perfect_soft_prediction_costs_zero_with_label_smoothing():
  ls = 0.2
  targets = np.arange(B * L).reshape(B, L) % V
  q = np.full((B, L, V), ls / (V - 1))
  np.put_along_axis(q, targets[..., None], 1 - ls, axis=-1)
  loss, _ = losses.token_loss(jnp.asarray(np.log(q), jnp.float32), jnp.asarray(targets), label_smoothing=ls,
                              z_loss=1e-4)  # log Z = 0: no z-loss either
  assert abs(float(loss)) < 1e-4


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_gradient_matches_torch_autograd(label_smoothing):
  logits, targets, weights = _data(2)
  z = 1e-2  # large enough for the z-loss gradient to matter

  def f(x):
    return losses.token_loss(x, jnp.asarray(targets), jnp.asarray(weights), z_loss=z,
                             label_smoothing=label_smoothing, loss_normalizing_factor=5.0)[0]

  grad = jax.grad(f)(jnp.asarray(logits))
  x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
  w = torch.tensor(weights, dtype=torch.float64)
  ce = F.cross_entropy(x.reshape(-1, V), torch.tensor(targets, dtype=torch.long).reshape(-1), reduction='none',
                       label_smoothing=label_smoothing * V / (V - 1)).reshape(B, L)
  total = ((ce + z * torch.logsumexp(x, -1) ** 2) * w).sum() / 5.0
  total.backward()
  np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-4, atol=1e-7)
  # The z-loss output's own cotangent is honoured too (t5x drops it; it is only logged there).
  gz = jax.grad(lambda x: losses.token_loss(x, jnp.asarray(targets), z_loss=z)[1]['z_loss'])(jnp.asarray(logits))
  xt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
  (z * torch.logsumexp(xt, -1) ** 2).sum().backward()
  np.testing.assert_allclose(gz, xt.grad.numpy(), rtol=1e-4, atol=1e-8)


def test_bfloat16_logits_give_float32_loss_and_bfloat16_grads():
  logits, targets, _ = _data(3)
  x = jnp.asarray(logits, jnp.bfloat16)
  loss, _ = losses.token_loss(x, jnp.asarray(targets))
  assert loss.dtype == jnp.float32
  want = np.sum(_log_z(np.asarray(x, np.float32)) - np.take_along_axis(np.asarray(x, np.float32),
                                                                       targets[..., None], -1)[..., 0])
  np.testing.assert_allclose(loss, want + 1e-4 * np.sum(_log_z(np.asarray(x, np.float32)) ** 2), rtol=1e-5)
  grad = jax.grad(lambda x: losses.token_loss(x, jnp.asarray(targets))[0])(x)
  assert grad.dtype == jnp.bfloat16


def _per_token_ce(logits, targets):
  return _log_z(logits) - np.take_along_axis(logits.astype(np.float64), targets[..., None], -1)[..., 0]


def test_normalizing_factors():
  logits, targets, weights = _data(4)
  targets = np.where(weights > 0, np.maximum(targets, 1), 0)  # padding target 0 wherever weight is 0
  tok = _per_token_ce(logits, targets)
  x = jnp.asarray(logits)
  batch = {'decoder_target_tokens': jnp.asarray(targets), 'decoder_loss_weights': jnp.asarray(weights)}
  for factor, want in [(None, np.sum(tok * weights)),
                       (233472.0, np.sum(tok * weights) / 233472.0),
                       ('num_total_target_tokens', np.sum(tok * weights) / (B * L)),
                       ('NUM_REAL_TARGET_TOKENS', np.sum(tok * weights) / weights.sum())]:
    loss, _ = losses.compute_loss(x, batch, z_loss=0.0, loss_normalizing_factor=factor)
    np.testing.assert_allclose(loss, want, rtol=1e-5, err_msg=str(factor))
  # Without decoder_loss_weights, a special factor counts the non-padding targets (t5x).
  loss, aux = losses.compute_loss(x, {'decoder_target_tokens': jnp.asarray(targets)}, z_loss=0.0,
                                  loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')
  np.testing.assert_allclose(loss, np.sum(tok * (targets > 0)) / np.sum(targets > 0), rtol=1e-5)
  # Unpacked AVERAGE_PER_SEQUENCE: mean over rows of each row's mean token loss.
  loss, aux = losses.compute_loss(x, batch, z_loss=0.0, loss_normalizing_factor='AVERAGE_PER_SEQUENCE')
  row_means = [np.sum(tok[i] * weights[i]) / weights[i].sum() for i in range(B)]
  np.testing.assert_allclose(loss, np.mean(row_means), rtol=1e-5)
  np.testing.assert_allclose(aux['weight_sum'], B, rtol=1e-6)


def test_average_per_sequence_packed():
  rng = np.random.default_rng(5)
  seg = np.array([[1, 1, 1, 2, 2, 3, 0],   # three packed examples, then padding
                  [1, 1, 1, 1, 1, 1, 1],   # one example filling the row
                  [1, 2, 2, 2, 3, 3, 0]])
  weights = (seg > 0).astype(np.float32)
  weights[2, 1:4] = 0.0  # an example with no loss weight at all: contributes nothing
  positions = np.zeros_like(seg)
  for i in range(B):
    for j in range(1, L):
      positions[i, j] = positions[i, j - 1] + 1 if seg[i, j] == seg[i, j - 1] else 0
  logits = rng.standard_normal((B, L, V)).astype(np.float32)
  targets = np.where(seg > 0, rng.integers(1, V, (B, L)), 0)
  tok = _per_token_ce(logits, targets)
  means = []
  for i in range(B):
    for s in range(1, seg[i].max() + 1):
      w = weights[i] * (seg[i] == s)
      if w.sum() > 0:
        means.append(np.sum(tok[i] * w) / w.sum())
  batch = {'decoder_target_tokens': jnp.asarray(targets), 'decoder_loss_weights': jnp.asarray(weights),
           'decoder_segment_ids': jnp.asarray(seg), 'decoder_positions': jnp.asarray(positions)}
  average = jax.jit(lambda x, b: losses.compute_loss(x, b, z_loss=0.0,
                                                     loss_normalizing_factor='AVERAGE_PER_SEQUENCE'))
  loss, aux = average(jnp.asarray(logits), batch)
  assert len(means) == 6
  np.testing.assert_allclose(loss, np.mean(means), rtol=1e-5)
  np.testing.assert_allclose(aux['weight_sum'], 6.0, rtol=1e-6)


def test_bad_inputs_are_rejected():
  logits, targets, _ = _data()
  with pytest.raises(ValueError, match='AVERAGE_PER_TOKEN'):
    losses.compute_loss(jnp.asarray(logits), {'decoder_target_tokens': jnp.asarray(targets)},
                        loss_normalizing_factor='AVERAGE_PER_TOKEN')
  with pytest.raises(ValueError, match='do not match'):
    losses.token_loss(jnp.asarray(logits), jnp.asarray(targets[:, :-1]))
