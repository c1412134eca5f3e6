"""Prefix tuning and (IA)³: flanx's models against `peft`'s (exported folders give flanx's logits and greedy
tokens), packed == unpacked, scanned == looped, step 0 == the base, (IA)³ merges, and folders read back."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flanx.interop import hf_format, peft_adapter
from flanx.model import network, peft


def _model(tiny_config, random_params, method, scan=False, seed=4, **dims):
  """(base config, PEFT config, whole params): random base, the method's params random too (not at their start)."""
  base = tiny_config(scan_layers=scan, **dims)
  config = base.replace(**{method.name: method})
  trained, _ = peft.split_trainable(network.init_params(config, jax.random.key(3)))
  rng = np.random.default_rng(seed)
  trained = jax.tree.map(lambda x: (1.0 + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
                         if method.name == 'ia3' else rng.standard_normal(x.shape).astype(np.float32), trained)
  return base, config, peft.combine(trained, network.to_model_layout(config, random_params(base)))


def _probe(config):
  rng = np.random.default_rng(5)
  enc = rng.integers(2, config.vocab_size, (3, 9)).astype(np.int32)
  enc[1, 6:] = 0
  dec = np.concatenate([np.zeros((3, 1), np.int32), rng.integers(2, config.vocab_size, (3, 5))], 1).astype(np.int32)
  return enc, dec


def _logits(config, params, enc, dec, **kwargs):
  return np.asarray(network.Transformer(config).apply({'params': params}, enc, dec, **kwargs))


def _export(tmp_path, base, config, params):
  base_folder = hf_format.write_hf_model(tmp_path / 'base', peft.split_trainable(params)[1], base)
  folder = tmp_path / 'adapter'
  folder.mkdir()
  peft_adapter.write_adapter(folder, params, config, str(base_folder))
  return str(base_folder), folder


PREFIXES = [peft.PrefixConfig(num_virtual_tokens=3), peft.PrefixConfig(num_virtual_tokens=2, prefix_projection=True,
                                                                         encoder_hidden_size=16)]
IA3S = [peft.IA3Config(), peft.IA3Config(target_modules=('q', 'o', 'wi_0', 'wo'), feedforward_modules=('wi_0', 'wo'))]


@pytest.mark.slow
@pytest.mark.parametrize('method', PREFIXES + IA3S, ids=['prefix', 'prefix-projected', 'ia3', 'ia3-wi0-q-o'])
def test_adapter_folder_reproduces_flanx_through_peft(tiny_config, random_params, method, tmp_path):
  base, config, params = _model(tiny_config, random_params, method)
  _check_through_peft(base, config, params, method, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('dims', [{'num_encoder_layers': 4, 'num_decoder_layers': 4}, {'d_kv': 6}],
                         ids=['4-layers', 'inner-dim-not-d-model'])
def test_prefix_through_peft_on_other_shapes(tiny_config, random_params, dims, tmp_path):
  """4 layers: peft's reading of its table (decoder layers 0, 1, 2, 3 use entries 0, 4, 0, 4 of 2L = 8); heads·d_kv
  ≠ d_model (as Flan-T5 small): token_dim is heads·d_kv."""
  method = peft.PrefixConfig(num_virtual_tokens=3)
  base, config, params = _model(tiny_config, random_params, method, **dims)
  _check_through_peft(base, config, params, method, tmp_path)


def test_prefix_needs_equal_stacks(tiny_config):
  config = tiny_config(num_decoder_layers=3).replace(prefix=peft.PrefixConfig(num_virtual_tokens=2))
  with pytest.raises(ValueError, match='equal stacks'):
    network.abstract_params(config)


def _check_through_peft(base, config, params, method, tmp_path):
  base_folder, folder = _export(tmp_path, base, config, params)
  settings = json.loads((folder / peft_adapter.CONFIG_FILE).read_text())
  assert settings['peft_type'] == method.peft_type and settings['task_type'] == 'SEQ_2_SEQ_LM'
  reference = peft_adapter.flanx_reference(params, config, *_probe(base))
  summary = peft_adapter.verify_adapter(folder, base_folder, reference)
  assert summary['max_logit_diff'] <= 1e-4  # and the greedy tokens agree (verify_adapter raises otherwise)
  # The method matters: the base alone gives other logits.
  assert np.abs(_logits(base, peft.split_trainable(params)[1], *_probe(base)) - reference.logits).max() > 1e-2
  model = peft_adapter.load_peft_model(str(folder), base_folder)
  if method.name == 'ia3':  # peft scaled exactly the projections flanx scales, input or output as flanx does
    scaled = {name: tuple(m.ia3_l['default'].shape) for name, m in model.named_modules() if hasattr(m, 'ia3_l')}
    assert len(scaled) == len(jax.tree.leaves(peft.split_trainable(params)[0]))
    assert all((shape[0] == 1) == (name.split('.')[-1] in method.feedforward_modules) for name, shape in scaled.items())
    # The method's defaults are peft's for T5.
    from peft.utils import constants  # pylint: disable=g-import-not-at-top
    if method == peft.IA3Config():
      assert set(method.target_modules) == set(constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING['t5'])
      assert set(method.feedforward_modules) == set(
          constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING['t5'])
  restored, read = peft_adapter.read_adapter(folder, base)
  if not getattr(method, 'prefix_projection', False):  # a projected prefix reads back as its (unprojected) table
    method.check_same_as(read, str(folder))
    jax.tree.map(np.testing.assert_array_equal, restored, peft.split_trainable(params)[0])


@pytest.mark.slow
def test_prefix_peft_defaults_and_t5_layers(tiny_config, random_params, tmp_path):
  """peft's PrefixTuningConfig defaults (no projection) and its T5 sizes: one table [n, 2·L·inner]."""
  from peft import PrefixTuningConfig  # pylint: disable=g-import-not-at-top
  assert peft.PrefixConfig().prefix_projection == PrefixTuningConfig(num_virtual_tokens=1).prefix_projection
  base, config, params = _model(tiny_config, random_params, peft.PrefixConfig(num_virtual_tokens=3))
  tensors = peft_adapter.adapter_tensors(params, config)
  assert {k: v.shape for k, v in tensors.items()} == {
      'prompt_embeddings': (3, 2 * base.num_encoder_layers * base.inner_dim)}


@pytest.mark.slow
@pytest.mark.parametrize('method', [PREFIXES[0], IA3S[1]], ids=['prefix', 'ia3'])
def test_packed_segments_and_scanned_layers_match(tiny_config, random_params, method):
  base, config, params = _model(tiny_config, random_params, method)
  enc, dec = _probe(base)
  plain = _logits(config, params, enc, dec)
  # Rows 0 and 2 packed into one row (their inputs 9 tokens each, targets 6): each segment gives its own logits.
  packed = {
      'encoder_input_tokens': np.concatenate([enc[0], enc[2]])[None],
      'decoder_input_tokens': np.concatenate([dec[0], dec[2]])[None],
      'encoder_segment_ids': np.repeat([1, 2], 9)[None], 'decoder_segment_ids': np.repeat([1, 2], 6)[None],
      'encoder_positions': np.tile(np.arange(9), 2)[None], 'decoder_positions': np.tile(np.arange(6), 2)[None]}
  logits = np.asarray(network.Transformer(config).apply({'params': params}, **packed))[0]
  np.testing.assert_allclose(logits[:6], plain[0], atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(logits[6:], plain[2], atol=2e-5, rtol=1e-5)
  scanned_config = config.replace(scan_layers=True)
  scanned = _logits(scanned_config, network.to_model_layout(scanned_config, params), enc, dec)
  np.testing.assert_allclose(scanned, plain, atol=2e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('method', [peft.PrefixConfig(num_virtual_tokens=2), peft.IA3Config()], ids=['prefix', 'ia3'])
def test_init_and_merge(tiny_config, random_params, method):
  """(IA)³ starts as the base exactly and merges into it; a fresh prefix is N(0, 1), as peft's embedding."""
  base = tiny_config()
  config = base.replace(**{method.name: method})
  params = network.init_params(config, jax.random.key(1))
  trained, frozen = peft.split_trainable(params)
  enc, dec = _probe(base)
  if method.name == 'ia3':
    assert all(np.all(np.asarray(x) == 1.0) for x in jax.tree.leaves(trained))
    np.testing.assert_array_equal(_logits(config, params, enc, dec), _logits(base, frozen, enc, dec))
    _, _, tuned = _model(tiny_config, random_params, method)
    merged = method.merge(jax.tree.map(np.asarray, tuned))
    assert jax.tree.structure(merged) == jax.tree.structure(peft.split_trainable(tuned)[1])
    np.testing.assert_allclose(_logits(base, merged, enc, dec), _logits(config, tuned, enc, dec), rtol=1e-5, atol=1e-5)
  else:
    table = np.asarray(trained['decoder']['prefix_embedding'])
    assert table.shape == (2, 2 * base.num_encoder_layers * base.inner_dim) and 0.5 < table.std() < 1.5
