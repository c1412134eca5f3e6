"""flanx.from_t5x_gin on t5x's optimizer and model variants: each converts to the same training or exits 2 naming
the binding that would change it.

The fixture gins are written here in the shapes of t5x's own (examples/t5/t5_1_1/examples/*_adamw.gin and
*_lion.gin, contrib/gpu/t5/t5_1_1/adamw_opt.gin and *_finetune_adam.gin, examples/decoder_only, contrib/moe),
with values chosen for the tests. A converted optimizer is checked against the optax optimizer t5x builds from
the same numbers: optax's own transformations, written out here, applied to the same gradients.
"""

import os
import pathlib
import textwrap

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flanx import from_t5x_gin, gin_config
from flanx.interop import t5x_gin
from flanx.model.config import T5Config

MODEL = """\
from __gin__ import dynamic_registration
from t5x import adafactor
from t5x import models
from t5x.examples.t5 import network

DROPOUT_RATE = %gin.REQUIRED
OPTIMIZER = @adafactor.Adafactor()
adafactor.Adafactor:
  decay_rate = 0.8
  step_offset = 0
  logical_factor_rules = @adafactor.standard_logical_factor_rules()

MODEL = @models.EncoderDecoderModel()
models.EncoderDecoderModel:
  module = @network.Transformer()
  optimizer_def = %OPTIMIZER
  z_loss = 0.0001

network.Transformer.config = @network.T5Config()
network.T5Config:
  vocab_size = 32128
  dtype = 'bfloat16'
  emb_dim = 512
  num_heads = 6
  num_encoder_layers = 8
  num_decoder_layers = 8
  head_dim = 64
  mlp_dim = 1024
  mlp_activations = ('gelu', 'linear')
  dropout_rate = %DROPOUT_RATE
  logits_via_embedding = False
"""

RUN = """\
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import trainer
from t5x import utils

MIXTURE_OR_TASK_NAME = 'my_task'
TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 32}
BATCH_SIZE = 16
TRAIN_STEPS = %gin.REQUIRED
DROPOUT_RATE = 0.0
INITIAL_CHECKPOINT_PATH = None

train_script.train:
  model = %MODEL
  train_dataset_cfg = @train/utils.DatasetConfig()
  checkpoint_cfg = @utils.CheckpointConfig()
  trainer_cls = @trainer.Trainer
  total_steps = %TRAIN_STEPS
  random_seed = 0

train/utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  batch_size = %BATCH_SIZE
  pack = True
  seed = 0

utils.CheckpointConfig.restore = @utils.RestoreCheckpointConfig()
utils.RestoreCheckpointConfig.path = %INITIAL_CHECKPOINT_PATH
utils.RestoreCheckpointConfig.mode = 'specific'
utils.SaveCheckpointConfig.period = 1000

trainer.Trainer.num_microbatches = None
trainer.Trainer.learning_rate_fn = @utils.create_learning_rate_scheduler()
utils.create_learning_rate_scheduler:
  factors = 'constant * rsqrt_decay'
  base_learning_rate = 1.0
  warmup_steps = 10000
"""

HEADER = """\
from __gin__ import dynamic_registration
from t5x import optimizers
from t5x import utils
import optax

include 't5x/examples/t5/t5_1_1/small.gin'
include 't5x/configs/runs/pretrain.gin'
"""

# examples/t5/t5_1_1/examples/base_wmt_from_scratch_adamw.gin's shape.
ADAMW = HEADER + """
TRAIN_STEPS = 10
OPTIMIZER = @optimizers.chain()
optimizers.chain:
  transformations = [@optax.clip(), @optax.adamw()]
optax.clip:
  max_delta = 0.05
optax.adamw:
  learning_rate = @optax.warmup_cosine_decay_schedule()
  b2 = 0.98
  weight_decay = 0.05
optax.warmup_cosine_decay_schedule:
  init_value = 0.0
  peak_value = 0.002
  warmup_steps = 2
  decay_steps = %TRAIN_STEPS
  end_value = 0.0001
"""

# examples/t5/t5_1_1/examples/base_wmt_from_scratch_lion.gin's shape, with t5x's scheduler as the learning rate.
LION = HEADER + """
TRAIN_STEPS = 10
OPTIMIZER = @optimizers.chain()
optimizers.chain.transformations = [@optax.clip_by_global_norm(), @optax.lion()]
optax.clip_by_global_norm.max_norm = 0.5
optax.lion:
  learning_rate = @utils.create_learning_rate_scheduler()
  b1 = 0.95
utils.create_learning_rate_scheduler:
  factors = 'constant * linear_warmup'
  base_learning_rate = 0.0003
  warmup_steps = 4
"""

