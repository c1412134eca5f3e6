"""flanx LoRA adapters written as PEFT folders give flanx's logits and greedy tokens through `peft`, and read back."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flanx.interop import hf_format, hf_verify, peft_adapter
from flanx.model import network, peft


def _lora_model(tiny_config, random_params, lora, scan=False):
  base = tiny_config(scan_layers=scan)
  config = base.replace(lora=lora)
  adapters, _ = peft.split_trainable(network.init_params(config, jax.random.key(3)))
  rng = np.random.default_rng(4)
  adapters = jax.tree.map(lambda x: 0.3 * rng.standard_normal(x.shape).astype(np.float32), adapters)  # B ≠ 0
  frozen = network.to_model_layout(config, random_params(base))
  return base, config, peft.combine(adapters, frozen)


def _reference(config, params):
  rng = np.random.default_rng(5)
  enc = rng.integers(2, config.vocab_size, (3, 9)).astype(np.int32)
  enc[1, 6:] = 0
  dec = np.concatenate([np.zeros((3, 1), np.int32), rng.integers(2, config.vocab_size, (3, 5))], 1).astype(np.int32)
  return hf_verify.flanx_reference(params, config, enc, dec)


@pytest.mark.slow
@pytest.mark.parametrize('lora', [
    peft.LoraConfig(rank=4, alpha=8.0),
    peft.LoraConfig(rank=2, alpha=2.0, target_modules=('k', 'o', 'wi_1', 'wo'), blocks=('cross', 'mlp')),
])
def test_adapter_folder_reproduces_flanx_through_peft(tiny_config, random_params, lora, tmp_path):
  base, config, params = _lora_model(tiny_config, random_params, lora)
  base_folder = hf_format.write_hf_model(tmp_path / 'base', peft.split_trainable(params)[1], base)
  folder = tmp_path / 'adapter'
  folder.mkdir()
  peft_adapter.write_adapter(folder, params, config, str(base_folder))
  settings = json.loads((folder / 'adapter_config.json').read_text())
  assert settings['task_type'] == 'SEQ_2_SEQ_LM' and settings['r'] == lora.rank
  # Readable like adapter_config.json (safetensors' save_file alone writes 0600).
  assert (folder / 'adapter_model.safetensors').stat().st_mode & 0o777 == (folder / 'adapter_config.json').stat().st_mode & 0o777
  assert (base_folder / 'model.safetensors').stat().st_mode & 0o777 == (base_folder / 'config.json').stat().st_mode & 0o777
  assert settings['lora_alpha'] == lora.alpha and settings['base_model_name_or_path'] == str(base_folder)

  reference = _reference(config, params)
  summary = peft_adapter.verify_adapter(str(folder), str(base_folder), reference)
  assert summary['max_logit_diff'] <= 1e-4
  # peft applied exactly the adapted modules: as many LoRA layers as flanx has adapters.
  model = peft_adapter.load_peft_model(str(folder), str(base_folder))
  adapted = {name for name, module in model.named_modules() if hasattr(module, 'lora_A')}
  assert len(adapted) == len(jax.tree.leaves(peft.split_trainable(params)[0])) // 2

  restored, restored_lora = peft_adapter.read_adapter(folder, base)
  assert (restored_lora.rank, restored_lora.alpha, restored_lora.dropout) == (lora.rank, lora.alpha, lora.dropout)
  modules = [path for path, _ in hf_format.projection_modules(base)]
  assert [m for m in modules if restored_lora.targets(m)] == [m for m in modules if lora.targets(m)]
  jax.tree.map(np.testing.assert_array_equal, restored, peft.split_trainable(params)[0])


@pytest.mark.slow
def test_scanned_adapters_export_like_unscanned(tiny_config, random_params, tmp_path):
  lora = peft.LoraConfig(rank=4)
  _, config, params = _lora_model(tiny_config, random_params, lora)
  scanned = network.to_model_layout(config.replace(scan_layers=True), params)
  assert peft_adapter.adapter_tensors(scanned, config).keys() == peft_adapter.adapter_tensors(params, config).keys()
  for key, value in peft_adapter.adapter_tensors(scanned, config).items():
    np.testing.assert_array_equal(value, peft_adapter.adapter_tensors(params, config)[key])


@pytest.mark.slow
def test_a_wrong_adapter_fails_verification(tiny_config, random_params, tmp_path):
  base, config, params = _lora_model(tiny_config, random_params, peft.LoraConfig(rank=4))
  base_folder = hf_format.write_hf_model(tmp_path / 'base', peft.split_trainable(params)[1], base)
  folder = tmp_path / 'adapter'
  folder.mkdir()
  wrong = config.replace(lora=peft.LoraConfig(rank=4, alpha=32.0))  # scale 8 where flanx trained with 4
  peft_adapter.write_adapter(folder, params, wrong, str(base_folder))
  with pytest.raises(hf_verify.VerificationError, match='logits differ'):
    peft_adapter.verify_adapter(str(folder), str(base_folder), _reference(config, params))
