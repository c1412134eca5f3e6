"""Import: `python -m flanx.import_t5x --t5x_checkpoint=PATH_OR_GS --output_dir=OUT [--format=hf|flanx]`.

Reads a t5x checkpoint (msgpack + TensorStore, local or gs://; see flanx/t5x_checkpoint.py) and writes either
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
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from flanx import gin_utils
from flanx.config import T5Config

PyTree = Any


def write_flanx_checkpoint(output_dir: str | os.PathLike, params: PyTree, config: T5Config, step: int,
                           source: str, overwrite: bool = False) -> pathlib.Path:
  """OUT/checkpoint_<step>/{params, meta} (Orbax) and OUT/config.gin, staged and renamed into place."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from flanx import hf, model as model_lib  # pylint: disable=g-import-not-at-top
  output_dir = pathlib.Path(output_dir).absolute()
  if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
    raise FileExistsError(f'{output_dir} exists and is not empty (pass --overwrite to replace it)')
  output_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.import-', dir=output_dir.parent))
  try:
    folder = staging / 'run'
    options = ocp.CheckpointManagerOptions(step_prefix='checkpoint', create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(str(folder), options=options, item_names=('params', 'meta')) as manager:
      manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(model_lib.to_model_layout(config, params)),
          meta=ocp.args.JsonSave({'step': step, 'imported_from': source, 'format': 't5x'})))
      manager.wait_until_finished()
    (folder / 'config.gin').write_text(model_gin(config))
    hf.replace_folder(folder, output_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return output_dir


def model_gin(config: T5Config) -> str:
  """A gin snippet binding `config` (what `python -m flanx.export` reads from MODEL_DIR/config.gin)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  lines = ['# Model config of a t5x checkpoint imported by flanx.import_t5x.', 'import flanx.config',
           'import flanx.trainer', '', 'train.model_config = @T5Config()']
  lines += [f'T5Config.{f.name} = {getattr(config, f.name)!r}' for f in dataclasses.fields(config)]
  return '\n'.join(lines) + '\n'


def _flag_parser() -> argparse.ArgumentParser:
  from flanx import export  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument('--t5x_checkpoint', required=True, help='checkpoint file, checkpoint_<step> or run folder')
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--format', choices=('hf', 'flanx'), default='hf')
  parser.add_argument('--activation', choices=('gated-gelu', 'gated-silu', 'relu', 'gelu'),
                      help='MLP activation (not stored in t5x checkpoints); default gated-gelu / relu')
  parser.add_argument('--vocab', default=None, help="SentencePiece model or 'byte' (default: T5's vocabulary)")
  parser.add_argument('--newline_mode', choices=('lossless', 'dolly', 'none'), default='none')
  parser.add_argument('--dtype', choices=sorted(export.DTYPES), default='float32')
  parser.add_argument('--max_shard_size', default='5GB')
  parser.add_argument('--verify', type=export.parse_bool, nargs='?', const=True, default=True)
  parser.add_argument('--handler', type=export.parse_bool, nargs='?', const=True, default=True)
  parser.add_argument('--overwrite', type=export.parse_bool, nargs='?', const=True, default=False)
  return parser


def import_t5x(t5x_checkpoint: str, output_dir: str, *, output_format: str = 'hf',
               config_overrides: Mapping[str, Any] | None = None, activation: str | None = None,
               vocab: str | None = None, newline_mode: str = 'none', dtype: str = 'float32',
               max_shard_size: int | str = '5GB', verify: bool = True, handler: bool = True,
               overwrite: bool = False) -> pathlib.Path:
  """Converts a t5x checkpoint to an HF folder or a flanx checkpoint; returns the written folder.

  The config is read off the tensors, then `config_overrides` (T5Config fields) replace what they name; the
  tensors are checked against the result.
  """
  from flanx import export, t5x_checkpoint as t5x_lib  # pylint: disable=g-import-not-at-top
  overrides = dict(config_overrides or {})
  if activation is not None and overrides.setdefault('activation', activation) != activation:
    raise ValueError(f'--activation={activation} contradicts T5Config.activation={overrides["activation"]!r}')
  state, checkpoint_dir = t5x_lib.read_state(t5x_checkpoint)
  config = t5x_lib.infer_config(state['target'], **overrides)
  try:
    params = t5x_lib.to_flanx_params(state['target'], config)
  except t5x_lib.T5XCheckpointError as e:
    raise t5x_lib.T5XCheckpointError(f'{checkpoint_dir}: {e}') from None
  step = (state.get('state') or {}).get('step')
  step = int(np.asarray(step)) if step is not None else 0
  del state
  print(f'Read {checkpoint_dir} (step {step}): {config}', flush=True)
  if output_format == 'flanx':
    return write_flanx_checkpoint(output_dir, params, config, step, checkpoint_dir, overwrite)
  vocabulary = export.resolve_vocabulary(vocab or _default_vocab(), newline_mode, None, None)
  holder = {'params': params}
  del params  # the exporter owns the only reference from here on
  card = {'base_model': checkpoint_dir, 'step': step, 'mixture': None}
  return export.export_model(lambda: holder.pop('params'), config, output_dir, vocabulary, dtype=dtype,
                             max_shard_bytes=export.parse_size(max_shard_size), verify=verify, handler=handler,
                             overwrite=overwrite, card_info=card)


def _default_vocab() -> str:
  from tasks import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  return vocab_lib.T5_VOCAB_PATH


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (import flags plus optional t5x-style gin flags for the model config)."""
  from flanx import export  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)
  flags, rest = _flag_parser().parse_known_args(argv)
  args, gin_files, bindings = gin_utils.parse_args(rest, __doc__.splitlines()[0])
  overrides = {}
  if gin_files or bindings:
    export.parse_gin_unlocked(gin_files, bindings, args.gin_search_paths)
    overrides = {k: copy.deepcopy(v) for k, v in gin.get_bindings(T5Config).items()}  # deepcopy: %MACROs
  path = import_t5x(flags.t5x_checkpoint, flags.output_dir, output_format=flags.format, config_overrides=overrides,
                    activation=flags.activation, vocab=flags.vocab, newline_mode=flags.newline_mode,
                    dtype=flags.dtype, max_shard_size=flags.max_shard_size, verify=flags.verify,
                    handler=flags.handler, overwrite=flags.overwrite)
  print(f'Wrote {path}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
