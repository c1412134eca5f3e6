"""The train state and the jitted steps: one loss forward pass, used to train, to evaluate and to score."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from flanx.model import network, peft
from flanx.model.config import T5Config
from flanx.training import adafactor, cpu_dots, losses, partitioning
from flanx.training.optimizer import Optimizer

PyTree = Any
Batch = Mapping[str, jax.Array]

_MODEL_FEATURES = ('encoder_input_tokens', 'decoder_input_tokens', 'encoder_segment_ids', 'decoder_segment_ids',
                   'encoder_positions', 'decoder_positions')


@flax.struct.dataclass
class TrainState:
  """The step count, the trained params and their optimizer state (what a checkpoint holds), and in a
  parameter-efficient run the frozen base params (restored from the base, never saved)."""
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  frozen: PyTree = None

  @property
  def model_params(self) -> PyTree:
    """The whole model's params (trained and frozen together)."""
    return self.params if self.frozen is None else peft.combine(self.params, self.frozen)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """t5x's loss knobs: z-loss, label smoothing and the loss-normalizing factor (None = summed loss)."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  loss_normalizing_factor: float | str | None = None


EVAL_LOSS = LossConfig(z_loss=0.0)  # evaluation and scoring: the plain cross-entropy, i.e. -log-likelihood


@dataclasses.dataclass(frozen=True)
class Shardings:
  """Where every part of the train state and the batch lives on the mesh."""
  mesh: Mesh
  rules: tuple
  params: PyTree
  opt_state: PyTree
  batch: NamedSharding
  frozen: PyTree = None  # parameter-efficient runs: the frozen base params' shardings

  @property
  def state(self) -> TrainState:
    return TrainState(step=partitioning.replicated(self.mesh), params=self.params, opt_state=self.opt_state,
                      frozen=self.frozen)

  @property
  def model_params(self) -> PyTree:
    """Shardings of the whole model's params."""
    return self.params if self.frozen is None else peft.combine(self.params, self.frozen)


def trained_part(config: T5Config, tree: PyTree) -> tuple[PyTree, PyTree]:
  """(trained, frozen) halves of a param-shaped tree: all and None, or the adapters and the base under PEFT."""
  return peft.trained_part(config, tree)


def make_shardings(config: T5Config, optimizer: Optimizer | None, mesh: Mesh, rules: tuple) -> Shardings:
  """Shardings of params (from their logical axes) and of the optimizer state (optimizer=None: params only)."""
  fit = lambda shardings, shapes: jax.tree.map(lambda s, x: partitioning.fit_sharding(s, x.shape), shardings, shapes)
  params, frozen = trained_part(config, fit(partitioning.logical_to_sharding(network.logical_axes(config), mesh, rules),
                                            network.abstract_params(config)))
  abstract, _ = trained_part(config, network.abstract_params(config))
  axes, _ = trained_part(config, network.logical_axes(config))
  opt_state = None
  if optimizer is not None:
    opt_axes = optimizer.state_logical_axes(abstract, axes)
    opt_state = fit(partitioning.logical_to_sharding(opt_axes, mesh, rules), jax.eval_shape(optimizer.init, abstract))
  return Shardings(mesh, rules, params, opt_state, partitioning.batch_sharding(mesh), frozen)


def with_shardings(tree: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs of `tree` (arrays or abstract values) carrying `shardings`: a restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def make_optimizer(config: T5Config, factory: Callable[..., Optimizer] | None, schedule: Any) -> Optimizer:
  """The run's optimizer over its trained part (default: t5x's Adafactor); `factory` is gin's train.optimizer."""
  # Logical axes keep Adafactor's factoring/RMS per layer when layers are scanned (stacked kernels).
  return (factory or adafactor.adafactor)(learning_rate=schedule,
                                          param_axes=trained_part(config, network.logical_axes(config))[0])


def abstract_state(config: T5Config, optimizer: Optimizer, shardings: Shardings, with_frozen: bool = False
                   ) -> TrainState:
  """The train state as sharded ShapeDtypeStructs (nothing allocated): the checkpoint restore target, or with
  `with_frozen` the whole step argument (a PEFT run's frozen base in its storage dtype; never checkpointed)."""
  params, base = trained_part(config, network.abstract_params(config))
  frozen = None
  if with_frozen and shardings.frozen is not None:
    dtype = jnp.dtype(peft.base_dtype(config))
    frozen = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, dtype, sharding=s), base, shardings.frozen)
  return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32, sharding=partitioning.replicated(shardings.mesh)),
                    params=with_shardings(params, shardings.params),
                    opt_state=with_shardings(jax.eval_shape(optimizer.init, params), shardings.opt_state),
                    frozen=frozen)


