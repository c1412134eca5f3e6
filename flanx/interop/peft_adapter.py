"""PEFT adapters as Hugging Face `peft` folders: written (and verified through peft) and read back, for every
method in flanx.model.peft.

A folder holds adapter_config.json (peft_type, task_type SEQ_2_SEQ_LM, the method's settings,
base_model_name_or_path) and adapter_model.safetensors with peft's key names; each method's module says which
(lora.py, prompt.py, prefix.py, ia3.py). This module does the files, the reference and the verification.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from flanx.interop import hf_format
from flanx.model import peft
from flanx.model.config import T5Config

PyTree = Any
CONFIG_FILE = 'adapter_config.json'
WEIGHTS_FILE = 'adapter_model.safetensors'


def adapter_tensors(params: PyTree, config: T5Config) -> dict[str, np.ndarray]:
  """peft's state dict (float32) for the method's params in `params` (canonical or scanned)."""
  return peft.method(config).adapter_tensors(params, config)


def write_adapter(folder: pathlib.Path, params: PyTree, config: T5Config, base_model: str) -> None:
  """Writes adapter_config.json and adapter_model.safetensors into `folder` for the PEFT model `config`."""
  method = peft.method(config)
  hf_format.save_safetensors(method.adapter_tensors(params, config), pathlib.Path(folder) / WEIGHTS_FILE)
  (pathlib.Path(folder) / CONFIG_FILE).write_text(json.dumps(method.adapter_config(config, base_model), indent=2) + '\n')


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
  """peft's model (base + adapter) against flanx's PEFT model: logits and greedy tokens; raises on a mismatch."""
  from flanx.interop import hf_verify  # pylint: disable=g-import-not-at-top
  problems, summary, _ = hf_verify.compare_model(load_peft_model(adapter_folder, base_folder), reference)
  if problems:
    raise hf_verify.VerificationError(f'{adapter_folder} (peft, on {base_folder}) does not reproduce the flanx '
                                      'model:\n  ' + '\n  '.join(problems))
  return summary


def read_adapter(folder: str | os.PathLike, config: T5Config) -> tuple[PyTree, peft.Method]:
  """(flanx params of the adapter in `config`'s layout, its method config) from a peft folder (to continue tuning)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(folder)
  settings = json.loads((folder / CONFIG_FILE).read_text())
  by_type = {m.peft_type: m for m in peft.METHODS.values()}
  if settings.get('peft_type') not in by_type:
    raise ValueError(f'{folder / CONFIG_FILE}: peft_type {settings.get("peft_type")!r}, expected one of '
                     f'{sorted(by_type)}')
  return by_type[settings['peft_type']].from_adapter(settings, load_file(folder / WEIGHTS_FILE),
                                                     peft.base_config(config), str(folder / WEIGHTS_FILE))
