"""LoRA: the base model exactly at step 0, frozen weights untouched by training, merged == unmerged."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flanx.model import network, peft
from flanx.training import adafactor, partitioning, steps


def _batch(rng, config, rows=4, length=10):
  enc = rng.integers(2, config.vocab_size, (rows, length)).astype(np.int32)
  targets = rng.integers(2, config.vocab_size, (rows, length)).astype(np.int32)
  dec = np.concatenate([np.zeros((rows, 1), np.int32), targets[:, :-1]], axis=1)
  return {'encoder_input_tokens': enc, 'decoder_input_tokens': dec, 'decoder_target_tokens': targets,
          'decoder_loss_weights': np.ones((rows, length), np.float32)}


def _logits(config, params, batch):
  return np.asarray(network.Transformer(config).apply({'params': params}, batch['encoder_input_tokens'],
                                                      batch['decoder_input_tokens']))


@pytest.mark.slow
@pytest.mark.parametrize('scan', [False, True])
def test_zero_adapters_give_the_base_model_exactly(tiny_config, random_params, scan):
  base = tiny_config(scan_layers=scan)
  config = base.replace(lora=peft.LoraConfig(rank=4, target_modules=('q', 'k', 'v', 'o', 'wi_0', 'wi_1', 'wo')))
  params = network.init_params(config, jax.random.key(1))
  adapters, frozen = peft.split_trainable(params)
  assert adapters and all(k in ('lora_a', 'lora_b') for k in (p[-1].key for p, _ in
                                                              jax.tree_util.tree_leaves_with_path(adapters)))
  assert jax.tree.structure(frozen) == jax.tree.structure(network.init_params(base, jax.random.key(1)))
  batch = _batch(np.random.default_rng(0), base)
  np.testing.assert_array_equal(_logits(config, params, batch), _logits(base, frozen, batch))


def test_targets_follow_blocks_and_module_names():
  lora = peft.LoraConfig(target_modules=('q', 'wo'), blocks=('cross', 'mlp'))
  assert lora.targets(('decoder', 'layers_3', 'encoder_decoder_attention', 'query'))
  assert not lora.targets(('decoder', 'layers_3', 'self_attention', 'query'))
  assert not lora.targets(('encoder', 'layers', 'attention', 'query'))
  assert lora.targets(('encoder', 'layers', 'mlp', 'wo')) and not lora.targets(('encoder', 'layers', 'mlp', 'wi_0'))
  with pytest.raises(ValueError, match='target_modules'):
    peft.LoraConfig(target_modules=('query',))


@pytest.mark.slow
def test_training_moves_only_adapters_and_merging_keeps_the_logits(tiny_config):
  base = tiny_config()
  config = base.replace(lora=peft.LoraConfig(rank=4, alpha=8.0, target_modules=('q', 'v', 'wi_0', 'wo')))
  mesh = partitioning.make_mesh()
  axes, _ = steps.trained_part(config, network.logical_axes(config))
  tx = adafactor.adafactor(0.05, param_axes=axes)
  shardings = steps.make_shardings(config, tx, mesh, partitioning.axis_rules())
  params = steps.init_params(config, 0, shardings)
  state = steps.new_state(params, tx, shardings)
  frozen_before = jax.tree.map(np.array, state.frozen)
  adapters_before = jax.tree.map(np.array, state.params)
  # The optimizer keeps state for the adapters only.
  assert jax.tree.structure(state.params) == jax.tree.structure(peft.split_trainable(params)[0])
  step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(5):
    state, metrics = step(state, _batch(rng, config))
    losses.append(float(metrics['loss']))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.frozen), frozen_before)
  moved = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), b), state.params, adapters_before)
  assert all(jax.tree.leaves(moved))  # B leaves start at zero and move too
  batch = _batch(rng, config)
  full = jax.tree.map(np.asarray, state.model_params)
  merged = peft.merge_lora(full, config.lora)
  np.testing.assert_allclose(_logits(base, merged, batch), _logits(config, full, batch), rtol=1e-5, atol=1e-5)
