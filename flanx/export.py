"""Export: `python -m flanx.export --checkpoint_dir=RUN_OR_CHECKPOINT --output_dir=OUT [--gin_file=… --gin.X=Y]`.

Writes a Hugging Face folder (`AutoModelForSeq2SeqLM` / `AutoTokenizer` load it offline): config.json,
generation_config.json, model.safetensors (sharded above --max_shard_size), the tokenizer, README.md (model
card), flanx_export.json and handler.py (Inference Endpoints). Unless --verify=false, the folder is reloaded with
transformers and checked against flanx (flanx/interop/hf_verify.py) before it appears at --output_dir: everything is
staged in a temporary folder beside it and renamed at the end, so a failure leaves nothing behind.

Model config and vocabulary come from the config the checkpoint recorded (else the run's MODEL_DIR/config.gin:
`train.model_config`, `train.mixture_or_task_name` → the task's vocabulary), read as data: it imports nothing
and sets nothing of this command (flanx/training/recorded_config.py); --gin.X=Y overrides it. Or,
with --gin_file, from the given gin files alone (model gins; `export_checkpoint.*` bindings work too).
--vocab=PATH.model|byte (with --newline_mode) replaces the task's vocabulary.

Flags: --dtype=float32|bfloat16 (stored weights), --max_shard_size=5GB, --verify=true, --handler=true,
--overwrite=false, --allow_unverified (a checkpoint from before flanx recorded checksums; never one that says it
has them). --select=best (the run's train.keep_best rule) or --metric=NAME [--mode=max|min] export the run's
best evaluated checkpoint (flanx.inference.checkpoint_table); the card names it, the rule and the other checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from flanx import gin_config
from flanx.inference import checkpoint_table
from flanx.interop import hf_export
from flanx.training import checkpoints, recorded_config


def _flag_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False, add_help=False)
  parser.add_argument('--checkpoint_dir', help='flanx run folder (newest checkpoint) or checkpoint_<step> folder')
  parser.add_argument('--output_dir', help='folder to create (must not exist or be empty, unless --overwrite)')
  parser.add_argument('--dtype', choices=sorted(hf_export.DTYPES), help='stored weight dtype (default float32)')
  parser.add_argument('--max_shard_size', help='largest safetensors file, e.g. 5GB (default), 500MB')
  parser.add_argument('--verify', type=gin_config.parse_bool, nargs='?', const=True, help='reload and compare (default true)')
  parser.add_argument('--vocab', help="SentencePiece model path or 'byte' (default: the run task's vocabulary)")
  parser.add_argument('--newline_mode', choices=('lossless', 'dolly', 'none'), help='with --vocab=PATH')
  parser.add_argument('--handler', type=gin_config.parse_bool, nargs='?', const=True, 
                      help='write handler.py (default true)')
  parser.add_argument('--adapter_only', type=gin_config.parse_bool, nargs='?', const=True,
                      help='LoRA runs: write a PEFT adapter folder (the base beside it when needed)')
  parser.add_argument('--merge', type=gin_config.parse_bool, nargs='?', const=True,
                      help='LoRA runs: fold the adapters into the base and write a plain HF folder')
  parser.add_argument('--allow_unverified', action='store_true', default=None,
                      help='accept a checkpoint from before flanx recorded checksums, unverified')
  parser.add_argument('--overwrite', type=gin_config.parse_bool, nargs='?', const=True, 
                      help='replace a non-empty output_dir')
  parser.add_argument('--select', choices=('newest', 'best'), default='newest',
                      help="which checkpoint of a run folder: the newest (default) or the best by the run's "
                      'train.keep_best rule (or --metric)')
  parser.add_argument('--metric', help='select the run checkpoint best by this metric, e.g. '
                      'inference_eval/dolly/bleu (recorded in training or by flanx.eval)')
  parser.add_argument('--mode', choices=('max', 'min'), help='with --metric: higher or lower is better '
                      '(default: min for losses, else max)')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (export flags plus t5x-style gin flags)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  own = _flag_parser()
  args, gin_files, bindings = gin_config.parse_args(argv, __doc__.splitlines()[0], [own])  # --help lists both
  flags, _ = own.parse_known_args(argv)
  if flags.allow_unverified:
    bindings.append('checkpoint_checksums.required = False')
  recorded_config.reset()
  selection = None
  if flags.select == 'best' or flags.metric:
    if not flags.checkpoint_dir:
      raise SystemExit('--select=best / --metric need --checkpoint_dir=RUN_FOLDER')
    try:
      flags.checkpoint_dir, selection = checkpoint_table.choose(flags.checkpoint_dir, flags.metric, flags.mode)
    except ValueError as e:
      raise SystemExit(f'--select/--metric: {e}') from None
    value = selection['metrics'].get(selection['metric'])
    print(f"Selected {flags.checkpoint_dir} ({selection['rule']}"
          + (f": {selection['metric']} = {value:.4g})" if value is not None else ')'), flush=True)
  flags.select = flags.metric = flags.mode = None
  if gin_files:
    gin_config.parse_gin(gin_files, bindings, args.gin_search_paths, finalize=False)
  else:
    if not flags.checkpoint_dir:
      raise SystemExit('--checkpoint_dir is required (or give --gin_file with export_checkpoint.checkpoint_dir)')
    checkpoint_path, run_dir, _ = checkpoints.locate(flags.checkpoint_dir)
    recorded = checkpoints.recorded_config(checkpoint_path)  # the config this checkpoint was written with
    if recorded is None:
      raise SystemExit(f'{os.path.join(run_dir, "config.gin")} not found: pass the model config with '
                       '--gin_file=models/….gin (and --vocab)')
    recorded_config.apply(*recorded)  # data: describes the model and vocabulary, runs no code
    gin_config.parse_gin([], bindings, args.gin_search_paths, finalize=False)  # the command line wins
  overrides = {k: v for k, v in vars(flags).items() if v is not None and k != 'allow_unverified'}
  path = hf_export.export_checkpoint(**overrides, selection=selection)
  print(f'Wrote {path}', flush=True)
  return 0


if __name__ == '__main__':
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  sys.exit(cli_errors.run(main))
