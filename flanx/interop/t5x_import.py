"""t5x checkpoint → a verified Hugging Face folder or a flanx checkpoint (`python -m flanx.import_t5x`)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from flanx import gin_config
from flanx.interop import staging
from flanx.model.config import T5Config

PyTree = Any


def write_flanx_checkpoint(output_dir: str | os.PathLike, params: PyTree, config: T5Config, step: int,
                           source: str, overwrite: bool = False) -> pathlib.Path:
  """OUT/checkpoint_<step>/{params, meta} and OUT/config.gin (the model config), appearing whole or not at all."""
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  from flanx.training.checkpoint_meta import CheckpointMeta  # pylint: disable=g-import-not-at-top
  with staging.staged_folder(output_dir, overwrite, 'import') as folder:
    checkpoints.write_params_checkpoint(str(folder), step, network.to_model_layout(config, params),
                                        CheckpointMeta(step=step, imported_from=source, format='t5x'))
    (folder / 'config.gin').write_text(model_gin(config))
  return pathlib.Path(output_dir).absolute()


def model_gin(config: T5Config) -> str:
  """A gin snippet binding `config` (what `python -m flanx.export` reads from MODEL_DIR/config.gin)."""
  lines = ['# Model config of a t5x checkpoint imported by flanx.import_t5x.', 'import flanx.model.config',
           'import flanx.training.loop', '', 'train.model_config = @T5Config()']
  lines += [f'T5Config.{f.name} = {getattr(config, f.name)!r}' for f in dataclasses.fields(config)]
  return '\n'.join(lines) + '\n'


def import_t5x(t5x_checkpoint: str, output_dir: str, *, output_format: str = 'hf',
               config_overrides: Mapping[str, Any] | None = None, activation: str | None = None,
               vocab: str | None = None, newline_mode: str = 'none', dtype: str = 'float32',
               max_shard_size: int | str = '5GB', verify: bool = True, handler: bool = True,
               overwrite: bool = False) -> pathlib.Path:
  """Converts a t5x checkpoint to an HF folder or a flanx checkpoint; returns the written folder.

  The config is read off the tensors, then `config_overrides` (T5Config fields) replace what they name; the
  tensors are checked against the result.
  """
  from flanx.interop import hf_export, t5x_checkpoint as t5x_lib  # pylint: disable=g-import-not-at-top
  overrides = dict(config_overrides or {})
  if activation is not None and overrides.setdefault('activation', activation) != activation:
    raise ValueError(f'--activation={activation} contradicts T5Config.activation={overrides["activation"]!r}')
  source = t5x_lib.find_checkpoint(t5x_checkpoint)  # the output must not overlap what is read (cf. export)
  staging.check_outside(output_dir, source, 't5x checkpoint folder')
  staging.check_outside(output_dir, os.path.dirname(source), 't5x run folder', new_inside_ok=True)
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
  vocabulary = hf_export.resolve_vocabulary(vocab or _default_vocab(), newline_mode, None, None)
  holder = {'params': params}
  del params  # the exporter owns the only reference from here on
  card = {'base_model': checkpoint_dir, 'step': step, 'mixture': None}
  return hf_export.export_model(lambda: holder.pop('params'), config, output_dir, vocabulary, dtype=dtype,
                                max_shard_bytes=hf_export.parse_size(max_shard_size), verify=verify, handler=handler,
                                overwrite=overwrite, card_info=card)


def _default_vocab() -> str:
  vocab_lib = gin_config.tasks_module('vocab')
  return vocab_lib.T5_VOCAB_PATH
