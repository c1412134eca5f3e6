"""flanx.from_t5x_gin: t5x gins (written here in the shapes t5x uses) become flanx gins that parse and give the
same model and run settings. Fixtures follow the structure of t5x's examples/t5/t5_1_1/*.gin,
configs/runs/finetune.gin and a run's config.gin (gin.config_str()); their values are chosen for the tests."""

import inspect
import textwrap

import gin
import pytest

from flanx import from_t5x_gin, gin_config
from flanx.interop import t5x_gin
from flanx.model.config import T5Config

MODEL_BASE = """\
# A T5.1.1-style model gin: block syntax, macros, a required macro.
from __gin__ import dynamic_registration

import seqio
from t5x import adafactor
from t5x import models
from t5x.examples.t5 import network

Z_LOSS = 0.0001
LABEL_SMOOTHING = 0.0
LOSS_NORMALIZING_FACTOR = None
DROPOUT_RATE = %gin.REQUIRED

VOCABULARY = @seqio.SentencePieceVocabulary()
seqio.SentencePieceVocabulary.sentencepiece_model_file = "gs://bucket/vocab/spm.model"

OPTIMIZER = @adafactor.Adafactor()
adafactor.Adafactor:
  decay_rate = 0.8
  step_offset = 0
  logical_factor_rules = @adafactor.standard_logical_factor_rules()

MODEL = @models.EncoderDecoderModel()
models.EncoderDecoderModel:
  module = @network.Transformer()
  input_vocabulary = %VOCABULARY
  output_vocabulary = %VOCABULARY
  optimizer_def = %OPTIMIZER
  z_loss = %Z_LOSS
  label_smoothing = %LABEL_SMOOTHING
  loss_normalizing_factor = %LOSS_NORMALIZING_FACTOR

network.Transformer.config = @network.T5Config()
network.T5Config:
  vocab_size = 32128  # rounded up for TPUs
  dtype = 'bfloat16'
  emb_dim = 512
  num_heads = 8
  num_encoder_layers = 6
  num_decoder_layers = 6
  head_dim = 64
  mlp_dim = 1024
  mlp_activations = ('gelu', 'linear')
  dropout_rate = %DROPOUT_RATE
  logits_via_embedding = False
"""

MODEL_XL = """\
include 't5x/examples/t5/t5_1_1/base.gin'

network.T5Config:
  emb_dim = 2048
  num_heads = 32
  num_encoder_layers = 24
  num_decoder_layers = 24
  mlp_dim = 5120
"""

RUN_FINETUNE = """\
# Run defaults in the shape of t5x's configs/runs/finetune.gin.
from __gin__ import dynamic_registration

import __main__ as train_script
from t5x import partitioning
from t5x import utils
from t5x import trainer

MODEL_DIR = %gin.REQUIRED
MIXTURE_OR_TASK_NAME = %gin.REQUIRED
TASK_FEATURE_LENGTHS = %gin.REQUIRED
MIXTURE_OR_TASK_MODULE = %gin.REQUIRED
TRAIN_STEPS = %gin.REQUIRED
INITIAL_CHECKPOINT_PATH = %gin.REQUIRED

DROPOUT_RATE = 0.1
USE_CACHED_TASKS = True
BATCH_SIZE = 128
EVAL_STEPS = 20
EVAL_PERIOD = 1000
USE_HARDWARE_RNG = False
RANDOM_SEED = None
TRAIN_STEPS_RELATIVE = None
MIXTURE_OR_TASK_MODULE = None

train_script.train:
  model = %MODEL
  model_dir = %MODEL_DIR
  train_dataset_cfg = @train/utils.DatasetConfig()
  train_eval_dataset_cfg = @train_eval/utils.DatasetConfig()
  checkpoint_cfg = @utils.CheckpointConfig()
  partitioner = @partitioning.PjitPartitioner()
  trainer_cls = @trainer.Trainer
  total_steps = %TRAIN_STEPS
  eval_steps = %EVAL_STEPS
  eval_period = %EVAL_PERIOD
  relative_steps = %TRAIN_STEPS_RELATIVE
  random_seed = %RANDOM_SEED
  use_hardware_rng = %USE_HARDWARE_RNG

partitioning.PjitPartitioner:
  num_partitions = 1
  model_parallel_submesh = None
  logical_axis_rules = @partitioning.standard_logical_axis_rules()

train/utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'train'
  batch_size = %BATCH_SIZE
  shuffle = True
  seed = None
  use_cached = %USE_CACHED_TASKS
  pack = True
  module = %MIXTURE_OR_TASK_MODULE

train_eval/utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = %TASK_FEATURE_LENGTHS
  split = 'validation'
  batch_size = %BATCH_SIZE
  shuffle = False
  seed = 42
  use_cached = %USE_CACHED_TASKS
  pack = True
  module = %MIXTURE_OR_TASK_MODULE

utils.CheckpointConfig:
  restore = @utils.RestoreCheckpointConfig()
  save = @utils.SaveCheckpointConfig()
utils.RestoreCheckpointConfig:
  path = %INITIAL_CHECKPOINT_PATH
  mode = 'specific'
  dtype = 'float32'
utils.SaveCheckpointConfig:
  period = 5000
  dtype = 'float32'
  keep = None

trainer.Trainer:
  num_microbatches = None
  learning_rate_fn = @utils.create_learning_rate_scheduler()
utils.create_learning_rate_scheduler:
  factors = 'constant'
  base_learning_rate = 0.001
  warmup_steps = 1000
"""

