"""t5x checkpoints (the public T5 v1.1 / Flan-T5 / UL2 ones) → flanx params, read with tensorstore.

Format ("version 3"): `checkpoint_<step>/checkpoint` is a flax msgpack of
`{'version': 3, 'optimizer': {'target': params, 'state': {'step': …, 'param_states': {…}}}}` (older files: the
optimizer dict at the top level). Small arrays are stored inline; the others are replaced by TensorStore spec
dicts (driver zarr, gzip) whose kvstore path is relative to the checkpoint folder, e.g.
`target.encoder.layers_0.attention.query.kernel`. Specs written on GCS use the gcs driver with a placeholder
bucket: the bucket (and the driver: file locally, gcs for gs://) follow where the checkpoint is read from.
A checkpoint reads only from its own folder: each spec must name a zarr array in a file/gcs/gfile kvstore by a
relative path without `..` (no absolute path, URL or other driver), and no link may lead out of the folder.
Newer t5x runs save with Orbax (`checkpoint_<step>/state/`): read with orbax's PyTree checkpointer, same tree.

t5x's param names are flanx's canonical names. Also accepted: scanned layers (`encoder/layers/...` with a layer
axis at position 0 or 1) and attention kernels with separate heads and head-dim axes (`[d, heads, d_kv]`,
`[heads, d_kv, d]`). Tying follows the tensors: no `decoder/logits_dense/kernel` means a tied head.
Shapes are checked against the configured model; every missing, unexpected or mis-shaped tensor is listed in
one error.

Adafactor state: t5x's `param_states` leaves `{v_row, v_col, v, m}` map one to one onto
`flanx.training.adafactor.AdafactorState` (placeholders included); `read_adafactor_state(read_state(path,
optimizer_state=True, params=False)[0], config)` returns it with the checkpoint's step as `count`, shape-checked
and in the layout `config` expects (scanned layers: t5x's rule-based factoring, converted). The trainer uses it
when `train.restore_optimizer_state=True` (flanx.training.start_step); `read_step` reads only the step.
`python -m flanx.import_t5x` writes params only.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from typing import Any, Mapping

import numpy as np

from flanx.model.config import T5Config

PyTree = Any
_CHECKPOINT_FILE = 'checkpoint'
_DUMMY_BUCKET = 't5x-dummy-bucket'
_ARRAY_DRIVERS = ('zarr',)  # what t5x writes
_KVSTORE_DRIVERS = ('file', 'gcs', 'gfile')  # what t5x reads (gfile: older runs)


class T5XCheckpointError(ValueError):
  """A t5x checkpoint that cannot be read or does not match the model config (lists every problem)."""


class _LocalFiles:
  """The few tf.io.gfile calls used here, for local paths (TensorFlow is imported only for gs:// and the like)."""
  exists = staticmethod(os.path.exists)
  isdir = staticmethod(os.path.isdir)
  listdir = staticmethod(os.listdir)
  GFile = staticmethod(open)  # pylint: disable=invalid-name


def _gfile(path: str):
  if '://' not in path:
    return _LocalFiles
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


# ----------------------------------------------------------------------------------------------------------------
# Finding and reading the raw tree.

def _step_dirs(path: str) -> list[tuple[int, str]]:
  gfile = _gfile(path)
  if not gfile.isdir(path):
    return []
  out = []
  for name in gfile.listdir(path):
    match = re.fullmatch(r'checkpoint_(\d+)/?', name)
    folder = os.path.join(path, name.rstrip('/'))
    if match and (gfile.exists(os.path.join(folder, _CHECKPOINT_FILE)) or gfile.isdir(os.path.join(folder, 'state'))):
      out.append((int(match.group(1)), folder))
  return sorted(out)


def find_checkpoint(path: str) -> str:
  """The checkpoint_<step> folder for a checkpoint file, a checkpoint folder, or a run folder (newest step)."""
  path = path.rstrip('/')
  gfile = _gfile(path)
  if os.path.basename(path) == _CHECKPOINT_FILE and not gfile.isdir(path) and gfile.exists(path):
    return os.path.dirname(path)
  if gfile.exists(os.path.join(path, _CHECKPOINT_FILE)) or gfile.isdir(os.path.join(path, 'state')):
    return path
  steps = _step_dirs(path)
  if not steps:
    raise FileNotFoundError(f'{path}: no t5x checkpoint (a `checkpoint` msgpack file, a `state/` folder, or '
                            'checkpoint_<step> folders holding one)')
  return steps[-1][1]


def is_t5x_checkpoint(path: str) -> bool:
  """Whether `path` is a t5x checkpoint file, checkpoint folder or run folder."""
  try:
    find_checkpoint(path)
  except FileNotFoundError:
    return False
  return True


def _is_spec(value: Any) -> bool:
  return isinstance(value, dict) and isinstance(value.get('driver'), str) and ('kvstore' in value or 'path' in value)


def _inside_path(path: Any, where: str) -> str:
  """`path` as a relative folder name inside the checkpoint (no absolute path, `..`, scheme or empty name)."""
  text = path if isinstance(path, str) else ''
  normal = posixpath.normpath(text) if text else ''
  if (not normal or normal == '.' or posixpath.isabs(text) or '\\' in text or ':' in text or '\0' in text
      or '..' in text.split('/') or normal.startswith('..')):
    raise T5XCheckpointError(f'{where}: TensorStore path {path!r} is not a path inside the checkpoint')
  return normal + ('/' if text.endswith('/') else '')  # tensorstore refuses `./` and `//` in file paths


def absolute_spec(spec: Mapping[str, Any], checkpoint_dir: str, where: str = 'array') -> dict[str, Any]:
  """A TensorStore spec with its relative path resolved against `checkpoint_dir` (local or gs://).

  Confined to the checkpoint: only zarr arrays in a file/gcs/gfile kvstore (what t5x writes and reads) whose path
  is a relative name without `..`; the returned spec keeps only driver, dtype, metadata and transform, so
  nothing else in the checkpoint's spec (other kvstores, wrapped specs, context) reaches tensorstore.
  """
  if spec.get('driver') not in _ARRAY_DRIVERS:
    raise T5XCheckpointError(f'{where}: TensorStore driver {spec.get("driver")!r} is not read (t5x writes zarr '
                             'arrays)')
  kvstore = spec.get('kvstore', {})
  if not isinstance(kvstore, dict):
    raise T5XCheckpointError(f'{where}: kvstore {kvstore!r} is not read (t5x names a file or gcs kvstore and a '
                             'path inside the checkpoint)')
  if kvstore and kvstore.get('driver') not in _KVSTORE_DRIVERS:
    raise T5XCheckpointError(f'{where}: kvstore driver {kvstore.get("driver")!r} is not read (t5x writes file or '
                             'gcs kvstores)')
  relative = kvstore.get('path') or spec.get('path')  # tensorstore<0.1.14 put `path` at the top
  if not relative:
    raise T5XCheckpointError(f'{where}: TensorStore spec without a path: {dict(spec)}')
  relative = _inside_path(relative, where)
  metadata = spec.get('metadata') or {}
  if not isinstance(metadata, dict):
    raise T5XCheckpointError(f'{where}: TensorStore metadata is not a dict: {metadata!r}')
  out = {key: spec[key] for key in ('driver', 'dtype', 'transform') if key in spec}
  # Read whatever chunking/compression is on disk.
  out['metadata'] = {k: v for k, v in metadata.items() if k not in ('chunks', 'compressor')}
  match = re.fullmatch(r'gs://([^/]+)/?(.*)', checkpoint_dir)
  if match:
    out['kvstore'] = {'driver': 'gcs', 'bucket': match.group(1), 'path': posixpath.join(match.group(2), relative)}
  else:
    out['kvstore'] = {'driver': 'file', 'path': os.path.join(os.path.abspath(checkpoint_dir), relative)}
  return out


def _check_local_links(array_dir: str, checkpoint_dir: str, where: str) -> None:
  """No symbolic link in or at `array_dir` may lead outside the checkpoint folder."""
  root = os.path.realpath(checkpoint_dir)
  inside = lambda path: os.path.commonpath([root, os.path.realpath(path)]) == root
  paths = [array_dir]
  for folder, names, files in os.walk(array_dir):
    paths += [os.path.join(folder, name) for name in names + files]
  for path in paths:
    if not inside(path):
      raise T5XCheckpointError(f'{where}: {path} links outside the checkpoint (to {os.path.realpath(path)})')


def _read_spec(spec: Mapping[str, Any], checkpoint_dir: str, name: str) -> np.ndarray:
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  where = f'{checkpoint_dir}: {name}'
  full = absolute_spec(spec, checkpoint_dir, where)
  if full['kvstore']['driver'] == 'file':
    _check_local_links(full['kvstore']['path'], checkpoint_dir, where)
  dtype = full.get('dtype') or (full.get('metadata') or {}).get('dtype')
  if dtype in ('uint16', '<u2'):
    raise T5XCheckpointError(f'{name}: uint16 array (t5x checkpoint version < 3 stored bfloat16 that way); '
                             're-save it with a current t5x')
  try:
    return np.asarray(ts.open(full, open=True, read=True).result().read().result())
  except Exception as e:  # pylint: disable=broad-except  (tensorstore raises ValueError / its own errors)
    raise T5XCheckpointError(f'{name}: cannot read {full["kvstore"]} ({e})') from e


def _materialize(tree: Any, checkpoint_dir: str, prefix: str = '') -> Any:
  if _is_spec(tree):
    return _read_spec(tree, checkpoint_dir, prefix)
  if isinstance(tree, dict):
    return {k: _materialize(v, checkpoint_dir, f'{prefix}/{k}' if prefix else k) for k, v in tree.items()}
  return tree


def _read_msgpack(checkpoint_dir: str) -> dict[str, Any]:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  path = os.path.join(checkpoint_dir, _CHECKPOINT_FILE)
  with _gfile(path).GFile(path, 'rb') as f:
    raw = f.read()
  if raw.startswith(b'model_checkpoint_path'):
    raise T5XCheckpointError(f'{path} is a TensorFlow (Mesh TF) checkpoint index, not a t5x checkpoint')
  try:
    return serialization.msgpack_restore(raw)
  except Exception as e:  # pylint: disable=broad-except  (msgpack raises several types)
    raise T5XCheckpointError(f'{path}: not a flax msgpack file ({e})') from e


def _read_orbax(checkpoint_dir: str) -> dict[str, Any]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = os.path.join(checkpoint_dir, 'state')
  with ocp.PyTreeCheckpointer() as checkpointer:
    return checkpointer.restore(state if '://' in state else os.path.abspath(state))


def read_state(path: str, optimizer_state: bool = False, params: bool = True) -> tuple[dict[str, Any], str]:
  """({'target': params, 'state': {'step': …, 'param_states': … (only if optimizer_state)}}, checkpoint folder).

  Arrays are read into memory (host RAM holds one copy of what is returned); params=False skips the params
  (`target` is then empty).
  """
  checkpoint_dir = find_checkpoint(path)
  if _gfile(checkpoint_dir).exists(os.path.join(checkpoint_dir, _CHECKPOINT_FILE)):
    contents = _read_msgpack(checkpoint_dir)
  else:
    contents = _read_orbax(checkpoint_dir)
  optimizer = contents.get('optimizer', contents) if isinstance(contents, dict) else None
  if not isinstance(optimizer, dict) or not isinstance(optimizer.get('target'), dict):
    keys = sorted(contents) if isinstance(contents, dict) else type(contents).__name__
    raise T5XCheckpointError(f'{checkpoint_dir}: expected {{"optimizer": {{"target": params, ...}}}}, found {keys}')
  state = dict(optimizer.get('state') or {})
  if not optimizer_state:
    state.pop('param_states', None)
  target = optimizer['target'] if params else {}
  return _materialize({'target': target, 'state': state}, checkpoint_dir), checkpoint_dir


def read_step(path: str) -> int | None:
  """The training step a t5x checkpoint holds (its optimizer state's `step`; else its checkpoint_<step> name).

  Reads the msgpack file only (large arrays stay on disk); Orbax-saved checkpoints go by the folder name.
  """
  checkpoint_dir = find_checkpoint(path)
  if _gfile(checkpoint_dir).exists(os.path.join(checkpoint_dir, _CHECKPOINT_FILE)):
    contents = _read_msgpack(checkpoint_dir)
    optimizer = contents.get('optimizer', contents) if isinstance(contents, dict) else {}
    step = (optimizer.get('state') or {}).get('step') if isinstance(optimizer, dict) else None
    if step is not None and not _is_spec(step):
      return int(np.asarray(step))
  match = re.fullmatch(r'checkpoint_(\d+)', os.path.basename(checkpoint_dir.rstrip('/')))
  return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------------------------
# Config and layout.

def _layer_count(stack: Mapping[str, Any]) -> int:
  return len([k for k in stack if re.fullmatch(r'layers_\d+', k)])


def _scanned_layers(stack: Mapping[str, Any], d_model: int) -> int:
  """Number of layers of a scanned stack, read off a layer-norm scale ([layers, d] or [d, layers])."""
  for norm in stack['layers'].values():
    if isinstance(norm, dict) and 'scale' in norm:
      shape = tuple(np.shape(norm['scale']))
      return shape[1] if shape[0] == d_model and len(shape) == 2 and shape[1] != d_model else shape[0]
  raise T5XCheckpointError('scanned layers without a layer-norm scale')


def _drop_layer_axis(shape: tuple[int, ...], layers: int) -> tuple[int, ...]:
  axis = next((a for a in (1, 0) if a < len(shape) and shape[a] == layers), 0)  # t5x scans over axis 1
  return shape[:axis] + shape[axis + 1:]


def infer_config(target: Mapping[str, Any], activation: str | None = None, **overrides) -> T5Config:
  """The T5Config a t5x params tree implies (activation: gated-gelu for gated MLPs, relu otherwise, unless given).

  relpos_max_distance, layer_norm_eps and dtypes cannot be read off the tensors: T5Config's defaults (128, 1e-6)
  unless overridden.
  """
  try:
    vocab_size, d_model = np.shape(target['token_embedder']['embedding'])
    heads, buckets = np.shape(target['encoder']['relpos_bias']['rel_embedding'])
    encoder, decoder = target['encoder'], target['decoder']
    scanned = 'layers' in encoder
    layer0 = encoder['layers'] if scanned else encoder['layers_0']
    query = tuple(np.shape(layer0['attention']['query']['kernel']))
    gated = 'wi_0' in layer0['mlp']
    wi = tuple(np.shape(layer0['mlp']['wi_0' if gated else 'wi']['kernel']))
    if scanned:
      num_encoder, num_decoder = _scanned_layers(encoder, d_model), _scanned_layers(decoder, d_model)
      query, wi = _drop_layer_axis(query, num_encoder), _drop_layer_axis(wi, num_encoder)
    else:
      num_encoder, num_decoder = _layer_count(encoder), _layer_count(decoder)
  except (KeyError, TypeError, ValueError) as e:
    raise T5XCheckpointError(f'not a T5 params tree (missing or malformed {e})') from None
  inner = int(np.prod(query[1:]))  # [d, heads·d_kv] or [d, heads, d_kv]
  fields = dict(vocab_size=int(vocab_size), d_model=int(d_model), num_heads=int(heads), d_kv=inner // int(heads),
                d_ff=int(wi[-1]), num_encoder_layers=num_encoder, num_decoder_layers=num_decoder,
                activation=activation or ('gated-gelu' if gated else 'relu'),
                tie_embeddings='logits_dense' not in decoder, relpos_buckets=int(buckets), dropout_rate=0.0)
  fields.update(overrides)
  return T5Config(**fields)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _fit(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """x as `shape`: as is, or with separate heads/head-dim axes merged ([d, h, k] → [d, h·k]; [h, k, d] → …)."""
  if x.shape == shape:
    return x
  if x.size == int(np.prod(shape)) and len(shape) == 2 and x.ndim == 3:
    if x.shape[0] == shape[0] or x.shape[-1] == shape[-1]:
      return x.reshape(shape)
  return None


def _unstack(flat: dict[tuple[str, ...], Any], expected: Mapping[tuple[str, ...], tuple[int, ...]],
             problems: list[str]) -> dict[tuple[str, ...], Any]:
  """Splits scanned `stack/layers/...` leaves into `stack/layers_i/...` (layer axis 1, as t5x scans, or 0)."""
  out = {}
  for path, x in flat.items():
    if len(path) < 2 or path[1] != 'layers' or path[0] not in ('encoder', 'decoder'):
      out[path] = x
      continue
    count = sum(1 for p in expected if p[0] == path[0] and p[1].startswith('layers_')
                and p[2:] == ('pre_mlp_layer_norm', 'scale'))
    want = expected.get((path[0], 'layers_0') + path[2:])
    x = np.asarray(x)
    axis = next((a for a in (1, 0) if want is not None and a < x.ndim and x.shape[a] == count
                 and _fit(np.take(x, 0, axis=a), want) is not None), None)
    if axis is None:
      problems.append(f'wrong shape: {"/".join(path)} {x.shape} (scanned; expected {count} layers of {want})')
      continue
    for i in range(count):
      out[(path[0], f'layers_{i}') + path[2:]] = np.take(x, i, axis=axis)
  return out


@functools.lru_cache(maxsize=16)
def _abstract_params(config: T5Config) -> PyTree:
  """Canonical param shapes of `config` (tracing the model takes ~1 s: once per config)."""
  from flanx.model import network as model_lib  # pylint: disable=g-import-not-at-top
  return model_lib.abstract_params(config.replace(scan_layers=False))


def to_flanx_params(target: Mapping[str, Any], config: T5Config) -> PyTree:
  """A t5x params tree → canonical flanx params (float32 numpy), checked against `config`."""
  expected = {path: tuple(leaf.shape) for path, leaf in _flatten(_plain(_abstract_params(config))).items()}
  problems: list[str] = []
  flat = _unstack(_flatten(target), expected, problems)
  out = {}
  for path, shape in expected.items():
    if path not in flat:
      problems.append(f'missing: {"/".join(path)} {shape}')
      continue
    x = np.asarray(flat[path])
    fitted = _fit(x, shape)
    if fitted is None:
      problems.append(f'wrong shape: {"/".join(path)} {x.shape} (expected {shape})')
      continue
    out[path] = np.ascontiguousarray(fitted, dtype=np.float32)
  problems += [f'unexpected: {"/".join(p)} {np.shape(flat[p])}' for p in sorted(set(flat) - set(expected))]
  if problems:
    if 'logits_dense' in target.get('decoder', {}) and config.tie_embeddings:
      problems.append('(the checkpoint has decoder/logits_dense: an untied head; the config says tied)')
    raise T5XCheckpointError('t5x params do not match the model config:\n  ' + '\n  '.join(problems))
  return _unflatten(out)


def load_t5x_params(path: str, config: T5Config | None = None, activation: str | None = None
                    ) -> tuple[PyTree, T5Config, int | None]:
  """(canonical flanx params, config, step) from a t5x checkpoint; config inferred from the tensors if None."""
  state, checkpoint_dir = read_state(path)
  target = state['target']
  config = config or infer_config(target, activation)
  try:
    params = to_flanx_params(target, config)
  except T5XCheckpointError as e:
    raise T5XCheckpointError(f'{checkpoint_dir}: {e}') from None
  step = (state.get('state') or {}).get('step')
  return params, config, (int(np.asarray(step)) if step is not None else None)


def read_adafactor_state(state: Mapping[str, Any], config: T5Config, optimizer: Any = None) -> Any:
  """t5x's Adafactor `param_states` (from read_state(…, optimizer_state=True)) → flanx AdafactorState (numpy) in
  the layout `config` expects, for `optimizer` (default: flanx's Adafactor with t5x's defaults), shape-checked.

  t5x checkpoints hold per-layer (unscanned) state; for scanned layers it is stacked and, where t5x's
  logical-axis rules factor the stacked kernel differently, converted (AdafactorOptimizer.convert_state).
  """
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor  # pylint: disable=g-import-not-at-top
  optimizer = optimizer or adafactor.adafactor(param_axes=network.logical_axes(config))
  if not hasattr(optimizer, 'convert_state'):
    raise T5XCheckpointError('restoring a t5x optimizer state needs flanx\'s Adafactor (train.optimizer = '
                             f'@adafactor), not {type(optimizer).__name__}')
  try:
    canonical = adafactor.from_t5x_state(state.get('state') or {})
  except ValueError as e:
    raise T5XCheckpointError(f'the checkpoint has no usable optimizer state: {e}') from None
  flat = config.replace(scan_layers=False)
  try:
    return optimizer.convert_state(_host_float32(canonical), _abstract_params(config), network.logical_axes(flat),
                                   network.abstract_params(config), network.logical_axes(config),
                                   restack=lambda tree: network.to_model_layout(config, tree))
  except ValueError as e:
    raise T5XCheckpointError(str(e)) from None


def _host_float32(tree: Any) -> Any:
  """Every array of a nested dict/NamedTuple as float32 numpy (ints kept), for shape checks on the host."""
  if isinstance(tree, Mapping):
    return {k: _host_float32(v) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, '_fields'):
    return type(tree)(*(_host_float32(v) for v in tree))
  x = np.asarray(tree)
  return x if x.dtype.kind in 'iu' else x.astype(np.float32)


def _plain(tree: Any) -> Any:
  return {k: _plain(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree
