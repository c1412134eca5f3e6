"""A PEFT run resumes only on the frozen base it trained on and with its PEFT settings: a changed
INITIAL_CHECKPOINT_PATH (or LoraConfig) on resume is refused, naming the setting, before anything is written."""

from __future__ import annotations

import os

import pytest

from flanx.interop import hf_format
from flanx.model.config import T5Config
from flanx.training import run_checks

from conftest import _random_params  # pylint: disable=g-bad-import-order
from train_helpers import TINY_MODEL, train_in_process  # pylint: disable=g-bad-import-order

LORA = {'PEFT': "'lora'", 'LoraConfig.rank': 2, 'CHECKPOINT_PERIOD': 1}


def _tiny_config() -> T5Config:
  values = dict(b.replace('T5Config.', '').split(' = ') for b in TINY_MODEL)
  return T5Config(**{k: int(v) for k, v in values.items()})


def _base(folder, seed):
  return str(hf_format.write_hf_model(folder, _random_params(_tiny_config(), seed), _tiny_config()))


@pytest.mark.slow
def test_resuming_a_lora_run_on_another_base_is_refused(tmp_path):
  first, second = _base(tmp_path / 'base_a', 1), _base(tmp_path / 'base_b', 2)
  run = tmp_path / 'run'
  train_in_process(run, 1, INITIAL_CHECKPOINT_PATH=f'"{first}"', **LORA)
  before = sorted(os.listdir(run))
  with pytest.raises(run_checks.RunConfigError, match='INITIAL_CHECKPOINT_PATH') as refused:
    train_in_process(run, 2, INITIAL_CHECKPOINT_PATH=f'"{second}"', **LORA)
  assert first in str(refused.value) and second in str(refused.value)
  with pytest.raises(run_checks.RunConfigError, match='T5Config.lora'):
    train_in_process(run, 2, INITIAL_CHECKPOINT_PATH=f'"{first}"', **{**LORA, 'LoraConfig.rank': 4})
  assert sorted(os.listdir(run)) == before
  assert train_in_process(run, 2, INITIAL_CHECKPOINT_PATH=f'"{first}"', **LORA)['step'] == 2  # same base: resumes