FLAN_FINETUNE = """\
# A Flan-T5 XL fine-tuning gin as users write them for t5x.
from __gin__ import dynamic_registration
from t5x import utils

include 't5x/configs/runs/finetune.gin'
include 't5x/examples/t5/t5_1_1/xl.gin'

MIXTURE_OR_TASK_NAME = 'my_dolly_task'
MIXTURE_OR_TASK_MODULE = 'tasks.dolly'
TASK_FEATURE_LENGTHS = {'inputs': 1024, 'targets': 256}
BATCH_SIZE = 64
DROPOUT_RATE = 0.05
TRAIN_STEPS = 1_143_000  # 1138000 pretrained + 5000 fine-tuning
INITIAL_CHECKPOINT_PATH = 'gs://t5-data/pretrained_models/t5x/flan_t5_xl/checkpoint_1138000'
LOSS_NORMALIZING_FACTOR = 233472

utils.SaveCheckpointConfig.period = 1000
utils.create_learning_rate_scheduler.base_learning_rate = 0.0005
partitioning.PjitPartitioner.num_partitions = 4
partitioning.standard_logical_axis_rules.parameter_partitioning_dims = 2
"""

# gin.config_str() output, as t5x writes it to MODEL_DIR/config.gin: flat, sorted, `\\` continuations.
CONFIG_GIN = """\
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import adafactor
from t5x import models
from t5x import partitioning
from t5x import trainer
from t5x import utils
from t5x.examples.t5 import network

# Macros:
# ==============================================================================
BATCH_SIZE = 256
DROPOUT_RATE = 0.0
MIXTURE_OR_TASK_NAME = 'c4_v220_span_corruption'
MODEL_DIR = 'gs://bucket/old_run'
TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 114}
TRAIN_STEPS = 100000

# Parameters for adafactor.Adafactor:
# ==============================================================================
adafactor.Adafactor.decay_rate = 0.8
adafactor.Adafactor.logical_factor_rules = \\
    @adafactor.standard_logical_factor_rules()
adafactor.Adafactor.factor_map = None

# Parameters for utils.create_learning_rate_scheduler:
# ==============================================================================
utils.create_learning_rate_scheduler.base_learning_rate = 1.0
utils.create_learning_rate_scheduler.factors = 'constant * rsqrt_decay'
utils.create_learning_rate_scheduler.warmup_steps = 10000

# Parameters for train/utils.DatasetConfig:
# ==============================================================================
train/utils.DatasetConfig.batch_size = %BATCH_SIZE
train/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
train/utils.DatasetConfig.pack = True
train/utils.DatasetConfig.seed = 7
train/utils.DatasetConfig.shuffle = True
train/utils.DatasetConfig.split = 'train'
train/utils.DatasetConfig.task_feature_lengths = %TASK_FEATURE_LENGTHS

# Parameters for models.EncoderDecoderModel:
# ==============================================================================
models.EncoderDecoderModel.label_smoothing = 0.0
models.EncoderDecoderModel.loss_normalizing_factor = None
models.EncoderDecoderModel.module = @network.Transformer()
models.EncoderDecoderModel.optimizer_def = @adafactor.Adafactor()

# Parameters for network.T5Config:
# ==============================================================================
network.T5Config.dropout_rate = %DROPOUT_RATE
network.T5Config.dtype = 'bfloat16'
network.T5Config.emb_dim = 512
network.T5Config.head_dim = 64
network.T5Config.logits_via_embedding = True
network.T5Config.mlp_activations = ('relu',)
network.T5Config.mlp_dim = 2048
network.T5Config.num_decoder_layers = 6
network.T5Config.num_encoder_layers = 6
network.T5Config.num_heads = 8
network.T5Config.vocab_size = 32128

# Parameters for partitioning.PjitPartitioner:
# ==============================================================================
partitioning.PjitPartitioner.model_parallel_submesh = (2, 2, 1, 2)

# Parameters for utils.SaveCheckpointConfig:
# ==============================================================================
utils.SaveCheckpointConfig.keep = 3
utils.SaveCheckpointConfig.period = 2000

# Parameters for train_script.train:
# ==============================================================================
train_script.train.eval_period = 0
train_script.train.model_dir = %MODEL_DIR
train_script.train.random_seed = 11
train_script.train.total_steps = %TRAIN_STEPS
train_script.train.train_dataset_cfg = @train/utils.DatasetConfig()

# Parameters for trainer.Trainer:
# ==============================================================================
trainer.Trainer.learning_rate_fn = @utils.create_learning_rate_scheduler()
trainer.Trainer.num_microbatches = 2
"""


