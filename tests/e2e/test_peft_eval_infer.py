"""flanx.eval and flanx.infer on a LoRA run (PEFT='lora') with nothing but the trainer's PEFT macro and settings:
from the run's recorded config, from a model given on the command line, and with no recorded config at all. The
predictions are peft's: transformers + peft generating from the adapter folder flanx.export wrote.

Before the run builder, the command lines with the PEFT macro failed: eval.gin / infer.gin (and an export's model gin
files) did not read it ('no gin file or binding uses the macro PEFT'); the model had to be given as
`T5Config.lora = @LoraConfig()`. flanx.export from model gin files takes the PEFT macro too.
"""

from __future__ import annotations

import json

import gin
import pytest
import seqio

from flanx import eval as eval_cli
from flanx import export
from flanx import infer as infer_cli

from train_helpers import TINY_MODEL, train_in_process  # pylint: disable=g-bad-import-order

LORA = {'PEFT': "'lora'", 'LoraConfig.rank': 4, 'LoraConfig.target_modules': "('q', 'v', 'wo')"}
PROMPTS = ['copy: abc', 'sort: cab', 'reverse: fed']
# The task by name (a recorded config imports no module outside the shipped `tasks` package), the run's lengths.
TASK = ['--gin.MIXTURE_OR_TASK_NAME="flanx_test_copy"', '--gin.MIXTURE_OR_TASK_MODULE="fixture_tasks"',
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 12}", '--gin.BATCH_SIZE=2', '--gin.MAX_DECODE_LENGTH=8']
MODEL = ['--gin.' + b.replace(' = ', '=') for b in TINY_MODEL]  # the trainer's model flags
PEFT_FLAGS = ['--gin.' + f'{k}={v}' for k, v in LORA.items()]


def _run(main, argv):
  gin.clear_config()
  try:
    assert main(argv) == 0
  finally:
    gin.clear_config()


def _infer(run, out, prompts, flags) -> list[str]:
  _run(infer_cli.main, ['--gin_file=runs/infer.gin', f'--gin.CHECKPOINT_PATH="{run}"', f'--gin.INFER_OUTPUT_DIR="{out}"',
                        f'--gin.INPUT_FILE="{prompts}"', *TASK, *flags])
  with open(out / 'prompts-greedy.jsonl-00000-of-00001') as f:
    return [json.loads(line)['prediction'] for line in f]


def _eval(run, out, flags) -> dict:
  _run(eval_cli.main, ['--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{run}"', f'--gin.EVAL_OUTPUT_DIR="{out}"',
                       '--gin.evaluate.num_examples=4', '--gin.evaluate.truncation_examples=0', *TASK, *flags])
  with open(out / 'validation_metrics.json') as f:
    return json.load(f)['metrics']


def _peft_generates(adapter, prompts) -> list[str]:
  """Greedy generation by transformers + peft from the exported folder, decoded as flanx.infer decodes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from flanx.interop import peft_adapter  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.ByteVocabulary()
  rows = np.zeros((len(prompts), 24), np.int64)
  for i, text in enumerate(prompts):
    ids = list(vocabulary.encode(text)) + [vocabulary.eos_id]
    rows[i, :len(ids)] = ids
  model = peft_adapter.load_peft_model(str(adapter), str(adapter / 'base'))
  with torch.no_grad():
    out = model.generate(input_ids=torch.from_numpy(rows), attention_mask=torch.from_numpy(rows != 0).long(),
                         max_new_tokens=8, do_sample=False, num_beams=1).numpy()[:, 1:]
  texts = []
  for row in out.tolist():
    row = row[:row.index(vocabulary.eos_id)] if vocabulary.eos_id in row else row
    texts.append(vocabulary.decode([t for t in row if t != 0]))
  return texts


def test_eval_and_infer_of_a_lora_run_need_only_the_peft_macro(tmp_path):
  run = tmp_path / 'run'
  train_in_process(run, 4, **LORA)
  adapter = tmp_path / 'adapter'
  assert export.main(['--checkpoint_dir', str(run), '--output_dir', str(adapter), '--adapter_only',
                      '--verify=false']) == 0
  expected = _peft_generates(adapter, PROMPTS)
  prompts = tmp_path / 'prompts.jsonl'
  prompts.write_text(''.join(json.dumps({'inputs': p}) + '\n' for p in PROMPTS))

  # 1. No model flags: the model and the PEFT method come from the config the checkpoint recorded.
  assert _infer(run, tmp_path / 'infer_recorded', prompts, []) == expected
  recorded = _eval(run, tmp_path / 'eval_recorded', [])
  # 2. The trainer's model flags and PEFT macro (the record's model is then not read).
  assert _infer(run, tmp_path / 'infer_flags', prompts, MODEL + PEFT_FLAGS) == expected
  # 3. No recorded config at all (a meta without config_gin, no config.gin): the flags alone.
  meta_file = run / 'checkpoint_4' / 'meta' / 'metadata'
  meta = json.loads(meta_file.read_text())
  del meta['config_gin']
  meta_file.write_text(json.dumps(meta))
  (run / 'config.gin').unlink()
  assert _infer(run, tmp_path / 'infer_unrecorded', prompts, MODEL + PEFT_FLAGS) == expected
  assert _eval(run, tmp_path / 'eval_unrecorded', MODEL + PEFT_FLAGS) == recorded
  # flanx.export from model gin files alone with the PEFT macro: the adapter of the export that read the record.
  model_gin = tmp_path / 'model.gin'
  model_gin.write_text('\n'.join(['import flanx.model.config', 'import flanx.export', *TINY_MODEL,
                                  *[f'{k} = {v}' for k, v in LORA.items() if k.startswith('LoraConfig')],
                                  f"export_checkpoint.checkpoint_dir = '{run}'", "export_checkpoint.vocab = 'byte'",
                                  'export_checkpoint.verify = False']))
  again = tmp_path / 'adapter_again'
  gin.clear_config()
  try:
    assert export.main(['--gin_file', str(model_gin), "--gin.PEFT='lora'", f'--gin.export_checkpoint.output_dir="{again}"',
                        '--adapter_only']) == 0
  finally:
    gin.clear_config()
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  first, second = load_file(adapter / 'adapter_model.safetensors'), load_file(again / 'adapter_model.safetensors')
  assert sorted(first) == sorted(second) and all((first[k] == second[k]).all() for k in first)
  # Without the PEFT macro the checkpoint's meta names what is missing.
  with pytest.raises(ValueError, match=r"a PEFT = 'lora' run, and this command's model has no PEFT method: pass "
                                       r"--gin.PEFT='lora'"):
    _infer(run, tmp_path / 'infer_plain', prompts, MODEL)
