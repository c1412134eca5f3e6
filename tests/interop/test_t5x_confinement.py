"""A t5x checkpoint reads arrays only from inside its own folder: crafted TensorStore specs and links are refused.

The checkpoints are written the way t5x writes them (tests/interop/test_t5x_import.py), then their msgpack is
edited to point one array elsewhere: at a real zarr array outside the checkpoint, with the right shape, so a
reader that follows the spec would load it without complaint.
"""

import os

import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from flanx.interop import load_params, t5x_checkpoint
from test_t5x_import import CONFIG, write_t5x_checkpoint

ts = pytest.importorskip('tensorstore')

LEAF = ('encoder', 'layers_0', 'attention', 'query', 'kernel')
LEAF_NAME = 'target.' + '.'.join(LEAF)


def _secret(tmp_path, shape):
  """A zarr array outside the checkpoint, as t5x would write it (what a crafted spec points at)."""
  path = tmp_path / 'outside' / 'secret'
  spec = {'driver': 'zarr', 'dtype': 'float32', 'kvstore': {'driver': 'file', 'path': str(path)},
          'metadata': {'compressor': {'id': 'gzip'}, 'shape': list(shape), 'chunks': list(shape)}}
  ts.open(spec, create=True, open=True).result().write(np.full(shape, 7.0, np.float32)).result()
  return path


def _edit_leaf(checkpoint_dir, edit):
  contents = serialization.msgpack_restore((checkpoint_dir / 'checkpoint').read_bytes())
  node = contents['optimizer']['target']
  for key in LEAF[:-1]:
    node = node[key]
  node[LEAF[-1]] = edit(dict(node[LEAF[-1]]))
  (checkpoint_dir / 'checkpoint').write_bytes(serialization.msgpack_serialize(contents))


@pytest.fixture
def checkpoint(tiny_config, random_params, tmp_path):
  config = tiny_config(**CONFIG)
  checkpoint_dir = write_t5x_checkpoint(tmp_path / 'run', 10, random_params(config, 21), gcs_leaf='')
  shape = (config.d_model, config.num_heads * config.d_kv)
  return checkpoint_dir, config, _secret(tmp_path, shape)


def _with_path(path):
  return lambda spec: {**spec, 'kvstore': {'driver': 'file', 'path': path}}


@pytest.mark.parametrize('edit, message', [
    (lambda secret: _with_path(str(secret)), 'is not a path inside the checkpoint'),
    (lambda secret: _with_path(str(secret) + '/'), 'is not a path inside the checkpoint'),
    (lambda secret: _with_path('../../outside/secret'), 'is not a path inside the checkpoint'),
    (lambda secret: _with_path(f'{LEAF_NAME}/../../../outside/secret'), 'is not a path inside the checkpoint'),
    (lambda secret: _with_path(f'file://{secret}'), 'is not a path inside the checkpoint'),
    (lambda secret: _with_path('.'), 'is not a path inside the checkpoint'),
    # t5x's older spelling: the path at the top level, the kvstore without one.
    (lambda secret: lambda spec: {**spec, 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'},
                                  'path': '../../outside/secret'}, 'is not a path inside the checkpoint'),
    # Other kvstore drivers (t5x reads file, gcs and gfile only), or a kvstore URL string.
    (lambda secret: lambda spec: {**spec, 'kvstore': {'driver': 'http', 'base_url': 'http://127.0.0.1:9/x',
                                                      'path': 'a'}}, "kvstore driver 'http'"),
    (lambda secret: lambda spec: {**spec, 'kvstore': {'driver': 'ocdbt', 'base': f'file://{secret}/',
                                                      'path': 'a'}}, "kvstore driver 'ocdbt'"),
    (lambda secret: lambda spec: {**spec, 'kvstore': f'file://{secret}/'}, "kvstore 'file://"),
    # An array driver that wraps another spec (its own kvstore), not zarr.
    (lambda secret: lambda spec: {'driver': 'cast', 'dtype': 'float32', 'path': LEAF_NAME,
                                  'base': {**spec, 'kvstore': {'driver': 'file', 'path': str(secret)}}},
     "TensorStore driver 'cast'"),
])
def test_specs_pointing_outside_are_refused(checkpoint, edit, message):
  checkpoint_dir, config, secret = checkpoint
  _edit_leaf(checkpoint_dir, edit(secret))
  with pytest.raises(t5x_checkpoint.T5XCheckpointError) as error:
    load_params.load_params(str(checkpoint_dir), config)
  assert message in str(error.value)
  assert str(checkpoint_dir) in str(error.value) and 'encoder/layers_0/attention/query/kernel' in str(error.value)


def test_links_out_of_the_checkpoint_are_refused(checkpoint):
  checkpoint_dir, config, secret = checkpoint
  array = checkpoint_dir / f'{LEAF_NAME}'
  # A linked array folder.
  os.rename(array, checkpoint_dir / 'kept')
  os.symlink(secret, array)
  with pytest.raises(t5x_checkpoint.T5XCheckpointError, match='links outside the checkpoint'):
    load_params.load_params(str(checkpoint_dir), config)
  # A linked chunk file inside a real array folder.
  os.remove(array)
  os.rename(checkpoint_dir / 'kept', array)
  chunk = next(p for p in array.iterdir() if not p.name.startswith('.'))
  chunk.unlink()
  os.symlink(next(p for p in secret.iterdir() if not p.name.startswith('.')), chunk)
  with pytest.raises(t5x_checkpoint.T5XCheckpointError, match='links outside the checkpoint'):
    load_params.load_params(str(checkpoint_dir), config)


def test_links_inside_the_checkpoint_and_plain_specs_still_load(checkpoint, tiny_config, random_params):
  checkpoint_dir, config, _ = checkpoint
  array = checkpoint_dir / LEAF_NAME
  os.rename(array, checkpoint_dir / 'moved')
  os.symlink(checkpoint_dir / 'moved', array)  # a link that stays inside is fine
  _edit_leaf(checkpoint_dir, lambda spec: {**spec, 'kvstore': {'driver': 'gfile', 'path': f'./{LEAF_NAME}/'},
                                           'context': {'cache_pool': {'total_bytes_limit': 0}}})
  params = load_params.load_params(str(checkpoint_dir), config)
  expected = random_params(config, 21)['encoder']['layers_0']['attention']['query']['kernel']
  np.testing.assert_array_equal(params['encoder']['layers_0']['attention']['query']['kernel'], expected)
  scale = params['decoder']['decoder_norm']['scale']  # the bf16 leaf of the fixture, still read
  assert scale.dtype == np.float32 and np.all(scale == scale.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_absolute_spec_confines_gcs_paths():
  spec = {'driver': 'zarr', 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket', 'path': 'target.a'},
          'metadata': {'shape': [2]}}
  assert t5x_checkpoint.absolute_spec(spec, 'gs://mine/run/checkpoint_5')['kvstore'] == {
      'driver': 'gcs', 'bucket': 'mine', 'path': 'run/checkpoint_5/target.a'}
  for bad in ('/abs', '../x', 'gs://other-bucket/x', 'a/../../b'):
    with pytest.raises(t5x_checkpoint.T5XCheckpointError, match='not a path inside the checkpoint'):
      t5x_checkpoint.absolute_spec({**spec, 'kvstore': {'driver': 'gcs', 'path': bad}}, 'gs://mine/run/checkpoint_5')