def _write(root, files):
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def t5x_tree(tmp_path):
  _write(tmp_path, {'t5x/examples/t5/t5_1_1/base.gin': MODEL_BASE, 't5x/examples/t5/t5_1_1/xl.gin': MODEL_XL,
                    't5x/configs/runs/finetune.gin': RUN_FINETUNE, 'my_runs/flan_t5_xl_dolly.gin': FLAN_FINETUNE,
                    'old_run/config.gin': CONFIG_GIN})
  return tmp_path


@pytest.fixture
def flanx_gin():
  """Parses a converted gin with flanx's own gin handling; returns a reader of bindings and macros."""
  import flanx.training.loop  # noqa: F401  (registers train and the optimizer/schedule configurables)
  import flanx.inference.predict  # noqa: F401  (registers decode_options)
  gin.clear_config()

  def parse(path, bindings=('MODEL_DIR = "/tmp/unused"',)):
    gin_config.parse_gin([str(path)], list(bindings))

    def value(key):
      v = gin.query_parameter(key)
      while isinstance(v, gin.config.ConfigurableReference) and v.scoped_selector.endswith('gin.macro'):
        v = gin.query_parameter('%' + v.scoped_selector.rsplit('/', 1)[0])
      return v
    return value

  yield parse
  gin.clear_config()


def _convert(path, tmp_path, *search):
  out = tmp_path / 'run.gin'
  out.write_text(t5x_gin.convert_file(str(path), [str(s) for s in search]))
  return out


def _train_accepts(name):
  from flanx.training import loop
  return name in inspect.signature(inspect.unwrap(loop.train)).parameters