def init_params(config: T5Config, seed: int, shardings: Shardings) -> PyTree:
  """Random params of the whole model created directly in their shards (no host copy of a large model)."""
  init = jax.jit(lambda key: network.init_params(config, key), out_shardings=shardings.model_params)
  return init(jax.random.key(seed))


def init_adapters(config: T5Config, seed: int, shardings: Shardings) -> PyTree:
  """Fresh adapter params only (the base's initialisation is dead code XLA drops): for a pretrained base."""
  init = jax.jit(lambda key: trained_part(config, network.init_params(config, key))[0], out_shardings=shardings.params)
  return init(jax.random.key(seed))


def init_opt_state(optimizer: Optimizer, params: PyTree, shardings: Shardings) -> PyTree:
  """A fresh optimizer state, sharded like the params it belongs to."""
  return jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)


def new_state(params: PyTree, optimizer: Optimizer, shardings: Shardings, step: int = 0,
              base_dtype: str = 'float32') -> TrainState:
  """A train state at `step` around the whole model's `params` (split into trained and frozen under PEFT, the
  frozen half stored in `base_dtype`), with a fresh optimizer state."""
  trained, frozen = (params, None) if shardings.frozen is None else peft.split_trainable(params)
  if frozen is not None and base_dtype != 'float32':
    # out_shardings: the cast keeps the base where the step expects it (left to XLA, a one-device mesh drops the spec)
    frozen = jax.jit(lambda tree: jax.tree.map(lambda x: x.astype(base_dtype), tree), donate_argnums=0,
                     out_shardings=shardings.frozen)(frozen)
  return TrainState(step=jax.device_put(jnp.int32(step), partitioning.replicated(shardings.mesh)), params=trained,
                    opt_state=init_opt_state(optimizer, trained, shardings), frozen=frozen)


def model_inputs(batch: Batch) -> dict:
  """The features the network reads (tokens, and segment ids / positions when packed)."""
  return {k: batch[k] for k in _MODEL_FEATURES if k in batch}


