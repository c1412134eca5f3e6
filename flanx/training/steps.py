"""The sharded train state (params, optimizer state, step) and the jitted train step."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from flanx import losses, model as model_lib, partitioning
from flanx.config import T5Config

PyTree = Any
Batch = Mapping[str, jax.Array]

_MODEL_FEATURES = ('encoder_input_tokens', 'decoder_input_tokens', 'encoder_segment_ids', 'decoder_segment_ids',
                   'encoder_positions', 'decoder_positions')


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """t5x's loss knobs: z-loss, label smoothing and the loss-normalizing factor (None = summed loss)."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  loss_normalizing_factor: float | str | None = None


@dataclasses.dataclass(frozen=True)
class Shardings:
  """Where every part of the train state and the batch lives on the mesh."""
  mesh: Mesh
  rules: tuple
  params: PyTree
  opt_state: PyTree
  batch: NamedSharding

  @property
  def state(self) -> dict:
    return {'step': partitioning.replicated(self.mesh), 'params': self.params, 'opt_state': self.opt_state}


def make_shardings(config: T5Config, tx: Any | None, mesh: Mesh, rules: tuple) -> Shardings:
  """Shardings of params (from their logical axes) and of the optimizer state derived from them (tx=None: none)."""
  abstract = model_lib.abstract_params(config)
  axes = model_lib.logical_axes(config)
  fit = lambda shardings, shapes: jax.tree.map(lambda s, x: partitioning.fit_sharding(s, x.shape), shardings, shapes)
  params = fit(partitioning.logical_to_sharding(axes, mesh, rules), abstract)
  opt_state = None
  if tx is not None:
    opt_axes = tx.state_logical_axes(abstract, axes)
    opt_state = fit(partitioning.logical_to_sharding(opt_axes, mesh, rules), jax.eval_shape(tx.init, abstract))
  return Shardings(mesh, rules, params, opt_state, partitioning.batch_sharding(mesh))


def abstract_state(config: T5Config, tx: Any, shardings: Shardings) -> dict:
  """ShapeDtypeStructs carrying shardings: the restore target for checkpoints."""
  with_sharding = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  params = jax.tree.map(with_sharding, model_lib.abstract_params(config), shardings.params)
  opt_state = jax.tree.map(with_sharding, jax.eval_shape(tx.init, model_lib.abstract_params(config)),
                           shardings.opt_state)
  return {'params': params, 'opt_state': opt_state}


def init_params(config: T5Config, seed: int, shardings: Shardings) -> PyTree:
  """Random params created directly in their shards (no host copy of a large model)."""
  init = jax.jit(lambda key: model_lib.init_params(config, key), out_shardings=shardings.params)
  return init(jax.random.key(seed))


def init_opt_state(tx: Any, params: PyTree, shardings: Shardings) -> PyTree:
  """A fresh optimizer state, sharded like the params it belongs to."""
  return jax.jit(tx.init, out_shardings=shardings.opt_state)(params)


def _model_inputs(batch: Batch) -> dict:
  return {k: batch[k] for k in _MODEL_FEATURES if k in batch}


def make_train_step(config: T5Config, tx: Any, shardings: Shardings, loss_config: LossConfig,
                    num_microbatches: int = 1, dropout_seed: int = 0,
                    inject_nan_at_step: int | None = None) -> Callable[[dict, Batch], tuple[dict, dict]]:
  """A jitted `step(state, batch) -> (state, metrics)`; the input state's buffers are donated.

  Gradients of microbatches are summed in float32 and normalized once for the whole batch, so the result
  does not depend on `num_microbatches`. Dropout keys are fold_in(seed, step, microbatch): reproducible and
  independent of restarts. `inject_nan_at_step` is a fault-injection hook for testing the non-finite guard.
  """
  model = model_lib.Transformer(config)

  def summed_loss(params, batch, key):
    logits = model.apply({'params': params}, **_model_inputs(batch), deterministic=config.dropout_rate == 0.0,
                         rngs={'dropout': key})
    return losses.token_loss(logits, batch['decoder_target_tokens'], batch.get('decoder_loss_weights'),
                             z_loss=loss_config.z_loss, label_smoothing=loss_config.label_smoothing)

  grad_fn = jax.grad(summed_loss, has_aux=True)

  def step(state: dict, batch: Batch) -> tuple[dict, dict]:
    # Weights and factor come from the whole batch, so microbatching leaves the normalization unchanged.
    weights, factor = losses.loss_weights_and_factor(batch, loss_config.loss_normalizing_factor)
    batch = dict(batch)
    if weights is not None:
      batch['decoder_loss_weights'] = weights
    factor = 1.0 if factor is None else factor
    params, key = state['params'], jax.random.fold_in(jax.random.key(dropout_seed), state['step'])
    if num_microbatches == 1:
      grads, aux = grad_fn(params, batch, key)
    else:
      micro = jax.tree.map(lambda x: x.reshape((num_microbatches, -1) + x.shape[1:]), batch)

      def accumulate(carry, inputs):
        index, mb = inputs
        g, a = grad_fn(params, mb, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, carry, (g, a)), None

      zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), key)
      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), zeros)
      (grads, aux), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_microbatches), micro))
    grads = jax.tree.map(lambda g: g / factor, grads)
    loss = aux['loss'] / factor
    if inject_nan_at_step is not None:
      loss = jnp.where(state['step'] + 1 == inject_nan_at_step, jnp.nan, loss)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new_params = optax.apply_updates(params, updates)
    weight_sum = jnp.maximum(aux['weight_sum'], 1e-9)
    metrics = {
        'loss': loss,
        'z_loss': aux['z_loss'] / factor,
        'cross_ent_loss': aux['cross_ent_loss'] / factor,
        'loss_per_nonpadding_target_token': aux['loss'] / weight_sum,
        'accuracy': aux['num_correct'] / weight_sum,
        'grad_norm': optax.global_norm(grads),
        'param_norm': optax.global_norm(new_params),
    }
    return {'step': state['step'] + 1, 'params': new_params, 'opt_state': opt_state}, metrics

  return jax.jit(step, in_shardings=(shardings.state, shardings.batch),
                 out_shardings=(shardings.state, partitioning.replicated(shardings.mesh)), donate_argnums=0)


def make_eval_step(config: T5Config, shardings: Shardings, loss_config: LossConfig) -> Callable:
  """A jitted teacher-forced `eval_step(params, batch) -> summed loss/accuracy metrics`."""
  model = model_lib.Transformer(config)

  def step(params: PyTree, batch: Batch) -> dict:
    logits = model.apply({'params': params}, **_model_inputs(batch))
    _, aux = losses.token_loss(logits, batch['decoder_target_tokens'], batch.get('decoder_loss_weights'),
                               z_loss=0.0)
    return {'loss_sum': aux['loss'], 'correct_sum': aux['num_correct'], 'weight_sum': aux['weight_sum']}

  return jax.jit(step, in_shardings=(shardings.params, shardings.batch),
                 out_shardings=partitioning.replicated(shardings.mesh))


def activation_rules(shardings: Shardings):
  """Context that makes the model's logical activation constraints refer to this mesh."""
  return nn.logical_axis_rules(shardings.rules)