def test_flan_t5_finetune_gin_with_includes_gives_the_same_model_and_run(t5x_tree, tmp_path, flanx_gin):
  run = _convert(t5x_tree / 'my_runs/flan_t5_xl_dolly.gin', tmp_path)  # includes found via the parent folder
  value = flanx_gin(run)
  assert T5Config() == T5Config(vocab_size=32128, d_model=2048, d_kv=64, num_heads=32, d_ff=5120,
                                num_encoder_layers=24, num_decoder_layers=24, activation='gated-gelu',
                                tie_embeddings=False, dropout_rate=0.05, relpos_buckets=32,
                                relpos_max_distance=128, dtype='bfloat16')
  assert value('train.mixture_or_task_name') == 'my_dolly_task'
  assert value('train.mixture_or_task_module') == 'tasks.dolly'
  assert value('train.task_feature_lengths') == {'inputs': 1024, 'targets': 256}
  assert value('train.batch_size') == 64
  assert value('train.pack') is True
  assert value('train.use_cached_tasks') is True
  assert value('train.initial_checkpoint_path') == 'gs://t5-data/pretrained_models/t5x/flan_t5_xl/checkpoint_1138000'
  if _train_accepts('continue_step'):  # t5x's absolute step count, continued from the checkpoint's step
    assert value('train.train_steps') == 1_143_000
  else:  # flanx counts from 0: the 5000 fine-tuning steps
    assert value('train.train_steps') == 5000
  assert value('train.checkpoint_period') == 1000
  assert value('train.keep_checkpoints') is None
  assert value('train.eval_period') == 1000 and value('train.eval_batches') == 20
  assert value('train.eval_split') == 'validation'
  assert value('train.num_microbatches') == 1
  assert value('train.z_loss') == 1e-4 and value('train.label_smoothing') == 0.0
  assert value('train.loss_normalizing_factor') == 233472
  assert value('schedules.constant.learning_rate') == 0.0005
  assert value('adafactor.decay_rate') == 0.8 and value('adafactor.step_offset') == 0
  assert value('make_mesh.model') == 4 and value('axis_rules.fsdp') is True
  text = run.read_text()
  assert 'flanx takes the vocabulary from the seqio task' in text
  assert 'sentencepiece_model_file' in text and 'base.gin:15' in text  # dropped bindings name file and line


def test_flat_config_gin_of_a_run(t5x_tree, tmp_path, flanx_gin):
  run = _convert(t5x_tree / 'old_run/config.gin', tmp_path)
  value = flanx_gin(run)
  assert T5Config() == T5Config(vocab_size=32128, d_model=512, d_kv=64, num_heads=8, d_ff=2048,
                                num_encoder_layers=6, num_decoder_layers=6, activation='relu',
                                tie_embeddings=True, dropout_rate=0.0, dtype='bfloat16')
  assert value('train.train_steps') == 100000  # no initial checkpoint: the same count either way
  assert value('train.initial_checkpoint_path') is None
  assert value('train.batch_size') == 256 and value('train.data_seed') == 7 and value('train.seed') == 11
  assert value('train.z_loss') == 0.0  # unbound in the t5x gin: t5x's default, not flanx's 1e-4
  assert value('train.eval_period') == 0
  assert value('train.num_microbatches') == 2
  assert value('train.checkpoint_period') == 2000 and value('train.keep_checkpoints') == 3
  schedule = value('train.learning_rate_schedule')
  assert schedule.scoped_selector.endswith('rsqrt_decay')
  assert value('schedules.rsqrt_decay.learning_rate') == 1.0
  assert value('schedules.rsqrt_decay.warmup_steps') == 10000
  assert value('make_mesh.model') == 8 and value('axis_rules.fsdp') is False
  text = run.read_text()
  assert "the t5x run wrote to 'gs://bucket/old_run'" in text
  assert 'factor_map' in text  # reported, not silently dropped


def test_adafactor_options_carry_over_or_are_reported(tmp_path, flanx_gin):
  from flanx.training import adafactor
  accepted = set(inspect.signature(inspect.unwrap(adafactor.adafactor)).parameters)
  options = {'clipping_threshold': 0.5, 'multiply_by_parameter_scale': False, 'beta1': 0.9,
             'global_norm_clip_threshold': 1.0, 'skip_nan_updates': True}
  text = CONFIG_GIN + ''.join(f'adafactor.Adafactor.{k} = {v!r}\n' for k, v in options.items())
  (tmp_path / 'config.gin').write_text(text)
  run = _convert(tmp_path / 'config.gin', tmp_path)
  value = flanx_gin(run)
  converted = run.read_text()
  for name, v in options.items():
    if name in accepted:
      assert value(f'adafactor.{name}') == v
    else:
      assert f'adafactor.Adafactor.{name} = {v!r}' in converted and 'no such option' in converted


