"""The main job on the embedded default: `python -m flanx.demo` (the README's first command).

On the shipped `flanx_demo` task (tasks/data/demo_dolly.jsonl: arithmetic, sorting, reversing, copying with a
twist), through the real entry points and gin files: evaluate a fresh byte-level T5 (exact match: before),
fine-tune it with packing and constant-LR Adafactor (`flanx.train`, gin/runs/demo.gin), evaluating every
checkpoint as it trains (exact match and BLEU on decoded held-out records; the best two by BLEU are kept),
evaluate the best checkpoint again (after), decode a few held-out prompts with it (`flanx.infer`), export it as a
verified Hugging Face folder (`flanx.export --select=best`) and show that transformers generates the same text.
Everything goes into one new run folder; the run's curves are MODEL_DIR/train_curves.png and checkpoints.png.

`--peft=lora` does the same with LoRA (rank 16 on every projection, Adam) on the frozen fresh model: only the
adapters train, eval/infer read the adapter checkpoint on its base, and the export is a PEFT adapter folder
(`--adapter_only`, the base beside it) whose text `peft.PeftModel` generates.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from typing import Sequence

import gin

_DEMO_GIN = 'runs/demo.gin'
_TENSORBOARD_VERSION = '2.21.0'  # constraints.txt's pin
# eval/infer use the run gins with the demo's model and task (runs/demo.gin is a training run).
_DEMO_TASK = ['--gin_file=models/demo.gin', '--gin.MIXTURE_OR_TASK_NAME="flanx_demo"',
              '--gin.MIXTURE_OR_TASK_MODULE="tasks.demo"', "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 32}"]


_LOG_DIR = None  # set by main(): each stage's printed output goes to <run_dir>/logs/<stage>.log
# --peft=lora: the adapters (train, eval and infer must agree on them: the same PEFT macro and settings) and the
# optimizer LoRA users expect.
_LORA_MODEL = ["--gin.PEFT='lora'", '--gin.LoraConfig.rank=16', '--gin.LoraConfig.alpha=32.0',
               "--gin.LoraConfig.target_modules=('q', 'k', 'v', 'o', 'wi_0', 'wi_1', 'wo')"]
_LORA_TRAIN = ['--gin.train.optimizer=@adamw_optimizer', '--gin.LEARNING_RATE=0.001']


def _entry(module_main, argv: list[str]):
  """Runs an entry point's main(argv) in-process, with a clean gin state around it; its stdout goes to a log."""
  gin.clear_config()
  log_path = os.path.join(_LOG_DIR, module_main.__module__.rsplit('.', 1)[-1] + '.log')
  try:
    with open(log_path, 'a') as log, contextlib.redirect_stdout(log):
      print('$ python -m', module_main.__module__, ' '.join(argv), flush=True)
      code = module_main(argv)
  finally:
    gin.clear_config()
  if code:
    raise SystemExit(f'{argv[0] if argv else module_main.__module__} failed with exit code {code}')


def _write_base(base_dir: str, seed: int = 42) -> str:
  """The fresh demo model (the trainer's seed-42 initialisation) as a params-only checkpoint: what 'before' scores
  and what training starts from."""
  import jax
  from flanx import gin_config
  from flanx.model import network
  from flanx.model.config import T5Config
  from flanx.training import checkpoints
  from flanx.training.checkpoint_meta import CheckpointMeta
  gin.clear_config()
  try:
    gin_config.parse_gin(['models/demo.gin'], [], finalize=False)
    config = T5Config()
  finally:
    gin.clear_config()
  with jax.default_device(jax.devices('cpu')[0]):
    params = network.init_params(config, jax.random.key(seed))
  checkpoints.write_params_checkpoint(base_dir, 0, params, CheckpointMeta(step=0, seed=seed))
  return os.path.join(base_dir, 'checkpoint_0')


def _exact_match(run_dir: str, checkpoint: str, eval_examples: int, batch_size: int, model: list[str]) -> float:
  from flanx import eval as eval_main
  out = os.path.join(run_dir, 'eval', os.path.basename(checkpoint))
  _entry(eval_main.main, ['--gin_file=runs/eval.gin'] + _DEMO_TASK + model + [
                          f'--gin.CHECKPOINT_PATH="{checkpoint}"', f'--gin.EVAL_OUTPUT_DIR="{out}"',
                          f'--gin.BATCH_SIZE={batch_size}', '--gin.MAX_DECODE_LENGTH=32',
                          f'--gin.evaluate.num_examples={eval_examples}'])
  with open(os.path.join(out, 'validation_metrics.json')) as f:
    return json.load(f)['metrics']['flanx_demo']['exact_match']


