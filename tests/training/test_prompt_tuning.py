"""Prompt tuning: placeholders added by the input pipeline, the prompt per packed segment, and its PEFT export."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flanx.model import network, peft

N = 3  # virtual tokens


def _prompt_model(tiny_config, random_params):
  base = tiny_config()
  config = base.replace(prompt=peft.PromptConfig(num_virtual_tokens=N))
  params = network.to_model_layout(config, random_params(base))
  prompt = np.random.default_rng(7).standard_normal((N, config.d_model)).astype(np.float32)
  return base, config, {**params, 'encoder': {**params['encoder'], 'prompt_embedding': prompt}}


def _batches(pack: bool, lengths: dict):
  import fixture_tasks  # pylint: disable=g-import-not-at-top
  from flanx.training import data  # pylint: disable=g-import-not-at-top
  ds = data.get_dataset(fixture_tasks.register(), lengths, 'validation', 8, shuffle=False, pack=pack, num_epochs=1,
                        prompt_tokens=N)
  return next(iter(ds.as_numpy_iterator()))


@pytest.mark.slow
def test_packed_and_unpacked_examples_get_the_same_logits(tiny_config, random_params):
  _, config, params = _prompt_model(tiny_config, random_params)
  lengths = {'inputs': 64, 'targets': 24}
  packed, unpacked = _batches(True, lengths), _batches(False, lengths)
  # The pipeline put N placeholders before every example's inputs, packed or not, and kept the full length.
  assert unpacked['encoder_input_tokens'].shape[1] == 64
  assert (unpacked['encoder_input_tokens'][:, :N] == peft.PROMPT_PLACEHOLDER_ID).all()
  starts = packed['encoder_positions'] == 0
  real = packed['encoder_segment_ids'] > 0
  assert (packed['encoder_input_tokens'][(packed['encoder_positions'] < N) & real] == peft.PROMPT_PLACEHOLDER_ID).all()
  assert (starts & real).sum() > 16  # several segments per packed row
  model = network.Transformer(config)
  keys = ('encoder_input_tokens', 'decoder_input_tokens', 'encoder_segment_ids', 'decoder_segment_ids',
          'encoder_positions', 'decoder_positions')
  packed_logits = np.asarray(model.apply({'params': params}, **{k: packed[k] for k in keys}))
  plain_logits = np.asarray(model.apply({'params': params}, unpacked['encoder_input_tokens'],
                                        unpacked['decoder_input_tokens']))
  # Match each packed segment with its unpacked example by its tokens.
  compared = 0
  for row in range(packed['decoder_target_tokens'].shape[0]):
    for seg in set(packed['decoder_segment_ids'][row].tolist()) - {0}:
      where = packed['decoder_segment_ids'][row] == seg
      target = packed['decoder_target_tokens'][row][where]
      enc = packed['encoder_input_tokens'][row][packed['encoder_segment_ids'][row] == seg]
      for j in range(unpacked['decoder_target_tokens'].shape[0]):
        u_target = unpacked['decoder_target_tokens'][j][:len(target)]
        u_enc = unpacked['encoder_input_tokens'][j][:len(enc)]
        if np.array_equal(u_target, target) and np.array_equal(u_enc, enc):
          np.testing.assert_allclose(packed_logits[row][where], plain_logits[j][:len(target)], atol=2e-5, rtol=1e-5)
          compared += 1
          break
  assert compared >= 8


@pytest.mark.slow
def test_prompt_replaces_only_positions_below_n(tiny_config, random_params):
  base, config, params = _prompt_model(tiny_config, random_params)
  tokens = np.array([[5, 6, 7, 8, 9, 1, 0]], np.int32)
  dec = np.array([[0, 11, 12]], np.int32)
  with_prompt = peft.add_prompt_placeholders(tokens, N)
  # Whatever the placeholder ids are, the encoder sees the prompt there: other ids give the same logits.
  other = with_prompt.copy()
  other[:, :N] = 40
  model = network.Transformer(config)
  a = model.apply({'params': params}, with_prompt, dec)
  b = model.apply({'params': params}, other, dec)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # And it matters: without the prompt the base model's logits differ.
  plain = network.Transformer(base).apply({'params': peft.split_trainable(params)[1]}, with_prompt, dec)
  assert np.abs(np.asarray(plain) - np.asarray(a)).max() > 1e-3


def test_prompt_init_ids():
  vocab = peft.PromptConfig(num_virtual_tokens=5)
  ids = peft.prompt_init_ids(vocab, 50, seed=1)
  assert ids.shape == (5,) and ids.min() >= 0 and ids.max() < 50
  text = peft.PromptConfig(num_virtual_tokens=5, init='text', init_text='ab')
  assert peft.prompt_init_ids(text, 50, 1, encode=lambda t: [10, 11]).tolist() == [10, 11, 1, 10, 11]
  with pytest.raises(ValueError, match='init_text'):
    peft.PromptConfig(init='text')


@pytest.mark.slow
def test_exported_prompt_reproduces_flanx_through_peft(tiny_config, random_params, tmp_path):
  from flanx.interop import hf_format, peft_adapter  # pylint: disable=g-import-not-at-top
  base, config, params = _prompt_model(tiny_config, random_params)
  base_folder = hf_format.write_hf_model(tmp_path / 'base', peft.split_trainable(params)[1], base)
  folder = tmp_path / 'adapter'
  folder.mkdir()
  peft_adapter.write_adapter(folder, params, config, str(base_folder))
  settings = json.loads((folder / peft_adapter.CONFIG_FILE).read_text())
  assert settings['peft_type'] == 'PROMPT_TUNING' and settings['num_transformer_submodules'] == 1
  assert settings['num_virtual_tokens'] == N and settings['token_dim'] == config.d_model
  rng = np.random.default_rng(5)
  enc = rng.integers(3, config.vocab_size, (3, 9)).astype(np.int32)
  enc[1, 6:] = 0
  dec = np.concatenate([np.zeros((3, 1), np.int32), rng.integers(3, config.vocab_size, (3, 5))], 1).astype(np.int32)
  reference = peft_adapter.flanx_reference(params, config, enc, dec)
  summary = peft_adapter.verify_adapter(str(folder), str(base_folder), reference)
  assert summary['max_logit_diff'] <= 1e-4
  model = peft_adapter.load_peft_model(str(folder), str(base_folder))
  np.testing.assert_array_equal(model.prompt_encoder['default'].embedding.weight.detach().numpy(),
                                params['encoder']['prompt_embedding'])