def test_missing_includes_are_reported_and_search_paths_find_them(t5x_tree, tmp_path_factory):
  lone = tmp_path_factory.mktemp('elsewhere') / 'run.gin'
  lone.write_text(FLAN_FINETUNE)
  text = t5x_gin.convert_file(str(lone))
  assert "run.gin:5: include 't5x/configs/runs/finetune.gin'" in text
  assert "run.gin:6: include 't5x/examples/t5/t5_1_1/xl.gin'" in text
  assert 'T5Config.d_model' not in text and 'the model is not described' in text
  text = t5x_gin.convert_file(str(lone), [str(t5x_tree)])
  assert 'T5Config.d_model = 2048' in text and 'include \'t5x/' not in text


def test_bad_input_names_file_and_line(tmp_path, capsys):
  bad = tmp_path / 'bad.gin'
  bad.write_text('TRAIN_STEPS = 10\nnetwork.T5Config.emb_dim = = 3\n')
  assert from_t5x_gin.main([str(bad)]) == 2
  assert f'{bad}:2' in capsys.readouterr().err
  activation = tmp_path / 'act.gin'
  activation.write_text(textwrap.dedent("""\
      TRAIN_STEPS = 10
      network.T5Config.vocab_size = 100
      network.T5Config.mlp_activations = ('tanh',)
      """))
  out = tmp_path / 'out.gin'
  assert from_t5x_gin.main([str(activation), '--output', str(out)]) == 2
  assert 'act.gin:3' in capsys.readouterr().err and not out.exists()  # nothing partial written


def test_cli_prints_the_gin(t5x_tree, capsys):
  assert from_t5x_gin.main([str(t5x_tree / 'old_run/config.gin')]) == 0
  out = capsys.readouterr().out
  assert out.startswith('# flanx gin converted from the t5x gin') and "include 'runs/finetune.gin'" in out


def test_decoding_settings_carry_over(tmp_path, flanx_gin):
  text = CONFIG_GIN + textwrap.dedent("""\
      models.EncoderDecoderModel.decode_fn = @decoding.temperature_sample
      decoding.temperature_sample.temperature = 0.7
      decoding.temperature_sample.topk = 40
      models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = 3
      """)
  (tmp_path / 'config.gin').write_text(text)
  value = flanx_gin(_convert(tmp_path / 'config.gin', tmp_path))
  assert value('decode_options.mode') == 'sample'
  assert value('decode_options.temperature') == 0.7 and value('decode_options.top_k') == 40


def test_special_loss_normalizing_factor(tmp_path, flanx_gin):
  text = CONFIG_GIN + ('models.EncoderDecoderModel.loss_normalizing_factor = '
                       '@losses.SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS\n')
  (tmp_path / 'config.gin').write_text(text)
  value = flanx_gin(_convert(tmp_path / 'config.gin', tmp_path))
  assert value('train.loss_normalizing_factor') == 'NUM_REAL_TARGET_TOKENS'


def test_a_schedule_flanx_lacks_exits_naming_the_binding(tmp_path, capsys):
  # Keeping flanx's default schedule would train with another learning rate: refused, nothing written.
  text = CONFIG_GIN.replace("'constant * rsqrt_decay'", "'constant * linear_warmup * cosine_decay'")
  (tmp_path / 'config.gin').write_text(text)
  line = text.splitlines().index("utils.create_learning_rate_scheduler.factors = 'constant * linear_warmup * "
                                 "cosine_decay'") + 1
  out = tmp_path / 'run.gin'
  assert from_t5x_gin.main([str(tmp_path / 'config.gin'), '--output', str(out)]) == 2
  err = capsys.readouterr().err
  assert f'config.gin:{line}: utils.create_learning_rate_scheduler.factors' in err and not out.exists()