# contrib/gpu/t5/t5_1_1/adamw_opt.gin and *_finetune_adam.gin's shape: a constant optax learning rate, fine-tuning
# from a t5x checkpoint, and a Trainer schedule that OptaxWrapper never applies.
GPU_ADAMW_OPT = """\
from __gin__ import dynamic_registration
import optax
from t5x import optimizers

OPTIMIZER = @optimizers.chain()
optimizers.chain:
  transformations = [@optax.clip_by_global_norm(), @optax.adamw()]
optax.clip_by_global_norm:
  max_norm = 1.0
optax.adamw:
  learning_rate = 0.0001
  weight_decay = 0.01
"""
GPU_FINETUNE_ADAM = """\
include 't5x/examples/t5/t5_1_1/small.gin'
include 't5x/contrib/gpu/t5/t5_1_1/adamw_opt.gin'
include 't5x/configs/runs/pretrain.gin'

TRAIN_STEPS = 1_000_020
INITIAL_CHECKPOINT_PATH = 'gs://bucket/t5_1_1_small/checkpoint_1000000'
utils.create_learning_rate_scheduler.factors = 'linear_decay'
"""
# The GPU network's own switch (adamw_opt.gin binds it): flanx's T5 has no 1/sqrt(d) on the queries.
GPU_SCALED = GPU_FINETUNE_ADAM + 'network.T5Config.scale_attn_logits = True\n'

# t5x's wrapped optimizer alone (`@optimizers.adam()`), from a checkpoint, with an optax schedule: the schedule
# counts the fresh optimizer's updates, not the restored step.
ADAM = HEADER + """
TRAIN_STEPS = 1_000_010
INITIAL_CHECKPOINT_PATH = 'gs://bucket/run/checkpoint_1000000'
OPTIMIZER = @optimizers.adam()
optimizers.adam.learning_rate = @optax.warmup_cosine_decay_schedule()
optimizers.adam.eps = 1e-6
optax.warmup_cosine_decay_schedule:
  init_value = 0.0
  peak_value = 0.001
  warmup_steps = 3
  decay_steps = 10
"""

# t5x's OptaxWrapper around an optax optimizer, as gin can also spell it.
WRAPPER = HEADER + """
TRAIN_STEPS = 10
OPTIMIZER = @optimizers.OptaxWrapper()
optimizers.OptaxWrapper.optax_optimizer = @optax.adamw()
optax.adamw.learning_rate = 0.0003
optax.adamw.b1 = 0.8
"""

DECODER_ONLY = """\
from __gin__ import dynamic_registration
from t5x import models
from t5x.examples.decoder_only import network

include 't5x/configs/runs/pretrain.gin'
TRAIN_STEPS = 10
MODEL = @models.DecoderOnlyModel()
models.DecoderOnlyModel:
  module = @network.DecoderWrapper()
network.DecoderWrapper.config = @network.TransformerConfig()
network.TransformerConfig:
  vocab_size = 32128
  num_layers = 12
"""

MOE = """\
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x.contrib.moe import trainer as moe_trainer

include 't5x/examples/t5/t5_1_1/small.gin'
include 't5x/configs/runs/pretrain.gin'
TRAIN_STEPS = 10
train_script.train.trainer_cls = @moe_trainer.MoeTrainer
moe_trainer.MoeTrainer.num_microbatches = None
"""

FLAXFORMER = """\
include 't5x/examples/t5/t5_1_1/small.gin'
include 't5x/configs/runs/pretrain.gin'
TRAIN_STEPS = 10
models.EncoderDecoderModel.module = @t5_architecture.EncoderDecoder()
"""

OTHER_OPTIMIZER = HEADER + """
TRAIN_STEPS = 10
OPTIMIZER = @optimizers.sgd()
optimizers.sgd.learning_rate = 0.1
"""

OTHER_SCHEDULE = ADAMW.replace('@optax.warmup_cosine_decay_schedule()', '@optax.linear_schedule()')

MASKED = ADAMW.replace('  weight_decay = 0.05\n', '  weight_decay = 0.05\n  mask = @my_mask\n')

