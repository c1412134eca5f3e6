"""Conversion between flanx params and Hugging Face `T5ForConditionalGeneration` checkpoints.

Folders written here load in transformers 4.x and 5.x alike: config.json is written by hand with every field
explicit, safetensors headers carry {"format": "pt"}, and only unique tensors are stored (`shared.weight`, plus
`lm_head.weight` for untied heads; never the `embed_tokens` aliases). A tied flanx model (T5 1.0, Flan-UL2) is
written without `lm_head.weight` and with `"tie_word_embeddings": true`, which transformers reads as
"lm_head = shared, decoder output scaled by d_model**-0.5" — exactly what flanx computes.

torch and transformers are imported inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from flanx.interop import staging
from flanx.model.config import DECODER_START_ID, EOS_ID, PAD_ID, T5Config

PyTree = Any

# Activation names: flanx `T5Config.activation` <-> HF `feed_forward_proj`. flanx's GeLU is the tanh approximation
# (t5x's), gated or not: HF maps 'gated-gelu' to gelu_new itself; for plain 'gelu' config.json says gelu_new.
_ACTIVATION_TO_HF = {'gated-gelu': 'gated-gelu', 'gated-silu': 'gated-silu', 'gated-relu': 'gated-relu',
                     'relu': 'relu', 'gelu': 'gelu'}
_ACTIVATION_FROM_HF = {v: k for k, v in _ACTIVATION_TO_HF.items()}

# Tensors some checkpoints hold that carry no information of their own (copies of shared.weight, and a
# cross-attention bias T5 never uses); accepted on reading and ignored, as transformers does.
_REDUNDANT = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight',
              'decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight')

_ATTENTION = (('query', 'q'), ('key', 'k'), ('value', 'v'), ('out', 'o'))


class HFConversionError(ValueError):
  """A checkpoint does not match the model config (lists every offending tensor)."""


# ----------------------------------------------------------------------------------------------------------------
# Name map.

def _name_map(config: T5Config) -> list[tuple[tuple[str, ...], str, bool]]:
  """(flanx canonical param path, HF tensor name, transpose?) for every tensor, in HF state-dict order."""
  mlp = ('wi_0', 'wi_1', 'wo') if config.gated else ('wi', 'wo')
  rows = [(('token_embedder', 'embedding'), 'shared.weight', False)]

  def attention(flax_prefix, hf_prefix):
    return [(flax_prefix + (f, 'kernel'), f'{hf_prefix}.{h}.weight', True) for f, h in _ATTENTION]

  def mlp_rows(flax_prefix, hf_prefix):
    return [(flax_prefix + (m, 'kernel'), f'{hf_prefix}.DenseReluDense.{m}.weight', True) for m in mlp]

  for i in range(config.num_encoder_layers):
    f, h = ('encoder', f'layers_{i}'), f'encoder.block.{i}'
    rows += attention(f + ('attention',), f'{h}.layer.0.SelfAttention')
    if i == 0:
      rows.append((('encoder', 'relpos_bias', 'rel_embedding'),
                   f'{h}.layer.0.SelfAttention.relative_attention_bias.weight', True))
    rows.append((f + ('pre_attention_layer_norm', 'scale'), f'{h}.layer.0.layer_norm.weight', False))
    rows += mlp_rows(f + ('mlp',), f'{h}.layer.1')
    rows.append((f + ('pre_mlp_layer_norm', 'scale'), f'{h}.layer.1.layer_norm.weight', False))
  rows.append((('encoder', 'encoder_norm', 'scale'), 'encoder.final_layer_norm.weight', False))

  for i in range(config.num_decoder_layers):
    f, h = ('decoder', f'layers_{i}'), f'decoder.block.{i}'
    rows += attention(f + ('self_attention',), f'{h}.layer.0.SelfAttention')
    if i == 0:
      rows.append((('decoder', 'relpos_bias', 'rel_embedding'),
                   f'{h}.layer.0.SelfAttention.relative_attention_bias.weight', True))
    rows.append((f + ('pre_self_attention_layer_norm', 'scale'), f'{h}.layer.0.layer_norm.weight', False))
    rows += attention(f + ('encoder_decoder_attention',), f'{h}.layer.1.EncDecAttention')
    rows.append((f + ('pre_cross_attention_layer_norm', 'scale'), f'{h}.layer.1.layer_norm.weight', False))
    rows += mlp_rows(f + ('mlp',), f'{h}.layer.2')
    rows.append((f + ('pre_mlp_layer_norm', 'scale'), f'{h}.layer.2.layer_norm.weight', False))
  rows.append((('decoder', 'decoder_norm', 'scale'), 'decoder.final_layer_norm.weight', False))

  if not config.tie_embeddings:
    rows.append((('decoder', 'logits_dense', 'kernel'), 'lm_head.weight', True))
  return rows


def projection_modules(config: T5Config) -> list[tuple[tuple[str, ...], str]]:
  """(flanx canonical path of a projection module, its transformers module name) for every q/k/v/o/wi/wo."""
  return [(path[:-1], name[:-len('.weight')]) for path, name, _ in _name_map(config)
          if path[-1] == 'kernel' and path[-2] != 'logits_dense']


def get_param(params: PyTree, path: tuple[str, ...]) -> Any:
  """A canonical-path leaf of canonical or scanned params (a scanned leaf is sliced to its layer)."""
  return _get_param(params, path)


def _flax_shapes(config: T5Config) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Canonical flanx param shapes, derived from the config alone."""
  c, d, inner = config, config.d_model, config.inner_dim
  shapes = {('token_embedder', 'embedding'): (c.vocab_size, d),
            ('encoder', 'relpos_bias', 'rel_embedding'): (c.num_heads, c.relpos_buckets),
            ('decoder', 'relpos_bias', 'rel_embedding'): (c.num_heads, c.relpos_buckets),
            ('decoder', 'logits_dense', 'kernel'): (d, c.vocab_size)}
  for path, _, _ in _name_map(config):
    if path in shapes:
      continue
    if path[-1] == 'scale':
      shapes[path] = (d,)
    elif path[-2] in ('query', 'key', 'value'):
      shapes[path] = (d, inner)
    elif path[-2] == 'out':
      shapes[path] = (inner, d)
    elif path[-2] == 'wo':
      shapes[path] = (c.d_ff, d)
    else:  # wi, wi_0, wi_1
      shapes[path] = (d, c.d_ff)
  return shapes