EVAL_RUN = """\
# An evaluation gin in the shape of t5x's configs/runs/eval.gin plus a user's overrides.
from __gin__ import dynamic_registration
import __main__ as eval_script
from t5x import partitioning
from t5x import utils

include 't5x/examples/t5/t5_1_1/base.gin'

DROPOUT_RATE = 0.0
CHECKPOINT_PATH = 'gs://bucket/run/checkpoint_1005000'
EVAL_OUTPUT_DIR = %gin.REQUIRED
MIXTURE_OR_TASK_NAME = 'my_eval_task'

eval_script.evaluate:
  model = %MODEL
  dataset_cfg = @utils.DatasetConfig()
  restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
  output_dir = %EVAL_OUTPUT_DIR

utils.DatasetConfig:
  mixture_or_task_name = %MIXTURE_OR_TASK_NAME
  task_feature_lengths = {'inputs': 128, 'targets': 32}
  split = 'validation'
  batch_size = 16
  shuffle = False
  seed = 42

utils.RestoreCheckpointConfig:
  path = %CHECKPOINT_PATH
  mode = 'specific'
"""

INFER_RUN = """\
from __gin__ import dynamic_registration
import __main__ as infer_script
from t5x import decoding
from t5x import models
from t5x import utils

include 't5x/examples/t5/t5_1_1/base.gin'

DROPOUT_RATE = 0.0
infer_script.infer:
  mode = 'predict'
  model = %MODEL
  output_dir = '/tmp/old_infer'
  dataset_cfg = @utils.DatasetConfig()
  restore_checkpoint_cfg = @utils.RestoreCheckpointConfig()
  checkpoint_period = 100

utils.DatasetConfig:
  mixture_or_task_name = 'my_task'
  task_feature_lengths = {'inputs': 64, 'targets': 48}
  split = 'test'
  batch_size = 8

utils.RestoreCheckpointConfig.path = 'gs://bucket/run/checkpoint_2000'
models.EncoderDecoderModel.decode_fn = @decoding.temperature_sample
decoding.temperature_sample.topk = 0
decoding.temperature_sample.topp = 0.9
models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = 2
"""


def test_eval_gin_decodes_like_t5x(t5x_tree, tmp_path, flanx_gin):
  _write(t5x_tree, {'my_runs/eval.gin': EVAL_RUN})
  run = _convert(t5x_tree / 'my_runs/eval.gin', tmp_path)
  import flanx.inference.evaluate  # noqa: F401  (registers evaluate)
  value = flanx_gin(run, [])
  assert value('evaluate.checkpoint_path') == 'gs://bucket/run/checkpoint_1005000'
  assert value('evaluate.mixture_or_task_name') == 'my_eval_task'
  assert value('evaluate.task_feature_lengths') == {'inputs': 128, 'targets': 32}
  assert value('evaluate.batch_size') == 16 and value('evaluate.split') == 'validation'
  assert value('decode_options.max_decode_length') == 32
  assert value('decode_options.mode') == 'beam' and value('decode_options.beam_size') == 1  # t5x's default
  assert T5Config().d_model == 512 and T5Config().activation == 'gated-gelu'
  assert 'a training setting: no effect on evaluation or inference' in run.read_text()


def test_infer_gin_with_sampling(t5x_tree, tmp_path, flanx_gin):
  _write(t5x_tree, {'my_runs/infer.gin': INFER_RUN})
  run = _convert(t5x_tree / 'my_runs/infer.gin', tmp_path)
  import flanx.inference.infer  # noqa: F401  (registers infer)
  value = flanx_gin(run, [])
  assert value('infer.checkpoint_path') == 'gs://bucket/run/checkpoint_2000'
  assert value('infer.output_dir') == '/tmp/old_infer' and value('infer.split') == 'test'
  assert value('decode_options.mode') == 'sample' and value('decode_options.top_k') == 0
  assert value('decode_options.top_p') == 0.9 and value('decode_options.num_decodes') == 2
  assert value('decode_options.max_decode_length') == 48
  assert 'infer_script.infer.checkpoint_period = 100' in run.read_text()


