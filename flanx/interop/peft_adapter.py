"""PEFT adapters as Hugging Face `peft` folders: LoRA (write, verified through peft; read back to continue tuning)
and prompt tuning (write, verified).

A folder holds adapter_config.json (peft_type LORA, task_type SEQ_2_SEQ_LM, r, lora_alpha, lora_dropout,
target_modules, base_model_name_or_path) and adapter_model.safetensors with PEFT's key names:
`base_model.model.<transformers module>.lora_A.weight` [r, in] and `….lora_B.weight` [out, r], i.e. flanx's
`lora_a` [in, r] and `lora_b` [r, out] transposed (torch Linear weights are [out, in]). `target_modules` is the
regex (matched in full against module names) that selects exactly the projections flanx adapted.

A prompt-tuning folder (peft_type PROMPT_TUNING, task_type SEQ_2_SEQ_LM, num_transformer_submodules 1 so only the
encoder input gets the prompt, num_virtual_tokens, token_dim) holds one tensor, `prompt_embeddings` [n, d_model]:
peft's seq2seq forward puts it before the input embeddings with attention 1, which is what flanx's placeholders
at positions 0..n-1 compute (flanx.model.peft).
"""

from __future__ import annotations

import json
import os
import pathlib
import dataclasses
import re
from typing import Any

import numpy as np

from flanx.interop import hf_format
from flanx.model import network, peft
from flanx.model.config import T5Config

PyTree = Any
CONFIG_FILE = 'adapter_config.json'
WEIGHTS_FILE = 'adapter_model.safetensors'
_PREFIX = 'base_model.model.'


def adapter_tensors(params: PyTree, config: T5Config) -> dict[str, np.ndarray]:
  """PEFT's state dict (float32) for the adapters in `params` (canonical or scanned; adapters alone or in the model)."""
  out = {}
  for module_path, hf_module in hf_format.projection_modules(config):
    if not config.lora.targets(module_path):
      continue
    for ours, theirs in (('lora_a', 'lora_A'), ('lora_b', 'lora_B')):
      value = np.asarray(hf_format.get_param(params, module_path + (ours,)), np.float32)
      out[f'{_PREFIX}{hf_module}.{theirs}.weight'] = np.ascontiguousarray(value.T)
  return out


def adapter_config(lora: peft.LoraConfig, base_model: str) -> dict[str, Any]:
  """adapter_config.json for `lora` on `base_model` (a folder path or Hub id)."""
  return {'peft_type': 'LORA', 'task_type': 'SEQ_2_SEQ_LM', 'r': lora.rank, 'lora_alpha': lora.alpha,
          'lora_dropout': lora.dropout, 'target_modules': lora.hf_target_regex(), 'bias': 'none',
          'fan_in_fan_out': False, 'inference_mode': True, 'init_lora_weights': True, 'use_rslora': False,
          'modules_to_save': None, 'base_model_name_or_path': base_model}


def prompt_adapter_config(config: T5Config, base_model: str) -> dict[str, Any]:
  """adapter_config.json of a prompt-tuning model (`config.prompt`) on `base_model`."""
  prompt = config.prompt
  text = prompt.init == 'text'
  return {'peft_type': 'PROMPT_TUNING', 'task_type': 'SEQ_2_SEQ_LM', 'num_virtual_tokens': prompt.num_virtual_tokens,
          'token_dim': config.d_model, 'num_transformer_submodules': 1, 'num_attention_heads': config.num_heads,
          'num_layers': config.num_encoder_layers, 'prompt_tuning_init': peft.PROMPT_INITS[prompt.init],
          'prompt_tuning_init_text': prompt.init_text if text else None,
          'tokenizer_name_or_path': base_model if text else None, 'tokenizer_kwargs': None, 'inference_mode': True,
          'modules_to_save': None, 'base_model_name_or_path': base_model}