def _get_param(params: PyTree, path: tuple[str, ...]) -> Any:
  """A canonical-path leaf from canonical or scanned params; a scanned leaf is sliced (one layer only)."""
  node = params
  for j, key in enumerate(path):
    if key.startswith('layers_') and key not in node and 'layers' in node:
      layer = int(key.split('_')[1])
      return _get_param(node['layers'], path[j + 1:])[layer]
    if key not in node:
      raise HFConversionError(f'params lack {"/".join(path)} (have {sorted(node)} at {"/".join(path[:j]) or "root"})')
    node = node[key]
  return node.unbox() if hasattr(node, 'unbox') else node  # tolerate logically-annotated (boxed) params


# ----------------------------------------------------------------------------------------------------------------
# flanx -> HF.

def _hf_tensors(params: PyTree, config: T5Config) -> Iterator[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
  """(name, HF shape, thunk computing the float32 HF tensor) per tensor, so writers convert one at a time."""
  shapes = _flax_shapes(config)
  for path, name, transpose in _name_map(config):
    shape = shapes[path][::-1] if transpose else shapes[path]

    def make(path=path, transpose=transpose, shape=shape, name=name):
      x = np.asarray(_get_param(params, path), dtype=np.float32)
      x = np.ascontiguousarray(x.T) if transpose else x
      if x.shape != shape:
        raise HFConversionError(f'{"/".join(path)} has shape {x.shape[::-1] if transpose else x.shape}, '
                                f'config expects {shape[::-1] if transpose else shape} (for {name})')
      return x

    yield name, shape, make


def to_hf_state_dict(params: PyTree, config: T5Config) -> dict[str, np.ndarray]:
  """flanx params (canonical or scanned) → HF T5 state dict of float32 numpy arrays (unique tensors only).

  Tied configs emit no `lm_head.weight` (transformers ties it to `shared.weight` and rescales by d_model**-0.5).
  """
  return {name: make() for name, _, make in _hf_tensors(params, config)}


def hf_config_dict(config: T5Config, dtype: str = 'float32', **overrides) -> dict[str, Any]:
  """config.json contents for `T5ForConditionalGeneration`, every field explicit (reads the same in 4.x and 5.x)."""
  if config.activation not in _ACTIVATION_TO_HF:
    raise ValueError(f'activation {config.activation!r} has no Hugging Face equivalent')
  proj = _ACTIVATION_TO_HF[config.activation]
  act = proj.split('-')[-1]
  out = {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'is_encoder_decoder': True,
      'vocab_size': config.vocab_size,
      'd_model': config.d_model,
      'd_kv': config.d_kv,
      'd_ff': config.d_ff,
      'num_heads': config.num_heads,
      'num_layers': config.num_encoder_layers,
      'num_decoder_layers': config.num_decoder_layers,
      'feed_forward_proj': proj,
      'is_gated_act': config.gated,
      'dense_act_fn': 'gelu_new' if proj in ('gated-gelu', 'gelu') else act,
      'relative_attention_num_buckets': config.relpos_buckets,
      'relative_attention_max_distance': config.relpos_max_distance,
      'layer_norm_epsilon': config.layer_norm_eps,
      'dropout_rate': config.dropout_rate,
      'initializer_factor': 1.0,
      # false: separate lm_head, no output rescale (v1.1/Flan-T5); true: lm_head = shared, rescaled (1.0, UL2).
      'tie_word_embeddings': bool(config.tie_embeddings),
      # transformers 5.x's name for the rescale (its T5Config reads tie_word_embeddings as this, then sets it true).
      'scale_decoder_outputs': bool(config.tie_embeddings),
      'decoder_start_token_id': DECODER_START_ID,
      'pad_token_id': PAD_ID,
      'eos_token_id': EOS_ID,
      'use_cache': True,
      'torch_dtype': dtype,  # transformers 4.x
      'dtype': dtype,  # transformers 5.x
  }
  out.update(overrides)
  return out


def config_from_hf(hf: Mapping[str, Any]) -> T5Config:
  """T5Config from a transformers T5 config.json dict (missing fields take transformers' defaults).

  `tie_embeddings` here reflects the config's output-rescale flag only; `read_hf_model` settles tying from
  the tensors.
  """
  if hf.get('model_type', 't5') != 't5':
    raise ValueError(f'model_type is {hf.get("model_type")!r}, expected "t5"')
  proj = hf.get('feed_forward_proj', 'relu')
  if proj not in _ACTIVATION_FROM_HF:
    raise ValueError(f'feed_forward_proj {proj!r} is not supported (known: {sorted(_ACTIVATION_FROM_HF)})')
  if proj == 'gelu' and hf.get('dense_act_fn', 'gelu') != 'gelu_new':
    raise ValueError(f'feed_forward_proj "gelu" with dense_act_fn {hf.get("dense_act_fn", "gelu")!r} (exact erf '
                     'GeLU) is not supported: flanx\'s gelu is the tanh approximation (gelu_new), as t5x')
  num_layers = hf.get('num_layers', 6)
  num_decoder_layers = hf.get('num_decoder_layers')
  # transformers 5.x writes scale_decoder_outputs; older configs only have tie_word_embeddings (default true).
  scaled = hf.get('scale_decoder_outputs', hf.get('tie_word_embeddings', True))
  return T5Config(
      vocab_size=hf.get('vocab_size', 32128),
      d_model=hf.get('d_model', 512),
      d_kv=hf.get('d_kv', 64),
      num_heads=hf.get('num_heads', 8),
      d_ff=hf.get('d_ff', 2048),
      num_encoder_layers=num_layers,
      num_decoder_layers=num_layers if num_decoder_layers is None else num_decoder_layers,
      activation=_ACTIVATION_FROM_HF[proj],
      tie_embeddings=bool(scaled),
      dropout_rate=float(hf.get('dropout_rate', 0.1)),
      relpos_buckets=hf.get('relative_attention_num_buckets', 32),
      relpos_max_distance=hf.get('relative_attention_max_distance', 128),
      layer_norm_eps=float(hf.get('layer_norm_epsilon', 1e-6)),
  )


# ----------------------------------------------------------------------------------------------------------------
# HF -> flanx.

def _head_is_distinct(state_dict: Mapping[str, Any]) -> bool:
  """Whether the checkpoint holds an lm_head.weight that differs from shared.weight."""
  if 'lm_head.weight' not in state_dict:
    return False
  head, shared = _to_numpy(state_dict['lm_head.weight']), _to_numpy(state_dict.get('shared.weight'))
  return shared is None or head.shape != shared.shape or not np.array_equal(head, shared)


def _to_numpy(x: Any) -> np.ndarray | None:
  """float32 numpy from numpy, ml_dtypes or torch tensors."""
  if x is None:
    return None
  if type(x).__module__.startswith('torch'):
    x = x.detach().float().cpu().numpy()
  return np.asarray(x, dtype=np.float32)


def _set_path(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _shape_of(state_dict: Mapping[str, Any], name: str) -> tuple[int, ...]:
  shape_of = getattr(state_dict, 'shape_of', None)  # lazy files answer without reading data
  return tuple(shape_of(name) if shape_of else state_dict[name].shape)


def from_hf_state_dict(state_dict: Mapping[str, Any], config: T5Config) -> PyTree:
  """HF T5 state dict (numpy or torch tensors) → canonical flanx params (float32 numpy).

  The head follows the tensors: a distinct `lm_head.weight` needs an untied config; no (or an identical)
  lm_head with an untied config means transformers' "tied without rescale", stored as logits_dense = shared^T.
  Missing, unexpected and mis-shaped tensors are reported together in one HFConversionError.
  """
  return _convert(state_dict, config, head_scale=1.0)


def _convert(state_dict: Mapping[str, Any], config: T5Config, head_scale: float) -> PyTree:
  """from_hf_state_dict, with a factor folded into a distinct lm_head (for rescaled untied checkpoints)."""
  rows = _name_map(config)
  shapes = _flax_shapes(config)
  distinct_head = _head_is_distinct(state_dict)
  if distinct_head and config.tie_embeddings:
    raise HFConversionError('checkpoint has an lm_head.weight distinct from shared.weight, but the config is tied '
                            '(tie_embeddings=True)')
  expected = {name for _, name, _ in rows}
  if not distinct_head:
    expected.discard('lm_head.weight')
  allowed = expected | set(_REDUNDANT) | {'lm_head.weight'}
  missing = sorted(expected - set(state_dict))
  unexpected = sorted(set(state_dict) - allowed)
  misshaped = []
  for path, name, transpose in rows:
    if name in state_dict and name in expected:
      want = shapes[path][::-1] if transpose else shapes[path]
      got = _shape_of(state_dict, name)
      if got != want:
        misshaped.append(f'{name}: {got} (expected {want})')
  if missing or unexpected or misshaped:
    lines = ([f'missing: {n}' for n in missing] + [f'unexpected: {n}' for n in unexpected] +
             [f'wrong shape: {s}' for s in misshaped])
    raise HFConversionError('checkpoint does not match the config:\n  ' + '\n  '.join(lines))

  params: dict = {}
  for path, name, transpose in rows:
    source = name if name in expected else 'shared.weight'  # untied config, tied tensors
    x = _to_numpy(state_dict[source])
    if name == 'lm_head.weight' and source == name and head_scale != 1.0:
      x = x * np.float32(head_scale)
    _set_path(params, path, np.ascontiguousarray(x.T) if transpose else x)
  return params


# ----------------------------------------------------------------------------------------------------------------
# Folders.

def _plan_shards(sizes: list[tuple[str, int]], max_shard_bytes: float) -> list[list[str]]:
  """Greedy split of tensors, in order, into shards of at most max_shard_bytes (a bigger tensor sits alone)."""
  shards: list[list[str]] = [[]]
  used = 0
  for name, nbytes in sizes:
    if shards[-1] and used + nbytes > max_shard_bytes:
      shards.append([])
      used = 0
    shards[-1].append(name)
    used += nbytes
  return shards


def write_hf_model(folder: str | os.PathLike, params: PyTree, config: T5Config, dtype: str = 'float32',
                   max_shard_bytes: float = 5e9, overwrite: bool = False,
                   generation: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes a transformers-loadable folder (config.json, generation_config.json, safetensors) atomically.

  Staged beside `folder` and renamed into place at the end (flanx.interop.staging); an existing non-empty
  `folder` is an error unless overwrite=True.
  """
  with staging.staged_folder(folder, overwrite) as staged:
    write_hf_files(staged, params, config, dtype, max_shard_bytes, generation)
  return pathlib.Path(folder).absolute()


def save_safetensors(tensors: Mapping[str, np.ndarray], path: pathlib.Path) -> None:
  """A safetensors file with {"format": "pt"} in its header, readable like the folder's other files."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(dict(tensors), path, metadata={'format': 'pt'})
  staging.make_ordinary(path)


def write_hf_files(folder: pathlib.Path, params: PyTree, config: T5Config, dtype: str = 'float32',
                   max_shard_bytes: float = 5e9, generation: Mapping[str, Any] | None = None) -> None:
  """Writes config.json, generation_config.json and the safetensors (one shard at a time) into `folder`."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top

  np_dtype = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}.get(dtype)
  if np_dtype is None:
    raise ValueError(f'dtype must be float32 or bfloat16, got {dtype!r}')
  tensors = list(_hf_tensors(params, config))
  itemsize = np.dtype(np_dtype).itemsize
  sizes = [(name, int(np.prod(shape)) * itemsize) for name, shape, _ in tensors]
  shards = _plan_shards(sizes, max_shard_bytes)
  makers = {name: make for name, _, make in tensors}
  weight_map = {}
  for k, names in enumerate(shards):
    file = 'model.safetensors' if len(shards) == 1 else f'model-{k + 1:05d}-of-{len(shards):05d}.safetensors'
    save_safetensors({n: makers[n]().astype(np_dtype, copy=False) for n in names}, folder / file)
    weight_map.update({n: file for n in names})
  if len(shards) > 1:
    index = {'metadata': {'total_size': sum(s for _, s in sizes)}, 'weight_map': weight_map}
    (folder / 'model.safetensors.index.json').write_text(json.dumps(index, indent=2) + '\n')
  (folder / 'config.json').write_text(json.dumps(hf_config_dict(config, dtype=dtype), indent=2) + '\n')
  ids = {'decoder_start_token_id': DECODER_START_ID, 'pad_token_id': PAD_ID, 'eos_token_id': EOS_ID}
  (folder / 'generation_config.json').write_text(json.dumps({**ids, **dict(generation or {})}, indent=2) + '\n')


class _LazyTensors(Mapping):
  """name → tensor, read from (possibly sharded) safetensors only when asked for."""

  def __init__(self, files: dict[str, pathlib.Path]):
    self._files = files

  def __getitem__(self, name: str) -> np.ndarray:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(self._files[name], framework='numpy') as f:
      return f.get_tensor(name)

  def shape_of(self, name: str) -> tuple[int, ...]:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(self._files[name], framework='numpy') as f:
      return tuple(f.get_slice(name).get_shape())

  def __iter__(self):
    return iter(self._files)

  def __len__(self):
    return len(self._files)


def _safetensors_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  """tensor name → safetensors file, from model.safetensors or the sharded index."""
  single, index = folder / 'model.safetensors', folder / 'model.safetensors.index.json'
  if single.exists():
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(single, framework='numpy') as f:
      return {name: single for name in f.keys()}
  weight_map = json.loads(index.read_text())['weight_map']
  missing = sorted({f for f in weight_map.values() if not (folder / f).exists()})
  if missing:
    raise FileNotFoundError(f'{index} names shard files that do not exist: {missing}')
  return {name: folder / f for name, f in weight_map.items()}


def _torch_state_dict(folder: pathlib.Path) -> dict[str, Any]:
  """pytorch_model.bin (or its shards) loaded with torch.load(weights_only=True)."""
  import torch  # pylint: disable=g-import-not-at-top
  single, index = folder / 'pytorch_model.bin', folder / 'pytorch_model.bin.index.json'
  files = [single] if single.exists() else sorted({folder / f for f in
                                                   json.loads(index.read_text())['weight_map'].values()})
  state = {}
  for file in files:
    try:
      state.update(torch.load(file, map_location='cpu', weights_only=True, mmap=True))
    except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
      state.update(torch.load(file, map_location='cpu', weights_only=True))
  return state


def read_hf_model(folder: str | os.PathLike) -> tuple[PyTree, T5Config]:
  """A transformers T5 folder (safetensors, sharded or not, or pytorch_model.bin) → (flanx params, T5Config)."""
  folder = pathlib.Path(folder)
  config_path = folder / 'config.json'
  if not config_path.exists():
    raise FileNotFoundError(f'{config_path} not found')
  try:
    hf = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_path}: invalid JSON ({e})') from e
  try:
    config = config_from_hf(hf)
  except ValueError as e:
    raise ValueError(f'{config_path}: {e}') from e
  scaled = config.tie_embeddings

  if (folder / 'model.safetensors').exists() or (folder / 'model.safetensors.index.json').exists():
    state = _LazyTensors(_safetensors_files(folder))
  elif (folder / 'pytorch_model.bin').exists() or (folder / 'pytorch_model.bin.index.json').exists():
    state = _torch_state_dict(folder)
  else:
    raise FileNotFoundError(f'{folder} holds no model.safetensors[.index.json] or pytorch_model.bin[.index.json]')

  distinct_head = _head_is_distinct(state)
  # A distinct head under a rescaling config: transformers computes lm_head(x * d_model**-0.5); flanx folds
  # that factor into logits_dense.
  head_scale = config.d_model ** -0.5 if distinct_head and scaled else 1.0
  config = config.replace(tie_embeddings=scaled and not distinct_head)
  try:
    params = _convert(state, config, head_scale)
  except HFConversionError as e:
    raise HFConversionError(f'{folder}: {e}') from e
  return params, config