def test_relative_steps_and_a_step_offset_at_the_checkpoint(t5x_tree, tmp_path, flanx_gin):
  text = FLAN_FINETUNE + 'TRAIN_STEPS_RELATIVE = 5000\nadafactor.Adafactor.step_offset = 1138000\n'
  _write(t5x_tree, {'my_runs/relative.gin': text})
  run = _convert(t5x_tree / 'my_runs/relative.gin', tmp_path)
  value = flanx_gin(run)
  if _train_accepts('continue_step'):
    assert value('train.relative_steps') == 5000
  else:
    assert value('train.train_steps') == 5000
  # t5x restarts Adafactor's decay at the checkpoint's step; flanx's fresh optimizer count already starts there.
  assert value('adafactor.step_offset') == 0
  assert 'train.restore_optimizer_state = True' in run.read_text()  # the alternative is spelled out


def test_a_model_gin_alone_and_a_model_then_run_pair(t5x_tree, tmp_path, flanx_gin):
  model = _convert(t5x_tree / 't5x/examples/t5/t5_1_1/xl.gin', tmp_path)  # a flanx models/*.gin equivalent
  text = model.read_text()
  assert 'include' not in text and 'T5Config.d_model = 2048' in text and 'DROPOUT_RATE = 0.0' in text
  # t5x's usual command line: --gin_file=MODEL --gin_file=RUN; the run gin alone leaves %MODEL undefined.
  _write(t5x_tree, {'lone/run.gin': RUN_FINETUNE.replace('MIXTURE_OR_TASK_NAME = %gin.REQUIRED',
                                                           "MIXTURE_OR_TASK_NAME = 'task'")})
  lone = t5x_gin.convert_file(str(t5x_tree / 'lone/run.gin'))
  assert 'macros used but never defined' in lone and '%MODEL' in lone
  out = tmp_path / 'pair.gin'
  assert from_t5x_gin.main([str(t5x_tree / 't5x/examples/t5/t5_1_1/xl.gin'), str(t5x_tree / 'lone/run.gin'),
                            '--output', str(out)]) == 0
  value = flanx_gin(out, ['MODEL_DIR = "/tmp/x"', 'INITIAL_CHECKPOINT_PATH = None', 'TRAIN_STEPS = 10',
                          "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 8}"])
  assert T5Config().d_model == 2048 and value('train.mixture_or_task_name') == 'task'
  assert value('train.batch_size') == 128 and 'never defined' not in out.read_text()


def test_task_module_that_cannot_be_imported_is_left_to_the_user(tmp_path):
  text = CONFIG_GIN + "train/utils.DatasetConfig.module = 't5.data.mixtures'\n"
  (tmp_path / 'config.gin').write_text(text)
  converted = t5x_gin.convert_file(str(tmp_path / 'config.gin'))
  assert "# MIXTURE_OR_TASK_MODULE: the t5x gin imports 't5.data.mixtures'" in converted
  assert '\nMIXTURE_OR_TASK_MODULE =' not in converted


def test_real_t5x_example_gins(tmp_path, flanx_gin):
  """With a t5x checkout (FLANX_T5X_DIR), its own T5.1.1 base WMT fine-tuning gin converts and parses."""
  import os
  root = os.environ.get('FLANX_T5X_DIR')
  path = os.path.join(root or '', 't5x/examples/t5/t5_1_1/examples/base_wmt_finetune.gin')
  if not os.path.isfile(path):
    pytest.skip('set FLANX_T5X_DIR to a t5x checkout to convert its example gins')
  run = _convert(path, tmp_path)
  value = flanx_gin(run)
  assert T5Config() == T5Config(vocab_size=32128, d_model=768, d_kv=64, num_heads=12, d_ff=2048,
                                num_encoder_layers=12, num_decoder_layers=12, activation='gated-gelu',
                                tie_embeddings=False, dropout_rate=0.1, dtype='bfloat16')
  assert value('train.task_feature_lengths') == {'inputs': 256, 'targets': 256}
  assert value('train.batch_size') == 128 and value('train.loss_normalizing_factor') == 233472
  assert value('train.train_steps') == (1_020_000 if _train_accepts('continue_step') else 20_000)
  assert value('schedules.constant.learning_rate') == 0.001 and value('train.checkpoint_period') == 5000
