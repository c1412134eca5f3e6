"""Prompt tuning (PEFT='prompt') through the real trainer, exported as a PEFT PROMPT_TUNING folder verified through
peft; InferenceModel decodes the prompt-tuned checkpoint as peft does; a PEFT LoRA folder read back as a run's
initial adapter (train.initial_adapter_path)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import tasks  # noqa: F401  (registers its gin configurables before a run locks gin; the trainer imports it late)
from flanx import export
from flanx.model import peft

from train_helpers import TINY_MODEL, saved_params, train_in_process  # pylint: disable=g-bad-import-order

PROMPT = {'PEFT': "'prompt'", 'PromptConfig.num_virtual_tokens': 4, "TASK_FEATURE_LENGTHS": "{'inputs': 28, 'targets': 12}",
          'LEARNING_RATE': 0.3}


def _tiny_config():
  values = dict(b.replace('T5Config.', '').split(' = ') for b in TINY_MODEL)
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top
  return T5Config(**{k: int(v) for k, v in values.items()})


def test_prompt_run_trains_only_the_prompt_and_exports_through_peft(tmp_path):
  run = tmp_path / 'prompt'
  train_in_process(run, 1, **PROMPT)
  first = saved_params(run, 1)
  train_in_process(run, 4, **PROMPT)
  prompt = saved_params(run, 4)
  assert [[k.key for k in p] for p, _ in jax.tree_util.tree_leaves_with_path(prompt)] == [['encoder', 'prompt_embedding']]
  assert prompt['encoder']['prompt_embedding'].shape == (4, 32)
  assert np.abs(prompt['encoder']['prompt_embedding'] - first['encoder']['prompt_embedding']).max() > 0  # it learns

  out = tmp_path / 'adapter'
  assert export.main(['--checkpoint_dir', str(run), '--output_dir', str(out), '--adapter_only']) == 0  # verified
  settings = json.loads((out / 'adapter_config.json').read_text())
  assert settings['peft_type'] == 'PROMPT_TUNING' and settings['num_virtual_tokens'] == 4
  assert settings['base_model_name_or_path'] == str(out / 'base')

  # flanx's InferenceModel (placeholders added for it) decodes what peft generates from the plain inputs.
  import torch  # pylint: disable=g-import-not-at-top
  from flanx.inference.inference_model import InferenceModel  # pylint: disable=g-import-not-at-top
  from flanx.interop import peft_adapter  # pylint: disable=g-import-not-at-top
  config = _tiny_config().replace(prompt=peft.PromptConfig(num_virtual_tokens=4))
  model = InferenceModel(str(run), config, batch_size=2, max_decode_length=8)
  inputs = np.array([[ord(c) + 3 for c in 'copy: abc'] + [1, 0], [ord(c) + 3 for c in 'sort: cab'] + [1, 0]], np.int32)
  ours, _ = model.predict(inputs)
  hf = peft_adapter.load_peft_model(str(out), str(out / 'base'))
  with torch.no_grad():
    theirs = hf.generate(input_ids=torch.from_numpy(inputs).long(), attention_mask=torch.from_numpy(inputs != 0).long(),
                         max_new_tokens=8, do_sample=False, num_beams=1).numpy()[:, 1:]
  for a, b in zip(ours, theirs):
    a, b = a.tolist(), b.tolist()
    assert a[:a.index(1) + 1 if 1 in a else 8] == b[:b.index(1) + 1 if 1 in b else 8]

  with pytest.raises(ValueError, match='--adapter_only'):
    export.main(['--checkpoint_dir', str(run), '--output_dir', str(tmp_path / 'merged'), '--merge'])


LORA = {'PEFT': "'lora'", 'LoraConfig.rank': 4, 'LoraConfig.target_modules': "('q', 'v', 'wo')"}


def test_lora_adapter_folder_continues_as_initial_adapter(tmp_path):
  first = tmp_path / 'first'
  train_in_process(first, 3, **LORA)
  out = tmp_path / 'adapter'
  assert export.main(['--checkpoint_dir', str(first), '--output_dir', str(out), '--adapter_only']) == 0
  # A new run on the exported base starts from the exported adapter (a negligible learning rate keeps it there).
  second = tmp_path / 'second'
  train_in_process(second, 1, INITIAL_CHECKPOINT_PATH=f'"{out / "base"}"', LEARNING_RATE=1e-20,
                   **{'train.initial_adapter_path': f'"{out}"'}, **LORA)
  continued, exported = saved_params(second, 1), saved_params(first, 3)
  assert jax.tree.structure(continued) == jax.tree.structure(exported)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), continued, exported)
  # An adapter of another shape is refused with the bindings that would match it.
  with pytest.raises(ValueError, match='LoraConfig.rank = 4'):
    train_in_process(tmp_path / 'third', 1, INITIAL_CHECKPOINT_PATH=f'"{out / "base"}"',
                     **{'train.initial_adapter_path': f'"{out}"', **LORA, 'LoraConfig.rank': 2})