# examples/t5/t5_1_1/examples/test_train_eval_t5_tiny.gin's shape: evaluation only.
EVAL_ONLY = HEADER + """
import __main__ as train_script
TRAIN_STEPS = 10
train_script.train:
  run_eval_before_training = True
  total_steps = 0
"""

FILES = {'t5x/examples/t5/t5_1_1/small.gin': MODEL, 't5x/configs/runs/pretrain.gin': RUN,
         't5x/contrib/gpu/t5/t5_1_1/adamw_opt.gin': GPU_ADAMW_OPT,
         'runs/small_adamw.gin': ADAMW, 'runs/small_lion.gin': LION, 'runs/small_finetune_adam.gin': GPU_FINETUNE_ADAM,
         'runs/small_finetune_adam_scaled.gin': GPU_SCALED, 'runs/small_adam.gin': ADAM, 'runs/wrapper.gin': WRAPPER,
         'runs/decoder_only.gin': DECODER_ONLY, 'runs/moe.gin': MOE, 'runs/flaxformer.gin': FLAXFORMER,
         'runs/sgd.gin': OTHER_OPTIMIZER, 'runs/linear_schedule.gin': OTHER_SCHEDULE, 'runs/masked.gin': MASKED,
         'runs/eval_only.gin': EVAL_ONLY}


@pytest.fixture
def t5x_tree(tmp_path):
  for name, text in FILES.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  return tmp_path


@pytest.fixture
def converted(t5x_tree, tmp_path):
  """Converts runs/NAME.gin and parses it with flanx's gin; returns train()'s bound arguments."""
  import flanx.training.loop  # noqa: F401  (registers train, optimizers and schedules)
  from flanx.training import aot, loop

  def convert(name):
    out = tmp_path / f'{name}.flanx.gin'
    assert from_t5x_gin.main([str(t5x_tree / 'runs' / f'{name}.gin'), '--output', str(out)]) == 0
    gin.clear_config()
    gin_config.parse_gin([str(out)], ['MODEL_DIR = "/tmp/unused"'])
    return aot.bound_arguments(loop.train), out.read_text()

  yield convert
  gin.clear_config()


def _updates(tx, steps=6):
  """Updates of `tx` over `steps` fixed random gradients of a small param tree (t5x-like names)."""
  keys = jax.random.split(jax.random.key(0), steps + 1)
  params = {'encoder': {'kernel': jax.random.normal(keys[0], (4, 3))}, 'bias': jnp.linspace(-1.0, 1.0, 3)}
  state = tx.init(params)
  out = []
  for key in keys[1:]:
    grads = jax.tree.map(lambda p, k=key: 0.3 * jax.random.normal(k, p.shape), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def _flanx_optimizer(args, restored_step=0):
  """The optimizer flanx's train loop builds: its schedule sees the absolute step (a fresh state counts from 0)."""
  from flanx.training import start_step
  schedule = start_step.shifted_schedule(args['learning_rate_schedule'], restored_step)
  return args['optimizer'](learning_rate=schedule, param_axes=None).transformation


def _assert_same(flanx_tx, reference_tx):
  for got, want in zip(_updates(flanx_tx), _updates(reference_tx)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-12), got, want)


# What flanx's gin binds after conversion: optimizer, its hyperparameters (optax's defaults where t5x's gin leaves
# them unbound) and the schedule.
CARRIED = {
    'small_adamw': ('adamw_optimizer', dict(update_clip=0.05, b1=0.9, b2=0.98, eps=1e-8, eps_root=0.0, weight_decay=0.05,
                                            nesterov=False),
                    'warmup_cosine_decay', dict(peak_value=0.002, init_value=0.0, warmup_steps=2, decay_steps=10,
                                                end_value=0.0001, exponent=1.0, step_offset=0)),
    'small_lion': ('lion_optimizer', dict(global_norm_clip=0.5, b1=0.95, b2=0.99, weight_decay=1e-3),
                   'linear_warmup', dict(learning_rate=0.0003, warmup_steps=4, step_offset=0, min_learning_rate=1e-8)),
    'small_finetune_adam': ('adamw_optimizer', dict(global_norm_clip=1.0, weight_decay=0.01, b2=0.999),
                            'constant', dict(learning_rate=0.0001, min_learning_rate=0.0)),
    'wrapper': ('adamw_optimizer', dict(b1=0.8, b2=0.999, weight_decay=1e-4),
                'constant', dict(learning_rate=0.0003, min_learning_rate=0.0)),
    'small_adam': ('adam_optimizer', dict(eps=1e-6, b1=0.9, b2=0.999),
                   'warmup_cosine_decay', dict(peak_value=0.001, warmup_steps=3, decay_steps=10, step_offset=1_000_000)),
}


