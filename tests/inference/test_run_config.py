"""Reading a run's recorded config for eval/infer: parsed statement by statement, literals only, no imports."""

from __future__ import annotations

import gin
import pytest

from flanx import gin_config
from flanx.inference import run_config

RECORDED = """import flanx.model.config
import os as flanx2

# Macros:
# ==============================================================================
DROPOUT_RATE = 0.1
MIXTURE_OR_TASK_MODULE = 'tasks.demo'
MIXTURE_OR_TASK_NAME = 'flanx_demo'
TASK_FEATURE_LENGTHS = {'inputs': 128,
                        'targets': 32}

# Parameters for T5Config:
# ==============================================================================
T5Config.d_model = 128
T5Config.dropout_rate = %DROPOUT_RATE
T5Config.lora = @LoraConfig()
T5Config.activation = @os.system()

# Parameters for train:
# ==============================================================================
train.mixture_or_task_module = %MIXTURE_OR_TASK_MODULE
train.mixture_or_task_name = %MIXTURE_OR_TASK_NAME
train.task_feature_lengths = %TASK_FEATURE_LENGTHS
"""


def test_statements_join_wrapped_values_and_skip_imports():
  found = dict(run_config.statements(RECORDED))
  assert 'import' not in ' '.join(found)
  assert found['TASK_FEATURE_LENGTHS'] == "{'inputs': 128, 'targets': 32}"
  assert found['T5Config.lora'] == '@LoraConfig()' and found['train.mixture_or_task_name'] == '%MIXTURE_OR_TASK_NAME'


def test_only_literals_and_the_peft_references_are_taken():
  found = run_config.statements(RECORDED)
  macros = {k: v for k, v in found if '.' not in k}
  assert run_config._literal('%DROPOUT_RATE', macros) == '0.1'
  assert run_config._literal('%TASK_FEATURE_LENGTHS', macros) == "{'inputs': 128, 'targets': 32}"
  assert run_config._literal('@LoraConfig()', macros) == '@LoraConfig()'
  assert run_config._literal('@os.system()', macros) is None
  assert run_config._literal('%UNKNOWN', macros) is None
  assert run_config._literal('__import__("os")', macros) is None


def test_a_recorded_task_module_outside_tasks_is_refused():
  run_config._check_task_module('tasks.demo, tasks', 'x')
  with pytest.raises(gin_config.GinConfigError, match='evil.*--gin.MIXTURE_OR_TASK_MODULE'):
    run_config._check_task_module('tasks.demo, evil', 'the recorded config of RUN')


@pytest.mark.slow
def test_fill_unset_takes_model_and_task_but_never_what_the_command_set(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  tiny = dict(vocab_size=384, d_model=8, d_ff=8, d_kv=4, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
  params = jax.device_get(network.init_params(T5Config(**tiny), jax.random.key(0)))
  text = RECORDED.replace("T5Config.lora = @LoraConfig()\n", '').replace('T5Config.d_model = 128', '\n'.join(
      f'T5Config.{k} = {v}' for k, v in tiny.items()))
  checkpoints.write_params_checkpoint(str(tmp_path / 'run'), 5, params, {'step': 5, 'config_gin': text})
  command = [f'CHECKPOINT_PATH = "{tmp_path / "run"}"', "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 8}"]
  gin.clear_config()
  try:
    gin_config.parse_gin(['runs/eval.gin'], command, finalize=False)
    chosen = run_config.fill_unset('evaluate', command, log=lambda line: None)
    assert "MIXTURE_OR_TASK_NAME = 'flanx_demo'" in chosen and "MIXTURE_OR_TASK_MODULE = 'tasks.demo'" in chosen
    assert 'T5Config.d_model = 8' in chosen and 'T5Config.dropout_rate = 0.1' in chosen
    assert not any('activation' in c or 'TASK_FEATURE_LENGTHS' in c for c in chosen)
    gin.finalize()
    assert gin_config.gin_value('evaluate.task_feature_lengths') == {'inputs': 64, 'targets': 8}
    assert T5Config().d_model == 8 and T5Config().activation == 'gated-gelu'
  finally:
    gin.clear_config()
  checkpoints.write_params_checkpoint(str(tmp_path / 'evil'), 5, params, {'step': 5, 'config_gin': text.replace(
      "'tasks.demo'", "'evil_module'")})
  gin.clear_config()
  try:
    gin_config.parse_gin(['runs/eval.gin'], [f'CHECKPOINT_PATH = "{tmp_path / "evil"}"'], finalize=False)
    with pytest.raises(gin_config.GinConfigError, match='evil_module'):
      run_config.fill_unset('evaluate', [], log=lambda line: None)
  finally:
    gin.clear_config()