def _report_training(model_dir: str) -> tuple[str | None, str | None]:
  """Prints one line per in-training eval; returns (the best checkpoint's folder, the rule), or (None, None)."""
  from flanx.training import inference_eval, keep_best
  with open(os.path.join(model_dir, 'train_metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for row in rows:
    if any(k.startswith('inference_eval/') for k in row):
      print('    ' + inference_eval.eval_line(row['step'], row, row.get('timing/inference_eval_seconds', 0.0)),
            flush=True)
  record = keep_best.read_record(model_dir)
  if record.get('best') is None:
    return None, None
  return os.path.join(model_dir, f'checkpoint_{record["best"]}'), record['rule']


def _held_out_prompts(path: str, count: int) -> list[dict]:
  import seqio
  import tasks.demo  # noqa: F401  (registers flanx_demo)
  ds = seqio.get_mixture_or_task('flanx_demo').get_dataset(None, split='validation', shuffle=False)
  records = [{'inputs': ex['inputs_pretokenized'].decode(), 'targets': ex['targets_pretokenized'].decode()}
             for ex in ds.take(count).as_numpy_iterator()]
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  return records


def _hf_generate(folder: str, prompts: list[str], max_new_tokens: int, adapter: bool = False) -> list[str]:
  import torch
  from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
  tokenizer = AutoTokenizer.from_pretrained(folder)
  if adapter:  # a PEFT folder: peft applies it to the base it names
    import peft
    model = peft.AutoPeftModelForSeq2SeqLM.from_pretrained(folder).eval()
  else:
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
  batch = tokenizer(prompts, return_tensors='pt', padding=True)
  with torch.no_grad():
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
  if type(tokenizer).__name__.startswith('ByT5'):  # ids past the 3 specials + 256 bytes are no text: seqio's
    out = [[i for i in row.tolist() if i < 259] for row in out]  # ByteVocabulary drops them, ByT5 would raise
  return tokenizer.batch_decode(out, skip_special_tokens=True)


def _table(rows: list[list[str]], header: list[str]) -> str:
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
  line = lambda cells: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)) + ' |'
  return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [line(r) for r in rows])


