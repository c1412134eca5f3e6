"""One run builder (flanx/training/run_builder.py): the compile-only check and the trainer build the same train step
for the same gin flags, and every command's model takes the PEFT macro.

The compile-only check (aot.check_train) is given this machine's CPU devices; the trainer (loop.train) runs until
its first step is called. Both lowered programs are compared as XLA's text, and their arguments as (path, shape,
dtype, sharding): what the check measures is what the run runs.
"""

import gin
import jax
import pytest

from flanx import gin_config
from flanx.model import peft
from flanx.model.config import T5Config
from flanx.training import run_builder

from train_helpers import run_bindings  # pylint: disable=g-bad-import-order

LORA = {'PEFT': "'lora'", 'LoraConfig.rank': 4, 'LoraConfig.target_modules': "('q', 'v', 'wo')",
        'LoraConfig.base_dtype': "'bfloat16'", 'T5Config.dropout_rate': 0.1}


class _FirstStep(Exception):
  """Raised by the captured step: nothing needs to run once it is lowered."""


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _described(tree) -> list:
  return [(jax.tree_util.keystr(path), leaf.shape, str(leaf.dtype), leaf.sharding.spec, leaf.sharding.mesh.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.slow
@pytest.mark.parametrize('extra', [{'NUM_MICROBATCHES': 2}, LORA], ids=['full', 'lora'])
def test_compile_only_check_lowers_the_trainers_step(tmp_path, monkeypatch, extra):
  from flanx.training import aot, loop, steps, tpu_topology  # pylint: disable=g-import-not-at-top
  lowered = {}

  def check_compiles(name, jitted, *args):
    lowered['check'] = (jitted.lower(*args).as_text(), _described(args))
    raise _FirstStep  # its TPU compile is aot's own business (tests/training/test_aot.py)

  real_make_train_step = steps.make_train_step

  def trainer_step(*args, **kwargs):
    jitted = real_make_train_step(*args, **kwargs)

    def first_call(state, batch):
      arguments = _abstract((state, batch))
      lowered['trainer'] = (jitted.lower(*arguments).as_text(), _described(arguments))
      raise _FirstStep

    return first_call

  gin.clear_config()
  try:
    gin_config.parse_gin(['runs/finetune.gin'], run_bindings(tmp_path / 'run', 3, **extra))
    monkeypatch.setattr(aot, 'compile_step', check_compiles)
    with pytest.raises(_FirstStep):
      aot.check_train(tpu_topology.parse('v4-8'), jax.devices())  # one host, as this process
    monkeypatch.setattr(steps, 'make_train_step', trainer_step)
    with pytest.raises(_FirstStep):
      loop.train()
  finally:
    gin.clear_config()
  (check_text, check_args), (trainer_text, trainer_args) = lowered['check'], lowered['trainer']
  assert check_args == trainer_args
  if 'PEFT' in extra:  # the frozen base is an argument, in its storage dtype, and the adapters are what trains
    assert any(path.startswith('[0].frozen') and dtype == 'bfloat16' for path, _, dtype, _, _ in trainer_args)
    assert any(path.endswith("['lora_a']") for path, *_ in trainer_args)
  assert check_text == trainer_text


def test_every_command_takes_the_peft_macro():
  gin.clear_config()
  try:
    gin_config.parse_gin(['runs/eval.gin'], ['CHECKPOINT_PATH = "/nowhere"', "PEFT = 'lora'",
                                             'LoraConfig.rank = 2', 'T5Config.d_model = 64'], finalize=False)
    config = run_builder.bound_model_config()  # export: the run configurable's peft
    assert config.lora == peft.LoraConfig(rank=2) and config.d_model == 64
    assert run_builder.model_config(None, gin_config.gin_value('evaluate.peft')) == config  # eval / infer
  finally:
    gin.clear_config()
  assert run_builder.model_config(T5Config(), None) == T5Config()
  assert run_builder.model_config(T5Config(), 'prefix', remat='full') == T5Config(prefix=peft.PrefixConfig(),
                                                                                   remat='full')
  with pytest.raises(ValueError, match=r"PEFT='lorra': expected None or one of \['ia3', 'lora', 'prefix', 'prompt'\]"):
    run_builder.model_config(T5Config(), 'lorra')
