"""flanx ↔ transformers T5ForConditionalGeneration: logits parity in both directions, folder format details."""

import json
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

from flanx.interop import hf_format as hf
from flanx.model import network as flanx_model

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# Tiny configs covering every head/activation variant flanx supports, with enc≠dec depth and
# heads·d_kv ≠ d_model; one uses few relative-position buckets so short inputs reach the log-spaced ones.
CASES = {
    'gated_gelu_untied': dict(activation='gated-gelu', tie_embeddings=False, num_heads=3, d_kv=8,
                              num_encoder_layers=2, num_decoder_layers=3),
    'relu_tied': dict(activation='relu', tie_embeddings=True, num_encoder_layers=3, num_decoder_layers=2),
    'gated_silu_tied': dict(activation='gated-silu', tie_embeddings=True, num_heads=2, d_kv=24,
                            relpos_buckets=8, relpos_max_distance=20),
    'gelu_untied': dict(activation='gelu', tie_embeddings=False, num_encoder_layers=1, num_decoder_layers=2),
}
TOL = 1e-4


def _batch(vocab: int, seed: int = 0):
  """Two rows: the second padded in both encoder and decoder; decoder inputs start with 0."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, vocab, size=(2, 24)).astype(np.int32)
  enc[1, 15:] = 0
  targets = rng.integers(2, vocab, size=(2, 12)).astype(np.int32)
  targets[1, 7:] = 0
  dec = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
  return enc, dec


def _hf_logits(model, enc, dec) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(enc).long(), attention_mask=torch.from_numpy(enc > 0).long(),
                decoder_input_ids=torch.from_numpy(dec).long())
  return out.logits.float().numpy()


def _load_hf(folder, **kwargs):
  model, info = transformers.T5ForConditionalGeneration.from_pretrained(folder, output_loading_info=True, **kwargs)
  assert not any(info.get(k) for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys', 'error_msgs')), info
  return model.eval()


def _header(path) -> dict:
  with open(path, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    return json.loads(f.read(n))


def _is_untied(model) -> bool:
  return model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(CASES))
def test_flanx_to_hf_logits(case, tiny_config, random_params, forward, tmp_path):
  config = tiny_config(**CASES[case])
  params = random_params(config, 1)
  folder = hf.write_hf_model(tmp_path / 'export', params, config)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export']  # no temp dirs left behind
  hf_model = _load_hf(folder)
  assert _is_untied(hf_model) == (not config.tie_embeddings)
  enc, dec = _batch(config.vocab_size)
  expected = _hf_logits(hf_model, enc, dec)
  np.testing.assert_allclose(forward(config, params, enc, dec), expected, atol=TOL, rtol=0)
  # The folder reads back to the same params and config.
  params2, config2 = hf.read_hf_model(folder)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)


@pytest.mark.parametrize('case', sorted(CASES))
def test_hf_to_flanx_logits(case, tiny_config, forward, tmp_path):
  config = tiny_config(**CASES[case])
  torch.manual_seed(0)
  hf_config = transformers.T5Config(**hf.hf_config_dict(config))
  hf_model = transformers.T5ForConditionalGeneration(hf_config)
  if not config.tie_embeddings:  # transformers 5.x ties in memory; a distinct head must come from a folder
    hf_model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  hf_model.save_pretrained(tmp_path / 'hf')
  hf_model = _load_hf(tmp_path / 'hf')
  assert _is_untied(hf_model) == (not config.tie_embeddings)
  enc, dec = _batch(config.vocab_size, seed=1)
  expected = _hf_logits(hf_model, enc, dec)

  params, config2 = hf.read_hf_model(tmp_path / 'hf')  # config.json as transformers 5.x writes it
  assert config2 == config.replace(dropout_rate=hf_config.dropout_rate)
  np.testing.assert_allclose(forward(config, params, enc, dec), expected, atol=TOL, rtol=0)

  # The in-memory state dict (with embed_tokens aliases, and lm_head when tied) converts the same way.
  params3 = hf.from_hf_state_dict(hf_model.state_dict(), config)
  jax.tree.map(np.testing.assert_array_equal, params3, params)


def test_pytorch_model_bin(tiny_config, forward, tmp_path):
  config = tiny_config(**CASES['gated_gelu_untied'])
  torch.manual_seed(2)
  hf_model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  hf_model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  (tmp_path / 'config.json').write_text(json.dumps(hf.hf_config_dict(config)))
  torch.save(hf_model.state_dict(), tmp_path / 'pytorch_model.bin')
  params, config2 = hf.read_hf_model(tmp_path)
  assert config2 == config
  enc, dec = _batch(config.vocab_size, seed=2)
  np.testing.assert_allclose(forward(config, params, enc, dec), _hf_logits(hf_model.eval(), enc, dec),
                             atol=TOL, rtol=0)


def test_sharded_export(tiny_config, random_params, forward, tmp_path):
  config = tiny_config(**CASES['gated_gelu_untied'])
  params = random_params(config, 3)
  folder = hf.write_hf_model(tmp_path / 'export', params, config, max_shard_bytes=20_000)
  files = sorted(p.name for p in folder.glob('*.safetensors'))
  assert len(files) > 2 and files[0] == f'model-00001-of-{len(files):05d}.safetensors'
  index = json.loads((folder / 'model.safetensors.index.json').read_text())
  expected_state = hf.to_hf_state_dict(params, config)
  assert set(index['weight_map']) == set(expected_state)
  assert set(index['weight_map'].values()) == set(files)
  assert index['metadata']['total_size'] == sum(x.nbytes for x in expected_state.values())
  for f in files:
    header = _header(folder / f)
    assert header['__metadata__'] == {'format': 'pt'}
    assert all(index['weight_map'][k] == f for k in header if k != '__metadata__')
  enc, dec = _batch(config.vocab_size, seed=3)
  np.testing.assert_allclose(_hf_logits(_load_hf(folder), enc, dec), forward(config, params, enc, dec),
                             atol=TOL, rtol=0)
  params2, _ = hf.read_hf_model(folder)
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_bfloat16_export(tiny_config, random_params, forward, tmp_path):
  config = tiny_config(**CASES['gated_gelu_untied'])
  params = random_params(config, 4)
  folder = hf.write_hf_model(tmp_path / 'export', params, config, dtype='bfloat16')
  header = _header(folder / 'model.safetensors')
  assert header['__metadata__'] == {'format': 'pt'}
  assert {v['dtype'] for k, v in header.items() if k != '__metadata__'} == {'BF16'}
  cfg = json.loads((folder / 'config.json').read_text())
  assert cfg['torch_dtype'] == cfg['dtype'] == 'bfloat16'
  hf_model = _load_hf(folder, dtype=torch.bfloat16)
  assert hf_model.shared.weight.dtype == torch.bfloat16
  # Stored values are the round-to-nearest bf16 of the float32 params.
  rounded = np.asarray(params['token_embedder']['embedding']).astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(hf_model.shared.weight.detach().float().numpy(), rounded)
  enc, dec = _batch(config.vocab_size, seed=4)
  got, ref = _hf_logits(hf_model, enc, dec), forward(config, params, enc, dec)
  assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
  params2, _ = hf.read_hf_model(folder)
  np.testing.assert_array_equal(params2['token_embedder']['embedding'], rounded)


@pytest.mark.slow
def test_scanned_params_export_like_canonical(tiny_config, random_params):
  config = tiny_config(**CASES['gated_gelu_untied'])
  params = random_params(config, 5)
  canonical = hf.to_hf_state_dict(params, config)
  scanned = hf.to_hf_state_dict(flanx_model.stack_layers(params), config)
  assert canonical.keys() == scanned.keys()
  for k in canonical:
    np.testing.assert_array_equal(canonical[k], scanned[k])
  assert not any('embed_tokens' in k for k in canonical)


def test_state_dict_errors_listed_together(tiny_config, random_params):
  config = tiny_config(**CASES['gated_gelu_untied'])
  state = hf.to_hf_state_dict(random_params(config, 6), config)
  del state['encoder.block.1.layer.1.DenseReluDense.wo.weight']
  state['encoder.block.9.layer.0.SelfAttention.q.weight'] = np.zeros((24, 32), np.float32)
  state['decoder.final_layer_norm.weight'] = np.zeros((31,), np.float32)
  with pytest.raises(hf.HFConversionError) as err:
    hf.from_hf_state_dict(state, config)
  message = str(err.value)
  assert 'missing: encoder.block.1.layer.1.DenseReluDense.wo.weight' in message
  assert 'unexpected: encoder.block.9.layer.0.SelfAttention.q.weight' in message
  assert 'wrong shape: decoder.final_layer_norm.weight: (31,) (expected (32,))' in message
  # A distinct head cannot be loaded into a tied config.
  with pytest.raises(hf.HFConversionError, match='distinct'):
    hf.from_hf_state_dict(hf.to_hf_state_dict(random_params(config, 6), config), config.replace(tie_embeddings=True))


def test_existing_folder_is_not_clobbered(tiny_config, random_params, tmp_path):
  config = tiny_config(**CASES['relu_tied'])
  params = random_params(config, 7)
  target = tmp_path / 'export'
  target.mkdir()
  (target / 'keep.txt').write_text('x')
  with pytest.raises(FileExistsError):
    hf.write_hf_model(target, params, config)
  assert sorted(p.name for p in target.iterdir()) == ['keep.txt']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export']
  hf.write_hf_model(target, params, config, overwrite=True)
  assert (target / 'model.safetensors').exists() and not (target / 'keep.txt').exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['export']


def test_config_round_trip(tiny_config):
  for case in CASES.values():
    config = tiny_config(**case)
    d = hf.hf_config_dict(config)
    assert d['tie_word_embeddings'] is d['scale_decoder_outputs'] is config.tie_embeddings
    assert hf.config_from_hf(d) == config
    # transformers reads the same activation, gating and rescale flag.
    hf_config = transformers.T5Config(**d)
    assert hf_config.is_gated_act == config.gated
    assert hf_config.scale_decoder_outputs == config.tie_embeddings
  assert hf.hf_config_dict(tiny_config(activation='gated-gelu'))['dense_act_fn'] == 'gelu_new'
  with pytest.raises(ValueError, match='feed_forward_proj'):
    hf.config_from_hf({'feed_forward_proj': 'gated-swish'})


@pytest.mark.parametrize('variant', ['tied_without_rescale', 'untied_with_rescale'])
def test_unusual_head_layouts_follow_transformers(variant, tiny_config, forward, tmp_path):
  """Checkpoints whose head tying and output rescale disagree load as transformers 5.x computes them."""
  config = tiny_config(**CASES['gated_gelu_untied'])
  torch.manual_seed(3)
  hf_model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  if variant == 'untied_with_rescale':
    hf_model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  hf_model.save_pretrained(tmp_path)  # tied_without_rescale: transformers drops lm_head, keeps no rescale
  if variant == 'untied_with_rescale':  # a config without the v1.1 flag: transformers rescales the output
    cfg = json.loads((tmp_path / 'config.json').read_text())
    cfg.pop('scale_decoder_outputs')
    cfg['tie_word_embeddings'] = True
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
  hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
  assert hf_model.config.scale_decoder_outputs == (variant == 'untied_with_rescale')
  assert _is_untied(hf_model) == (variant == 'untied_with_rescale')
  params, config2 = hf.read_hf_model(tmp_path)
  assert config2 == config  # neither is flanx's tied-and-rescaled head: both load as logits_dense
  enc, dec = _batch(config.vocab_size, seed=5)
  np.testing.assert_allclose(forward(config, params, enc, dec),
                             _hf_logits(hf_model, enc, dec), atol=TOL, rtol=0)