@pytest.mark.parametrize('name', CARRIED)
def test_optimizer_type_and_hyperparameters_carry_over(converted, name):
  args, _ = converted(name)
  factory, hyper, schedule, schedule_args = CARRIED[name]
  assert args['optimizer'].__name__ == factory
  bound = gin.get_bindings(factory)
  assert {k: bound[k] for k in hyper} == hyper
  assert 'learning_rate' not in bound  # the schedule is train.learning_rate_schedule, as flanx's loop passes it
  assert gin.query_parameter('train.learning_rate_schedule').selector.endswith(f'schedules.{schedule}')
  got = {k: gin.query_parameter(f'schedules.{schedule}.{k}') for k in schedule_args}
  for key, value in got.items():  # LEARNING_RATE / peak_value go through the macro
    if isinstance(value, gin.config.ConfigurableReference):
      got[key] = gin.query_parameter('LEARNING_RATE/macro.value')
  assert got == schedule_args


@pytest.mark.slow  # optax updates op by op: seconds on a busy CPU
def test_adamw_with_clip_and_warmup_cosine_trains_as_t5x_builds_it(converted):
  args, text = converted('small_adamw')
  assert args['optimizer'].__name__ == 'adamw_optimizer' and 'unused by the t5x run: its optimizer is optax' in text
  reference = optax.chain(optax.clip(0.05), optax.adamw(
      optax.warmup_cosine_decay_schedule(0.0, 0.002, 2, 10, 0.0001), b2=0.98, weight_decay=0.05))
  _assert_same(_flanx_optimizer(args), reference)
  assert T5Config().d_model == 512 and T5Config().num_encoder_layers == 8  # the model carries over too


@pytest.mark.slow  # optax updates op by op: seconds on a busy CPU
def test_lion_with_global_norm_clip_and_t5x_scheduler(converted):
  args, _ = converted('small_lion')
  assert args['optimizer'].__name__ == 'lion_optimizer'
  # t5x's 'constant * linear_warmup': base * min(1, step / warmup), floored at min_learning_rate 1e-8.
  schedule = lambda count: jnp.maximum(0.0003 * jnp.minimum(1.0, count / 4), 1e-8)
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.lion(schedule, b1=0.95))  # optax's b2, decay
  _assert_same(_flanx_optimizer(args), reference)


@pytest.mark.slow  # optax updates op by op: seconds on a busy CPU
def test_gpu_finetune_adam_constant_rate_from_a_checkpoint(converted):
  args, text = converted('small_finetune_adam')
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.0001, weight_decay=0.01))
  _assert_same(_flanx_optimizer(args, restored_step=1_000_000), reference)
  assert args['train_steps'] == 1_000_020 and args['initial_checkpoint_path'].endswith('checkpoint_1000000')
  # the GPU Trainer schedule ('linear_decay') only feeds t5x's logged learning rate with an optax optimizer
  assert "factors = 'linear_decay'" in text and 'only feeds the logged learning_rate' in text


@pytest.mark.slow  # optax updates op by op: seconds on a busy CPU
def test_wrapped_adam_schedule_counts_the_fresh_optimizer_updates(converted):
  args, text = converted('small_adam')
  assert args['optimizer'].__name__ == 'adam_optimizer'
  reference = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 0.001, 3, 10), eps=1e-6)
  _assert_same(_flanx_optimizer(args, restored_step=1_000_000), reference)
  assert 'schedules.warmup_cosine_decay.step_offset = 1000000' in text


