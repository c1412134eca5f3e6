"""t5x checkpoints (msgpack + TensorStore zarr, as the public Flan-T5 ones) → flanx params, HF folders, flanx runs.

The fixture checkpoints are written here with tensorstore and flax's msgpack the way t5x writes them: relative
kvstore paths named `target.<param path with dots>`, gzip zarr arrays, small arrays inline, one spec as written
on GCS (gcs driver, placeholder bucket), one array stored as bfloat16.
"""

import json
import os
import pathlib

import gin
import jax
import ml_dtypes
import numpy as np
import pytest

from flanx.interop import load_params as checkpoint_import, hf_format as hf, t5x_checkpoint
from flanx.training import checkpoints
from flanx import import_t5x
from flanx.model import network as flanx_model

ts = pytest.importorskip('tensorstore')

# Same tiny model as tests/test_export.py (one jit compile per test session for export verification).
CONFIG = dict(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=3)
INLINE = ('scale', 'rel_embedding')  # t5x keeps small unpartitioned arrays in the msgpack file
BF16 = 'target.decoder.decoder_norm.scale'  # stored as bfloat16 in zarr instead (t5x's native bf16, version 3)


def _write_array(checkpoint_dir: pathlib.Path, name: str, value: np.ndarray, gcs: bool) -> dict:
  dtype = 'bfloat16' if value.dtype == ml_dtypes.bfloat16 else 'float32'
  chunks = [max(1, s // 2) for s in value.shape]
  spec = {'driver': 'zarr', 'dtype': dtype, 'kvstore': {'driver': 'file', 'path': str(checkpoint_dir / name)},
          'metadata': {'compressor': {'id': 'gzip'}, 'shape': list(value.shape), 'chunks': chunks}}
  ts.open(spec, create=True, open=True).result().write(value).result()
  relative = {'driver': 'gcs', 'bucket': 't5x-dummy-bucket', 'path': name} if gcs else {'driver': 'file',
                                                                                     'path': name}
  return ts.Spec({**spec, 'kvstore': relative}).to_json()  # the dict t5x puts in the msgpack


def write_t5x_checkpoint(model_dir: pathlib.Path, step: int, target: dict, param_states: dict | None = None,
                         gcs_leaf: str = 'target.encoder.layers_1.mlp.wo.kernel') -> pathlib.Path:
  """A t5x "version 3" checkpoint of `target` at model_dir/checkpoint_<step>."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  checkpoint_dir = model_dir / f'checkpoint_{step}'
  checkpoint_dir.mkdir(parents=True)

  def store(prefix: str, tree: dict) -> dict:
    out = {}
    for key, value in tree.items():
      name = f'{prefix}.{key}'
      if isinstance(value, dict):
        out[key] = store(name, value)
      elif key in INLINE and name != BF16 or value.size <= 1:
        out[key] = np.asarray(value)
      else:
        value = value.astype(ml_dtypes.bfloat16) if name == BF16 else value
        out[key] = _write_array(checkpoint_dir, name, value, gcs=name == gcs_leaf)
    return out

  state = {'step': np.asarray(step, np.int32)}
  if param_states is not None:
    state['param_states'] = store('state.param_states', param_states)
  contents = {'version': 3, 'optimizer': {'target': store('target', target), 'state': state}}
  (checkpoint_dir / 'checkpoint').write_bytes(serialization.msgpack_serialize(contents))
  return checkpoint_dir


def _bf16_rounded(params: dict) -> dict:
  out = jax.tree.map(np.array, params)
  scale = out['decoder']['decoder_norm']['scale']
  out['decoder']['decoder_norm']['scale'] = scale.astype(ml_dtypes.bfloat16).astype(np.float32)
  return out


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_t5x_checkpoint_reads_back_exactly(tiny_config, random_params, tmp_path):
  config = tiny_config(**CONFIG)
  params = random_params(config, 11)
  write_t5x_checkpoint(tmp_path, 1000, random_params(config, 12))  # older step: must not be picked
  checkpoint_dir = write_t5x_checkpoint(tmp_path, 1100, params)
  expected = _bf16_rounded(params)
  # Run folder (newest step), checkpoint folder and checkpoint file all work; INITIAL_CHECKPOINT_PATH uses this.
  for path in (tmp_path, checkpoint_dir, checkpoint_dir / 'checkpoint'):
    _assert_trees_equal(checkpoint_import.load_params(str(path), config), expected)
  # The msgpack really holds inline arrays and relative TensorStore specs (gcs one included).
  from flax import serialization  # pylint: disable=g-import-not-at-top
  contents = serialization.msgpack_restore((checkpoint_dir / 'checkpoint').read_bytes())
  encoder = contents['optimizer']['target']['encoder']
  assert isinstance(encoder['relpos_bias']['rel_embedding'], np.ndarray)
  assert encoder['layers_0']['attention']['query']['kernel']['kvstore'] == {
      'driver': 'file', 'path': 'target.encoder.layers_0.attention.query.kernel/'}
  assert encoder['layers_1']['mlp']['wo']['kernel']['kvstore']['driver'] == 'gcs'
  # The config is read off the tensors; scanned layout too when the config asks for it.
  params2, config2, step = t5x_checkpoint.load_t5x_params(str(tmp_path))
  assert step == 1100 and config2 == config
  _assert_trees_equal(params2, expected)
  scanned = checkpoint_import.load_params(str(tmp_path), config.replace(scan_layers=True))
  _assert_trees_equal(flanx_model.unstack_layers(scanned), expected)


def test_mismatches_are_listed_together(tiny_config, random_params, tmp_path):
  config = tiny_config(**CONFIG)
  params = random_params(config, 13)
  del params['encoder']['layers_1']['mlp']['wi_1']
  params['decoder']['layers_0']['extra'] = {'kernel': np.zeros((2, 2), np.float32)}
  write_t5x_checkpoint(tmp_path, 5, params)
  with pytest.raises(t5x_checkpoint.T5XCheckpointError) as err:
    checkpoint_import.load_params(str(tmp_path), config.replace(d_ff=48))
  message = str(err.value)
  assert str(tmp_path / 'checkpoint_5') in message
  assert 'missing: encoder/layers_1/mlp/wi_1/kernel (32, 48)' in message
  assert 'unexpected: decoder/layers_0/extra/kernel (2, 2)' in message
  assert 'wrong shape: encoder/layers_0/mlp/wo/kernel (64, 32) (expected (48, 32))' in message
  assert message.count('wrong shape') == 14  # every wi/wo of every layer (2 + 3 layers), one error
  # The CLI writes nothing (not even a temporary folder) when the checkpoint does not match.
  out = tmp_path / 'out'
  with pytest.raises(t5x_checkpoint.T5XCheckpointError):
    import_t5x.main(['--t5x_checkpoint', str(tmp_path), '--output_dir', str(out), '--format=flanx'])
  assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint_5']
  with pytest.raises(FileNotFoundError, match='missing does not exist'):
    checkpoint_import.load_params(str(tmp_path / 'checkpoint_5' / 'missing'), config)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(checkpoints.CheckpointRestoreError, match='not a flanx checkpoint, a Hugging Face folder'):
    checkpoint_import.load_params(str(tmp_path / 'empty'), config)


def test_tied_scanned_and_split_heads_layout(tiny_config, random_params, tmp_path):
  """t5x's scanned models: layer axis 1 under encoder/layers, attention kernels [d, heads, d_kv] / [heads, d_kv, d]."""
  config = tiny_config(**CONFIG, tie_embeddings=True, activation='gated-silu')
  params = random_params(config, 14)
  heads, d_kv = config.num_heads, config.d_kv

  def scan(path, *layers):
    name = path[-2].key
    if name in ('query', 'key', 'value'):
      layers = [x.reshape(x.shape[0], heads, d_kv) for x in layers]
    elif name == 'out':
      layers = [x.reshape(heads, d_kv, -1) for x in layers]
    return np.stack(layers, axis=1)

  scanned = {'token_embedder': params['token_embedder']}
  for stack in ('encoder', 'decoder'):
    names = sorted(k for k in params[stack] if k.startswith('layers_'))
    scanned[stack] = {k: v for k, v in params[stack].items() if not k.startswith('layers_')}
    scanned[stack]['layers'] = jax.tree_util.tree_map_with_path(scan, *[params[stack][k] for k in names])
  assert scanned['encoder']['layers']['attention']['query']['kernel'].shape == (32, 2, 4, 8)
  assert scanned['decoder']['layers']['self_attention']['out']['kernel'].shape == (4, 3, 8, 32)
  assert 'logits_dense' not in scanned['decoder']
  write_t5x_checkpoint(tmp_path, 7, scanned, gcs_leaf='')
  loaded, found, _ = t5x_checkpoint.load_t5x_params(str(tmp_path), activation='gated-silu')
  assert found == config
  _assert_trees_equal(loaded, _bf16_rounded(params))


def test_adafactor_state_maps_onto_flanx(tiny_config, random_params, tmp_path):
  from flanx.training import adafactor  # pylint: disable=g-import-not-at-top
  config = tiny_config(**CONFIG)
  params = random_params(config, 15)
  rng = np.random.default_rng(0)
  fresh = adafactor.adafactor().init(params)  # t5x's factoring of 2-D params is flanx's
  slots = {s: jax.tree.map(lambda x: rng.random(x.shape).astype(np.float32), getattr(fresh, s))
           for s in ('v_row', 'v_col', 'v', 'm')}
  param_states = jax.tree.map(lambda *xs: dict(zip(('v_row', 'v_col', 'v', 'm'), xs)), *slots.values())
  write_t5x_checkpoint(tmp_path, 1_100_000, params, param_states)
  assert 'param_states' not in t5x_checkpoint.read_state(str(tmp_path))[0]['state']  # read only when asked
  state, _ = t5x_checkpoint.read_state(str(tmp_path), optimizer_state=True)
  restored = t5x_checkpoint.read_adafactor_state(state, config)
  assert int(restored.count) == 1_100_000
  for slot in ('v_row', 'v_col', 'v', 'm'):
    _assert_trees_equal(getattr(restored, slot), slots[slot])
  with pytest.raises(t5x_checkpoint.T5XCheckpointError, match='flanx expects'):
    t5x_checkpoint.read_adafactor_state(state, config.replace(d_ff=48))


def test_gcs_paths_are_resolved_against_the_checkpoint():
  spec = {'driver': 'zarr', 'dtype': 'float32', 'kvstore': {'driver': 'file', 'path': 'target.a.kernel/'},
          'metadata': {'chunks': [2], 'compressor': {'id': 'gzip'}, 'shape': [4]}}
  gcs = t5x_checkpoint.absolute_spec(spec, 'gs://bucket/runs/flan/checkpoint_1198000')
  assert gcs['kvstore'] == {'driver': 'gcs', 'bucket': 'bucket',
                            'path': 'runs/flan/checkpoint_1198000/target.a.kernel/'}
  assert gcs['metadata'] == {'shape': [4]}  # on-disk chunking/compression is whatever was written
  old_style = {'driver': 'zarr', 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'}, 'path': 'target.b',
               'metadata': {'shape': [2]}}
  local = t5x_checkpoint.absolute_spec(old_style, '/ckpt/checkpoint_5')
  assert local['kvstore'] == {'driver': 'file', 'path': '/ckpt/checkpoint_5/target.b'} and 'path' not in local


def test_orbax_state_variant(tiny_config, random_params, tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  config = tiny_config(**CONFIG)
  params = random_params(config, 16)
  state_dir = tmp_path / 'checkpoint_9' / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    checkpointer.save(str(state_dir), {'version': 3, 'optimizer': {'target': params,
                                                                   'state': {'step': np.int32(9)}}})
  _assert_trees_equal(checkpoint_import.load_params(str(tmp_path), config), params)


@pytest.mark.slow
def test_import_cli_writes_flanx_and_verified_hf(tiny_config, random_params, tmp_path):
  config = tiny_config(**CONFIG)
  params = random_params(config, 17)
  write_t5x_checkpoint(tmp_path / 't5x', 42, params)
  expected = _bf16_rounded(params)

  run = tmp_path / 'flanx_run'
  gin.clear_config()
  assert import_t5x.main(['--t5x_checkpoint', str(tmp_path / 't5x'), '--output_dir', str(run), '--format=flanx',
                          '--gin.T5Config.scan_layers=True', '--gin.T5Config.relpos_max_distance=64']) == 0
  gin.clear_config()
  assert checkpoints.is_flanx_checkpoint(str(run))
  restored = jax.tree.map(np.asarray, checkpoints.restore_params(str(run), None))
  _assert_trees_equal(flanx_model.unstack_layers(restored), expected)  # stored scanned, as the config asks
  run_gin = (run / 'config.gin').read_text()
  assert 'T5Config.d_ff = 64' in run_gin and 'T5Config.relpos_max_distance = 64' in run_gin

  out = tmp_path / 'hf'
  assert import_t5x.main(['--t5x_checkpoint', str(tmp_path / 't5x' / 'checkpoint_42'), '--output_dir', str(out),
                          '--vocab=byte', '--handler=false']) == 0  # verified (the default)
  state = hf.read_hf_model(out)[0]
  _assert_trees_equal(state, expected)
  assert json.loads((out / 'tokenizer_config.json').read_text())['tokenizer_class'] == 'ByT5Tokenizer'
  assert 'Export verification' in (out / 'README.md').read_text()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['flanx_run', 'hf', 't5x']
  assert not os.path.exists(out / 'handler.py')
