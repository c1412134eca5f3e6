"""The train step is independent of microbatching; eval and scoring share its forward pass (vs torch's CE)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from flanx.model import network
from flanx.training import adafactor, partitioning, steps


def _batch(rng: np.random.Generator, config, rows: int = 8, length: int = 12) -> dict[str, np.ndarray]:
  """Two packed segments per row, zero padding at the end, as seqio's packing converter lays them out."""
  enc = rng.integers(2, config.vocab_size, (rows, length)).astype(np.int32)
  dec_targets = rng.integers(2, config.vocab_size, (rows, length)).astype(np.int32)
  segments = np.repeat(np.array([[1] * 5 + [2] * 4 + [0] * 3]), rows, 0).astype(np.int32)
  positions = np.concatenate([np.arange(5), np.arange(4), np.zeros(3)])[None].repeat(rows, 0).astype(np.int32)
  enc, dec_targets = enc * (segments > 0), dec_targets * (segments > 0)
  dec_inputs = np.where(positions == 0, 0, np.roll(dec_targets, 1, axis=1)) * (segments > 0)
  return {'encoder_input_tokens': enc, 'decoder_input_tokens': dec_inputs.astype(np.int32),
          'decoder_target_tokens': dec_targets, 'decoder_loss_weights': (segments > 0).astype(np.float32),
          'encoder_segment_ids': segments, 'decoder_segment_ids': segments, 'encoder_positions': positions,
          'decoder_positions': positions}


def _run_steps(config, params, batches, num_microbatches):
  tx = adafactor.adafactor(1e-2, param_axes=network.logical_axes(config))
  mesh = partitioning.make_mesh()
  shardings = steps.make_shardings(config, tx, mesh, partitioning.axis_rules())
  state = steps.new_state(jax.device_put(params, shardings.params), tx, shardings)
  step = steps.make_train_step(config, tx, shardings, steps.LossConfig(loss_normalizing_factor='AVERAGE_PER_SEQUENCE'),
                               num_microbatches=num_microbatches)
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return losses, jax.tree.map(np.asarray, state.params)


@pytest.mark.slow
@pytest.mark.parametrize('num_microbatches', [2, 4])
def test_microbatching_gives_the_same_run(tiny_config, random_params, num_microbatches):
  config = tiny_config(dropout_rate=0.0)
  params = random_params(config)
  rng = np.random.default_rng(0)
  batches = [_batch(rng, config) for _ in range(3)]
  whole_losses, whole = _run_steps(config, params, batches, 1)
  micro_losses, micro = _run_steps(config, params, batches, num_microbatches)
  np.testing.assert_allclose(micro_losses, whole_losses, rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), micro, whole)


@pytest.mark.slow
def test_eval_and_scores_are_the_cross_entropy_of_the_same_forward(tiny_config, random_params, forward):
  config = tiny_config()
  params = random_params(config)
  batch = _batch(np.random.default_rng(1), config)
  mesh = partitioning.make_mesh()
  shardings = steps.make_shardings(config, None, mesh, partitioning.axis_rules())
  per_example = steps.make_eval_step(config, shardings, per_example=True)(params, batch)
  summed = steps.make_eval_step(config, shardings)(params, batch)

  logits = forward(config, params, *(batch[k] for k in ('encoder_input_tokens', 'decoder_input_tokens',
                                                          'encoder_segment_ids', 'decoder_segment_ids',
                                                          'encoder_positions', 'decoder_positions')))
  ce = torch.nn.functional.cross_entropy(torch.from_numpy(np.array(logits)).permute(0, 2, 1).double(),
                                         torch.from_numpy(batch['decoder_target_tokens']).long(),
                                         reduction='none').numpy()
  weights = batch['decoder_loss_weights']
  np.testing.assert_allclose(per_example['loss'], (ce * weights).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(per_example['weight_sum'], weights.sum(-1))
  correct = (logits.argmax(-1) == batch['decoder_target_tokens']) * weights
  np.testing.assert_allclose(per_example['num_correct'], correct.sum(-1))
  np.testing.assert_allclose(summed['loss'], (ce * weights).sum(), rtol=1e-5)
  metrics = steps.teacher_forced_metrics([summed])
  np.testing.assert_allclose(metrics['loss_per_nonpadding_target_token'], (ce * weights).sum() / weights.sum(),
                             rtol=1e-5)