REFUSED = [
    # (fixture, file, binding text): the file:line named is where that binding is written
    ('small_finetune_adam_scaled', 'runs/small_finetune_adam_scaled.gin', 'network.T5Config.scale_attn_logits = True'),
    ('decoder_only', 'runs/decoder_only.gin', 'MODEL = @models.DecoderOnlyModel()'),
    ('moe', 'runs/moe.gin', 'train_script.train.trainer_cls = @moe_trainer.MoeTrainer'),
    ('flaxformer', 'runs/flaxformer.gin', 'models.EncoderDecoderModel.module = @t5_architecture.EncoderDecoder()'),
    ('sgd', 'runs/sgd.gin', 'OPTIMIZER = @optimizers.sgd()'),
    ('linear_schedule', 'runs/linear_schedule.gin', '  learning_rate = @optax.linear_schedule()'),
    ('masked', 'runs/masked.gin', '  mask = @my_mask'),
    ('eval_only', 'runs/eval_only.gin', '  total_steps = 0'),
]


@pytest.mark.parametrize('name, file, written', REFUSED, ids=[r[0] for r in REFUSED])
def test_what_would_change_the_training_exits_2_naming_the_binding(t5x_tree, capsys, name, file, written):
  out = t5x_tree / 'out.gin'
  assert from_t5x_gin.main([str(t5x_tree / 'runs' / f'{name}.gin'), '--output', str(out)]) == 2
  line = FILES[file].splitlines().index(written) + 1
  err = capsys.readouterr().err
  assert f'{t5x_tree / file}:{line}: ' in err, err
  assert 'would change' in err or 'trains no steps' in err, err
  assert not out.exists()


# Values a user passes with --gin.X for what a t5x gin leaves to the command line (t5x's %gin.REQUIRED).
PLACEHOLDERS = {'MODEL_DIR': '"/tmp/unused"', 'TASK_FEATURE_LENGTHS': "{'inputs': 8, 'targets': 8}",
                'TRAIN_STEPS': '10', 'BATCH_SIZE': '8', 'INITIAL_CHECKPOINT_PATH': 'None', 'DROPOUT_RATE': '0.0'}


def _parse_as_a_user_would(path) -> str:
  """'' when flanx parses the converted gin with placeholders for the macros it leaves required, else the error."""
  import re
  bindings = {'MODEL_DIR': PLACEHOLDERS['MODEL_DIR']}
  for _ in range(12):
    gin.clear_config()
    try:
      gin_config.parse_gin([str(path)], [f'{k} = {v}' for k, v in bindings.items()])
      return ''
    except Exception as e:  # pylint: disable=broad-except
      message = f'{type(e).__name__}: {e}'
      required = re.search(r'(\w+)/macro.value set to `%gin.REQUIRED`', message)
      unused = re.search(r'--gin.(\w+): no gin file or binding uses the macro', message)
      if required and required.group(1) not in bindings:
        bindings[required.group(1)] = PLACEHOLDERS.get(required.group(1), '"placeholder"')
      elif unused and unused.group(1) in bindings:
        del bindings[unused.group(1)]
      else:
        return message
    finally:
      gin.clear_config()
  return message


def test_t5x_gin_all(tmp_path):
  """With FLANX_T5X_DIR (a t5x checkout), every gin under its examples/ and configs/runs/ folders converts or
  exits naming a file and line; the counts are printed (pytest -s)."""
  root = os.environ.get('FLANX_T5X_DIR')
  if not root or not os.path.isdir(root):
    pytest.skip('set FLANX_T5X_DIR to a t5x checkout to convert all of its gins')
  paths = sorted(p for p in pathlib.Path(root).rglob('*.gin') if {'examples', 'runs'} & set(p.parts))
  import flanx.inference.evaluate  # noqa: F401  (registers what eval / infer gins bind)
  import flanx.inference.infer  # noqa: F401
  import flanx.training.loop  # noqa: F401
  converted, refused, unnamed, unparsed = [], [], [], []
  for path in paths:
    try:
      text = t5x_gin.convert_file(str(path), [root])
    except t5x_gin.T5xGinError as e:
      (refused if '.gin' in str(e) else unnamed).append((path, str(e)))
      continue
    converted.append(path)
    out = tmp_path / 'converted.gin'
    out.write_text(text)
    error = _parse_as_a_user_would(out)
    if error:
      unparsed.append((path, error))
  print(f'\nt5x gins under {root}: {len(paths)}; converted {len(converted)} (flanx parses '
        f'{len(converted) - len(unparsed)}); refused naming the file {len(refused)}; refused otherwise '
        f'{len(unnamed)}')
  for path, why in refused + unnamed + unparsed:
    print(f'  {os.path.relpath(path, root)}: {textwrap.shorten(why, 200)}')
  assert paths and not unnamed and not unparsed