def _quiet_libraries() -> None:
  """Library chatter (absl/seqio warnings, transformers notices) would drown the demo's own output."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)
  logging.getLogger().setLevel(logging.ERROR)
  warnings.filterwarnings('ignore')
  os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
  os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
  from transformers.utils import logging as hf_logging
  hf_logging.disable_progress_bar()


def _tensorboard_command(model_dir: str) -> str:
  """How to look at the run in TensorBoard (which the demo's install leaves out: it is only a viewer)."""
  command = f'tensorboard --logdir {model_dir}'
  if importlib.util.find_spec('tensorboard') is None:
    command = f'{sys.executable} -m pip install tensorboard=={_TENSORBOARD_VERSION}, then {command}'
  return command


def flag_parser() -> argparse.ArgumentParser:
  """The demo's command-line flags."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--run_dir', default=None, help='new folder for everything the demo writes '
                      '(default: runs/demo-<timestamp> under the current directory)')
  parser.add_argument('--train_steps', type=int, default=None, help='override TRAIN_STEPS of gin/runs/demo.gin')
  parser.add_argument('--eval_examples', type=int, default=128, help='held-out records scored by exact match')
  parser.add_argument('--prompts', type=int, default=6, help='held-out prompts decoded and compared with HF')
  parser.add_argument('--min_exact_match', type=float, default=None,
                      help='fail unless held-out exact match (%%) after training reaches this (chance is ~0; default '
                      '10, or 5 with --peft=lora: adapters on a frozen fresh model learn less, 7.8%% after 800 steps)')
  parser.add_argument('--peft', choices=('lora',), default=None,
                      help='lora: train LoRA adapters on the frozen fresh model and export a PEFT adapter folder')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the demo end to end and prints a summary."""
  parser = flag_parser()
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from flanx import export as export_main, infer as infer_main, train as train_main

  run_dir = os.path.abspath(args.run_dir or os.path.join(
      'runs', 'demo-' + datetime.datetime.now().strftime('%Y%m%d-%H%M%S')))
  if os.path.exists(run_dir) and os.listdir(run_dir):
    raise SystemExit(f'{run_dir} exists and is not empty: the demo only writes into a new folder')
  os.makedirs(run_dir, exist_ok=True)
  global _LOG_DIR
  _LOG_DIR = os.path.join(run_dir, 'logs')
  os.makedirs(_LOG_DIR, exist_ok=True)
  _quiet_libraries()
  model_dir, hf_dir = os.path.join(run_dir, 'model'), os.path.join(run_dir, 'hf')
  started, timings = time.time(), {}
  lora = args.peft == 'lora'
  if args.min_exact_match is None:
    args.min_exact_match = 5.0 if lora else 10.0
  model_flags = _LORA_MODEL if lora else []
  base = _write_base(os.path.join(run_dir, 'base'))
  train_flags = [f'--gin_file={_DEMO_GIN}', f'--gin.MODEL_DIR="{model_dir}"', f'--gin.INITIAL_CHECKPOINT_PATH="{base}"']
  train_flags += (_LORA_MODEL + _LORA_TRAIN) if lora else []
  steps_flag = [f'--gin.TRAIN_STEPS={args.train_steps}'] if args.train_steps is not None else []
  print(f'flanx demo: everything goes to {run_dir}\n', flush=True)

  print('1/5 Evaluating the freshly initialised model (exact match on held-out records)...', flush=True)
  t = time.time()
  before = _exact_match(run_dir, base, args.eval_examples, 32, [])
  timings['evaluate before'] = time.time() - t

  print('2/5 Fine-tuning ' + ('LoRA adapters (packed batches, Adam; the fresh model frozen)...' if lora else
                              '(packed batches, constant-LR Adafactor; from the fresh model)...'), flush=True)
  t = time.time()
  _entry(train_main.main, train_flags + steps_flag)
  timings['train'] = time.time() - t
  best, rule = _report_training(model_dir)
  chosen = best or model_dir  # the best checkpoint by the run's keep_best rule (BLEU), else the newest

  print('3/5 Evaluating the fine-tuned model...', flush=True)
  t = time.time()
  after = _exact_match(run_dir, chosen, args.eval_examples, 32, model_flags)
  timings['evaluate after'] = time.time() - t

  print('4/5 Decoding held-out prompts with flanx...', flush=True)
  t = time.time()
  prompts_file = os.path.join(run_dir, 'prompts.jsonl')
  records = _held_out_prompts(prompts_file, args.prompts)
  _entry(infer_main.main, ['--gin_file=runs/infer.gin'] + _DEMO_TASK + model_flags + [
                           f'--gin.CHECKPOINT_PATH="{chosen}"', f'--gin.INFER_OUTPUT_DIR="{run_dir}/infer"',
                           f'--gin.INPUT_FILE="{prompts_file}"', '--gin.MAX_DECODE_LENGTH=32',
                           '--gin.infer.vocabulary=@get_vocabulary()', '--gin.get_vocabulary.path="byte"'])
  with open(os.path.join(run_dir, 'infer', 'prompts-greedy.jsonl-00000-of-00001')) as f:
    flanx_out = [json.loads(line)['prediction'] for line in f]
  timings['decode'] = time.time() - t

  print('5/5 Exporting a verified ' + ('PEFT adapter folder and generating with peft' if lora else
                                       'Hugging Face folder and generating with transformers') + '...', flush=True)
  t = time.time()
  _entry(export_main.main, [f'--checkpoint_dir={model_dir}', f'--output_dir={hf_dir}'] + (['--adapter_only'] if lora else [])
         + (['--select=best'] if best else []))
  hf_out = _hf_generate(hf_dir, [r['inputs'] for r in records], max_new_tokens=32, adapter=lora)
  timings['export + HF'] = time.time() - t

  show = lambda text, width=44: (text if len(text) <= width else text[:width - 1] + '…').replace('\n', ' ⏎ ')
  rows = [[show(r['inputs']), show(r['targets'], 20), show(f, 20), show(h, 20), 'yes' if f == h else 'NO']
          for r, f, h in zip(records, flanx_out, hf_out)]
  print('\n' + _table(rows, ['prompt', 'target', 'flanx', 'peft' if lora else 'transformers', 'same']))
  print('\n' + _table([['exact match (held-out)', f'{before:.1f}%', f'{after:.1f}%']], ['', 'before', 'after']))
  print('\n' + _table([[k, f'{v:.0f} s'] for k, v in timings.items()] + [['total', f'{time.time() - started:.0f} s']],
                      ['stage', 'time']))
  print(f'\nRun folder:        {run_dir}\nflanx checkpoints: {model_dir}\nHF export:         {hf_dir}\n'
        f'Logs:              {_LOG_DIR}\nTensorBoard:       {_tensorboard_command(model_dir)}')
  pictures = [p for p in ('train_curves.png', 'checkpoints.png') if os.path.exists(os.path.join(model_dir, p))]
  print(f'Selected:          {os.path.basename(chosen) if best else "the newest checkpoint"}'
        + (f' ({rule}), exported to {hf_dir}' if best else ' (no checkpoint had generation metrics)'))
  if pictures:
    print('Curves:            ' + ', '.join(os.path.join(model_dir, p) for p in pictures))
  same = all(f == h for f, h in zip(flanx_out, hf_out))
  if not same:
    print(f"ERROR: {'peft' if lora else 'transformers'} generated different text from flanx", file=sys.stderr)
  if after < args.min_exact_match:
    print(f'ERROR: exact match {after:.1f}% is below --min_exact_match={args.min_exact_match}', file=sys.stderr)
  return 0 if same and after >= args.min_exact_match else 1


if __name__ == '__main__':
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  sys.exit(cli_errors.run(main, run_dir=lambda: _LOG_DIR))