def write_adapter(folder: pathlib.Path, params: PyTree, config: T5Config, base_model: str) -> None:
  """Writes adapter_config.json and adapter_model.safetensors into `folder` (LoRA or prompt tuning)."""
  if config.prompt is not None:
    tensors = {'prompt_embeddings': np.ascontiguousarray(np.asarray(params['encoder']['prompt_embedding'], np.float32))}
    settings = prompt_adapter_config(config, base_model)
  else:
    tensors, settings = adapter_tensors(params, config), adapter_config(config.lora, base_model)
  hf_format.save_safetensors(tensors, folder / WEIGHTS_FILE)
  (folder / CONFIG_FILE).write_text(json.dumps(settings, indent=2) + '\n')


def flanx_reference(params: PyTree, config: T5Config, encoder_tokens: np.ndarray, decoder_tokens: np.ndarray) -> Any:
  """hf_verify's reference for a PEFT model: flanx runs with the prompt placeholders in front (prompt tuning),
  peft gets the plain inputs (it adds its prompt itself)."""
  from flanx.interop import hf_verify  # pylint: disable=g-import-not-at-top
  with_prompt = peft.add_prompt_placeholders(encoder_tokens, peft.prompt_length(config)).astype(encoder_tokens.dtype)
  reference = hf_verify.flanx_reference(params, config, with_prompt, decoder_tokens)
  return dataclasses.replace(reference, encoder_tokens=encoder_tokens)


def load_peft_model(adapter_folder: str, base_folder: str) -> Any:
  """transformers' T5 from `base_folder` with the adapter applied by `peft` (float32, eval mode)."""
  import peft as hf_peft  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_verify  # pylint: disable=g-import-not-at-top
  return hf_peft.PeftModel.from_pretrained(hf_verify.load_hf_model(base_folder), adapter_folder).eval()


def verify_adapter(adapter_folder: str, base_folder: str, reference: Any) -> dict[str, Any]:
  """peft's model (base + adapter) against flanx's LoRA model: logits and greedy tokens; raises on a mismatch."""
  from flanx.interop import hf_verify  # pylint: disable=g-import-not-at-top
  problems, summary, _ = hf_verify.compare_model(load_peft_model(adapter_folder, base_folder), reference)
  if problems:
    raise hf_verify.VerificationError(f'{adapter_folder} (peft, on {base_folder}) does not reproduce the flanx '
                                      'model:\n  ' + '\n  '.join(problems))
  return summary


def read_adapter(folder: str | os.PathLike, config: T5Config) -> tuple[PyTree, peft.LoraConfig]:
  """(flanx adapter params in `config`'s layout, its LoraConfig) from a PEFT LoRA folder (to continue tuning)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  settings = json.loads((folder / CONFIG_FILE).read_text())
  if settings.get('peft_type') != 'LORA':
    raise ValueError(f'{folder / CONFIG_FILE}: peft_type {settings.get("peft_type")!r}, expected LORA')
  tensors = load_file(folder / WEIGHTS_FILE)
  modules = {}
  for key in tensors:
    match = re.fullmatch(re.escape(_PREFIX) + r'(.+)\.lora_([AB])(?:\.default)?\.weight', key)
    if not match:
      raise ValueError(f'{folder / WEIGHTS_FILE}: unexpected tensor {key!r}')
    modules.setdefault(match.group(1), {})[match.group(2)] = tensors[key]
  names = {hf: path for path, hf in hf_format.projection_modules(config)}
  unknown = sorted(set(modules) - set(names))
  if unknown:
    raise ValueError(f'{folder}: adapters on modules this model does not have: {unknown[:5]}')
  targets = {peft.hf_module_name(names[hf]) for hf in modules}
  blocks = {peft.module_block(names[hf]) for hf in modules}
  lora = peft.LoraConfig(rank=int(settings['r']), alpha=float(settings['lora_alpha']),
                         dropout=float(settings.get('lora_dropout') or 0.0), target_modules=tuple(sorted(targets)),
                         blocks=tuple(sorted(blocks)))
  config = config.replace(lora=lora)
  params: dict = {}
  for hf, path in names.items():
    if not lora.targets(path):
      continue
    if hf not in modules:
      raise ValueError(f'{folder}: no adapter for {hf}, which its target modules select')
    node = params
    for key in path:
      node = node.setdefault(key, {})
    node['lora_a'], node['lora_b'] = modules[hf]['A'].T.astype(np.float32), modules[hf]['B'].T.astype(np.float32)
  return network.to_model_layout(config, params), lora
