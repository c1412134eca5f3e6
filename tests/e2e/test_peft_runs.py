"""A LoRA run (PEFT='lora') through the real trainer: exact resume, adapter-only checkpoints, PEFT and merged
exports verified against transformers + peft."""

from __future__ import annotations

import json

import jax

from flanx import export
from flanx.model import peft

from train_helpers import assert_trees_equal, saved_params, train_in_process  # pylint: disable=g-bad-import-order

LORA = {'PEFT': "'lora'", 'LoraConfig.rank': 4, 'LoraConfig.target_modules': "('q', 'v', 'wo')",
        'CHECKPOINT_PERIOD': 3, 'T5Config.dropout_rate': 0.1, 'LoraConfig.dropout': 0.1}


def test_lora_run_resumes_exactly_and_exports_through_peft(tmp_path):
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train_in_process(straight, 6, **LORA)
  train_in_process(resumed, 3, **LORA)
  result = train_in_process(resumed, 6, **LORA)
  assert result['step'] == 6
  adapters = saved_params(straight, 6)
  assert all(p[-1].key in peft.ADAPTER_LEAVES for p, _ in jax.tree_util.tree_leaves_with_path(adapters))
  assert_trees_equal(saved_params(resumed, 6), adapters)

  out = tmp_path / 'adapter'
  assert export.main(['--checkpoint_dir', str(straight), '--output_dir', str(out), '--adapter_only']) == 0
  settings = json.loads((out / 'adapter_config.json').read_text())
  assert settings['base_model_name_or_path'] == str(out / 'base') and settings['r'] == 4
  assert (out / 'base' / 'config.json').is_file() and (out / 'adapter_model.safetensors').is_file()

  merged = tmp_path / 'merged'
  assert export.main(['--checkpoint_dir', str(straight), '--output_dir', str(merged), '--merge']) == 0
  assert (merged / 'model.safetensors').is_file() and not (merged / 'adapter_config.json').exists()