def loss_forward(model: network.Transformer, params: PyTree, batch: Batch, loss_config: LossConfig, *,
                 weights: jax.Array | None = None, rng: jax.Array | None = None,
                 per_example: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The one teacher-forced forward pass: network → logits → weighted token loss and its metric ingredients.

  Summed (unnormalized) over the batch, or per example with per_example=True. `rng` turns dropout on.
  Weights default to the batch's decoder_loss_weights (t5x: non-padding targets when absent).
  """
  logits = model.apply({'params': params}, **model_inputs(batch), deterministic=rng is None,
                       rngs=None if rng is None else {'dropout': rng})
  targets = batch['decoder_target_tokens']
  if weights is None:
    weights = batch.get('decoder_loss_weights', (targets > 0).astype(jnp.float32))
  return losses.token_loss(logits, targets, weights, z_loss=loss_config.z_loss,
                           label_smoothing=loss_config.label_smoothing, per_example=per_example)


def make_train_step(config: T5Config, optimizer: Optimizer, shardings: Shardings, loss_config: LossConfig,
                    num_microbatches: int = 1, dropout_seed: int = 0, inject_nan_at_step: int | None = None,
                    dot_options: bool = True) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """A jitted `step(state, batch) -> (state, metrics)`; the input state's buffers are donated.

  Gradients of microbatches are summed in float32 and normalized once for the whole batch, so the result
  does not depend on `num_microbatches`. Dropout keys are fold_in(seed, step, microbatch): reproducible and
  independent of restarts. `inject_nan_at_step` is a fault-injection hook for testing the non-finite guard.
  `dot_options`: compiled with the train step's XLA:CPU dot library (flanx.training.cpu_dots); False for a step
  that jax.export wraps (it refuses inner compiler options; step_cache gives them to the outer call instead).
  """
  model = network.Transformer(config)
  dropout = config.dropout_rate > 0.0 or peft.method(config).needs_dropout_rng()

  def summed_loss(params, frozen, batch, weights, key):
    params = params if frozen is None else peft.combine(params, frozen)
    return loss_forward(model, params, batch, loss_config, weights=weights, rng=key if dropout else None)

  grad_fn = jax.grad(summed_loss, has_aux=True)

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    # Weights and factor come from the whole batch, so microbatching leaves the normalization unchanged.
    weights, factor = losses.loss_weights_and_factor(batch, loss_config.loss_normalizing_factor)
    if weights is None:
      weights = (batch['decoder_target_tokens'] > 0).astype(jnp.float32)
    factor = 1.0 if factor is None else factor
    params, key = state.params, jax.random.fold_in(jax.random.key(dropout_seed), state.step)
    if num_microbatches == 1:
      grads, aux = grad_fn(params, state.frozen, batch, weights, key)
    else:
      # Microbatch i takes rows i, i + n, i + 2n, ...: every data shard holds its share of each microbatch, so
      # microbatches split the per-device work (contiguous blocks would each live on a few devices only).
      split = lambda x: x.reshape((-1, num_microbatches) + x.shape[1:]).swapaxes(0, 1)
      micro, micro_weights = jax.tree.map(split, dict(batch)), split(weights)

      def accumulate(carry, inputs):
        index, mb, w = inputs
        g, a = grad_fn(params, state.frozen, mb, w, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, carry, (g, a)), None

      first = jax.tree.map(lambda x: x[0], (micro, micro_weights))
      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), jax.eval_shape(grad_fn, params, state.frozen, *first, key))
      (grads, aux), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_microbatches), micro, micro_weights))
    grads = jax.tree.map(lambda g: g / factor, grads)
    loss = aux['loss'] / factor
    if inject_nan_at_step is not None:
      loss = jnp.where(state.step + 1 == inject_nan_at_step, jnp.nan, loss)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new_params = optax.apply_updates(params, updates)
    weight_sum = jnp.maximum(aux['weight_sum'], 1e-9)
    metrics = {
        'loss': loss,
        'z_loss': aux['z_loss'] / factor,
        'cross_ent_loss': aux['cross_ent_loss'] / factor,
        'loss_per_nonpadding_target_token': aux['loss'] / weight_sum,
        'accuracy': aux['num_correct'] / weight_sum,
        'weight_sum': aux['weight_sum'], 'num_correct': aux['num_correct'],  # totals: t5x's interval metrics
        'grad_norm': optax.global_norm(grads),
        'param_norm': optax.global_norm(new_params),
    }
    return TrainState(step=state.step + 1, params=new_params, opt_state=opt_state, frozen=state.frozen), metrics

  return jax.jit(step, in_shardings=(shardings.state, shardings.batch),
                 out_shardings=(shardings.state, partitioning.replicated(shardings.mesh)), donate_argnums=0,
                 compiler_options=cpu_dots.for_mesh(shardings.mesh) if dot_options else None)


def make_eval_step(config: T5Config, shardings: Shardings, per_example: bool = False) -> Callable:
  """A jitted teacher-forced `eval_step(params, batch) -> {loss, num_correct, weight_sum}` (summed, or [b])."""
  model = network.Transformer(config)
  out = partitioning.replicated(shardings.mesh)

  def step(params: PyTree, batch: Batch) -> dict:
    _, aux = loss_forward(model, params, batch, EVAL_LOSS, per_example=per_example)
    return {k: aux[k] for k in ('loss', 'num_correct', 'weight_sum')}

  return jax.jit(step, in_shardings=(shardings.model_params, shardings.batch), out_shardings=out)


def teacher_forced_metrics(totals: Iterable[Mapping[str, Any]]) -> dict[str, float]:
  """t5x's eval metrics from eval-step outputs: loss per non-padding target token and token accuracy."""
  loss = correct = weight = 0.0
  for out in totals:
    loss, correct, weight = (loss + float(jnp.sum(out['loss'])), correct + float(jnp.sum(out['num_correct'])),
                             weight + float(jnp.sum(out['weight_sum'])))
  weight = max(weight, 1e-9)
  return {'loss_per_nonpadding_target_token': loss / weight, 'accuracy': correct / weight}


def activation_rules(shardings: Shardings):
  """Context that makes the model's logical activation constraints refer to this mesh."""
  return nn.logical_axis_rules(shardings.rules)
