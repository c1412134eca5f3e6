"""Import: `python -m flanx.import_t5x --t5x_checkpoint=PATH_OR_GS --output_dir=OUT [--format=hf|flanx]`.

Reads a t5x checkpoint (msgpack + TensorStore, local or gs://; see flanx/interop/t5x_checkpoint.py) and writes either
- `--format=hf` (default): a verified Hugging Face folder, through the exporter (flags --vocab, --newline_mode,
  --dtype, --max_shard_size, --verify, --handler as in `python -m flanx.export`); or
- `--format=flanx`: OUT/checkpoint_<step>/params (Orbax, the layout the model config asks for) plus
  OUT/config.gin with the model config: usable as INITIAL_CHECKPOINT_PATH (t5x checkpoints also work there
  directly) and as `--checkpoint_dir` of the exporter.

The model config is read off the tensors (--activation picks gated-gelu [default for gated MLPs, Flan-T5],
gated-silu [UL2], relu [default otherwise, T5 1.0] or gelu); `T5Config.*` bindings from --gin_file model gins or
--gin.T5Config.X=Y replace what they name (e.g. relpos_max_distance, dtype, scan_layers), and the tensors are
checked against the result. The vocabulary defaults to T5's (gs://t5-data/...) with newline mode 'none', which is how the
public checkpoints were trained. Nothing is written unless the whole checkpoint matches the config.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Sequence

import gin

from flanx import gin_config
from flanx.interop import hf_export, t5x_import
from flanx.model.config import T5Config


def _flag_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False, add_help=False)
  parser.add_argument('--t5x_checkpoint', required=True, help='checkpoint file, checkpoint_<step> or run folder')
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--format', choices=('hf', 'flanx'), default='hf')
  parser.add_argument('--activation', choices=('gated-gelu', 'gated-silu', 'relu', 'gelu'),
                      help='MLP activation (not stored in t5x checkpoints); default gated-gelu / relu')
  parser.add_argument('--vocab', default=None, help="SentencePiece model or 'byte' (default: T5's vocabulary)")
  parser.add_argument('--newline_mode', choices=('lossless', 'dolly', 'none'), default='none')
  parser.add_argument('--dtype', choices=sorted(hf_export.DTYPES), default='float32')
  parser.add_argument('--max_shard_size', default='5GB')
  parser.add_argument('--verify', type=gin_config.parse_bool, nargs='?', const=True, default=True)
  parser.add_argument('--handler', type=gin_config.parse_bool, nargs='?', const=True, default=True)
  parser.add_argument('--overwrite', type=gin_config.parse_bool, nargs='?', const=True, default=False)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (import flags plus optional t5x-style gin flags for the model config)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  own = _flag_parser()
  args, gin_files, bindings = gin_config.parse_args(argv, __doc__.splitlines()[0], [own])  # --help lists both
  flags, _ = own.parse_known_args(argv)
  overrides = {}
  if gin_files or bindings:
    gin_config.parse_gin(gin_files, bindings, args.gin_search_paths, finalize=False)
    overrides = {k: copy.deepcopy(v) for k, v in gin.get_bindings(T5Config).items()}  # deepcopy: %MACROs
  path = t5x_import.import_t5x(flags.t5x_checkpoint, flags.output_dir, output_format=flags.format,
                                config_overrides=overrides, activation=flags.activation, vocab=flags.vocab, newline_mode=flags.newline_mode,
                                dtype=flags.dtype, max_shard_size=flags.max_shard_size, verify=flags.verify,
                                handler=flags.handler, overwrite=flags.overwrite)
  print(f'Wrote {path}', flush=True)
  return 0


if __name__ == '__main__':
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  sys.exit(cli_errors.run(main))
