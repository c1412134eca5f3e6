"""Params from checkpoints written elsewhere (Hugging Face folders; t5x checkpoints), in flanx's layout."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from flanx.model import network
from flanx.model.config import T5Config
from flanx.training import checkpoints, steps

PyTree = Any


def _check_matches(config: T5Config, found: T5Config, path: str) -> None:
  fields = ('vocab_size', 'd_model', 'd_kv', 'num_heads', 'd_ff', 'num_encoder_layers', 'num_decoder_layers',
            'activation', 'tie_embeddings')
  diffs = [f'{f}: model config {getattr(config, f)!r} vs checkpoint {getattr(found, f)!r}'
           for f in fields if getattr(config, f) != getattr(found, f)]
  if diffs:
    raise checkpoints.CheckpointRestoreError(f'{path} does not match the configured model:\n  ' + '\n  '.join(diffs))


def load_params(path: str, config: T5Config) -> PyTree:
  """Host (numpy) params from an HF folder or a t5x checkpoint, in the layout `config` expects.

  t5x: a `checkpoint` msgpack file, a checkpoint_<step> folder holding one (or an Orbax `state/`), or a run
  folder with checkpoint_<step> subfolders (newest step); local or gs://. Shapes and tying are checked against
  `config` (the activation is not stored in t5x checkpoints: the config's is used).
  """
  from flanx.interop import hf_format, t5x_checkpoint  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(path, 'config.json')):
    params, found = hf_format.read_hf_model(path)
    _check_matches(config, found, path)
    return network.to_model_layout(config, params)
  if t5x_checkpoint.is_t5x_checkpoint(path):
    params, _, _ = t5x_checkpoint.load_t5x_params(path, config)
    return network.to_model_layout(config, params)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} does not exist')
  raise checkpoints.CheckpointRestoreError(f'{path}: not a flanx checkpoint, a Hugging Face folder (config.json) '
                                           'or a t5x checkpoint (checkpoint msgpack file)')


def place_params(host_params: PyTree, param_shardings: PyTree) -> PyTree:
  """Host (numpy) params → global arrays on the mesh; each process supplies only its own shards."""
  def put(x, sharding):
    x = np.asarray(x, np.float32)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, host_params, param_shardings)


def load_sharded_params(path: str, config: T5Config, param_shardings: PyTree) -> PyTree:
  """Params from a flanx checkpoint (run folder or checkpoint_<step>), HF folder or t5x checkpoint, on the mesh."""
  if checkpoints.is_flanx_checkpoint(path):
    return checkpoints.restore_params(path, steps.with_shardings(network.abstract_params(config), param_shardings))
  return place_params(load_params(path, config), param_shardings)
