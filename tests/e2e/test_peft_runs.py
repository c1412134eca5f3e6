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
  # The folder serves itself: its handler.py loads base + adapter (merged at load) and generates what peft does.
  import importlib.util  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from flanx.interop import peft_adapter  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('exported_handler', out / 'handler.py')
  handler_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(handler_module)
  served = handler_module.EndpointHandler(str(out))({'inputs': ['copy: abc', 'sort: cab'],
                                                     'parameters': {'max_new_tokens': 8}})
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  model = peft_adapter.load_peft_model(str(out), str(out / 'base'))
  with torch.no_grad():
    ids = model.generate(**tokenizer(['copy: abc', 'sort: cab'], return_tensors='pt', padding=True),
                         max_new_tokens=8, do_sample=False).tolist()
  assert served == [{'generated_text': tokenizer.decode([i for i in row if i < len(tokenizer)],
                                                        skip_special_tokens=True)} for row in ids]

  merged = tmp_path / 'merged'
  assert export.main(['--checkpoint_dir', str(straight), '--output_dir', str(merged), '--merge']) == 0
  assert (merged / 'model.safetensors').is_file() and not (merged / 'adapter_config.json').exists()
