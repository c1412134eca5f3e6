"""flanx.model.network behaviour: packing, incremental decoding, scan/remat equivalence, dropout, bfloat16."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flanx.model import network as flanx_model

INPUT_LENGTH, TARGET_LENGTH = 16, 12


@pytest.fixture
def config(tiny_config):
  return tiny_config(num_heads=3, d_kv=8)  # heads·d_kv (24) ≠ d_model (32)


@pytest.fixture
def params(config, random_params):
  return random_params(config, 0)


def _examples():
  """Two (inputs, targets) pairs of different lengths, each ending in EOS (1)."""
  rng = np.random.default_rng(0)
  a = (rng.integers(2, 96, 6), rng.integers(2, 96, 5))
  b = (rng.integers(2, 96, 4), rng.integers(2, 96, 3))
  return [(np.append(i, 1).astype(np.int32), np.append(t, 1).astype(np.int32)) for i, t in (a, b)]


def _hand_packed(examples):
  """One packed row as seqio's EncDecFeatureConverter(pack=True) defines it, built by hand."""
  row = {k: np.zeros((1, INPUT_LENGTH if k.startswith('encoder') else TARGET_LENGTH), np.int32)
         for k in ('encoder_input_tokens', 'encoder_segment_ids', 'encoder_positions', 'decoder_input_tokens',
                   'decoder_target_tokens', 'decoder_loss_weights', 'decoder_segment_ids', 'decoder_positions')}
  enc_at = dec_at = 0
  for segment, (inputs, targets) in enumerate(examples, start=1):
    e, d = slice(enc_at, enc_at + len(inputs)), slice(dec_at, dec_at + len(targets))
    row['encoder_input_tokens'][0, e] = inputs
    row['encoder_segment_ids'][0, e] = segment
    row['encoder_positions'][0, e] = np.arange(len(inputs))
    row['decoder_target_tokens'][0, d] = targets
    row['decoder_input_tokens'][0, d] = np.concatenate([[0], targets[:-1]])  # shifted right per example
    row['decoder_loss_weights'][0, d] = 1
    row['decoder_segment_ids'][0, d] = segment
    row['decoder_positions'][0, d] = np.arange(len(targets))
    enc_at, dec_at = enc_at + len(inputs), dec_at + len(targets)
  return row


def _seqio_packed(examples):
  """The same examples packed by seqio itself (None when seqio/TensorFlow are unavailable)."""
  try:
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  spec = {'inputs': tf.TensorSpec([None], tf.int32), 'targets': tf.TensorSpec([None], tf.int32)}
  ds = tf.data.Dataset.from_generator(lambda: ({'inputs': i, 'targets': t} for i, t in examples),
                                      output_signature=spec)
  converted = seqio.EncDecFeatureConverter(pack=True)(ds, {'inputs': INPUT_LENGTH, 'targets': TARGET_LENGTH})
  rows = list(converted.as_numpy_iterator())
  assert len(rows) == 1, 'both examples fit one row'
  return {k: v[None].astype(np.int32) for k, v in rows[0].items()}


@functools.lru_cache(maxsize=None)
def _packed_forward(config):
  def run(params, row):
    return flanx_model.Transformer(config).apply(
        {'params': params}, row['encoder_input_tokens'], row['decoder_input_tokens'],
        row['encoder_segment_ids'], row['decoder_segment_ids'], row['encoder_positions'], row['decoder_positions'])
  return jax.jit(run)


@pytest.mark.slow
def test_packing_equals_separate_examples(config, params, forward):
  examples = _examples()
  row = _hand_packed(examples)
  packed_logits = np.asarray(_packed_forward(config)(params, row))

  # Reference: each example alone in its own (unpacked, padded) row.
  enc = np.zeros((2, INPUT_LENGTH), np.int32)
  dec = np.zeros((2, TARGET_LENGTH), np.int32)
  for k, (inputs, targets) in enumerate(examples):
    enc[k, :len(inputs)] = inputs
    dec[k, 1:len(targets)] = targets[:-1]
  alone = forward(config, params, enc, dec)

  start = 0
  for k, (_, targets) in enumerate(examples):
    n = len(targets)
    np.testing.assert_allclose(packed_logits[0, start:start + n], alone[k, :n], atol=1e-5, rtol=0)
    start += n

  seqio_row = _seqio_packed(examples)
  if seqio_row is None:
    pytest.skip('seqio/tensorflow not installed: hand-packed row not checked against seqio')
  assert sorted(seqio_row) == sorted(row)
  for k in row:
    np.testing.assert_array_equal(seqio_row[k], row[k], err_msg=k)


def _decode_all(config, params, enc, dec):
  """Logits for every decoder position, fed one token at a time through the KV cache (one jit)."""

  @jax.jit
  def run(params, enc, dec):
    encoded = flanx_model.Transformer(config).apply({'params': params}, enc, method=flanx_model.Transformer.encode)
    cache = flanx_model.init_cache(config, params, encoded, enc, dec.shape[1])
    step_fn = flanx_model.make_step_fn(config, params)
    _, logits = jax.lax.scan(lambda cache, tokens: step_fn(tokens, cache)[::-1], cache, dec.T[:, :, None])
    return jnp.swapaxes(logits, 0, 1)

  return np.asarray(run(params, enc, dec))


@pytest.mark.slow
def test_incremental_decoding_equals_full_forward(config, params, forward):
  rng = np.random.default_rng(1)
  enc = rng.integers(2, 96, (2, INPUT_LENGTH)).astype(np.int32)
  enc[1, 9:] = 0
  dec = rng.integers(2, 96, (2, 7)).astype(np.int32)
  dec[:, 0] = 0
  full = forward(config, params, enc, dec)
  np.testing.assert_allclose(_decode_all(config, params, enc, dec), full, atol=1e-5, rtol=0)
  # The scanned layout decodes the same (its cache carries the layer axis second).
  stepped = _decode_all(config.replace(scan_layers=True), flanx_model.stack_layers(params), enc, dec)
  np.testing.assert_allclose(stepped, full, atol=1e-5, rtol=0)


def _loss(config, params, enc, dec, targets):
  logits = flanx_model.Transformer(config).apply({'params': params}, enc, dec)
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.take_along_axis(logp, targets[..., None], axis=-1))


@pytest.mark.slow
@pytest.mark.parametrize('scan_layers,remat', [(True, 'dots'), (False, 'full')])
def test_scan_and_remat_match_plain(config, params, scan_layers, remat):
  rng = np.random.default_rng(2)
  enc = rng.integers(1, 96, (2, INPUT_LENGTH)).astype(np.int32)
  targets = rng.integers(1, 96, (2, TARGET_LENGTH)).astype(np.int32)
  dec = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
  plain_loss, plain_grads = _plain_value_and_grad(config)(params, enc, dec, targets)

  variant = config.replace(scan_layers=scan_layers, remat=remat)
  variant_params = flanx_model.to_model_layout(variant, params)
  loss, grads = jax.jit(jax.value_and_grad(functools.partial(_loss, variant)))(variant_params, enc, dec, targets)
  np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
  grads = flanx_model.unstack_layers(grads)
  assert jax.tree.structure(grads) == jax.tree.structure(plain_grads)
  jax.tree.map(lambda g, p: np.testing.assert_allclose(g, p, atol=1e-5 * np.abs(p).max(), rtol=1e-5),
               grads, plain_grads)


@functools.lru_cache(maxsize=None)
def _plain_value_and_grad(config):
  return jax.jit(jax.value_and_grad(functools.partial(_loss, config)))


@pytest.mark.slow
def test_dropout_only_when_not_deterministic(config, params, forward):
  dropped = config.replace(dropout_rate=0.3)
  rng = np.random.default_rng(3)
  enc = rng.integers(1, 96, (2, INPUT_LENGTH)).astype(np.int32)
  dec = rng.integers(1, 96, (2, TARGET_LENGTH)).astype(np.int32)

  @functools.partial(jax.jit, static_argnums=2)
  def run(params, key, deterministic):
    return flanx_model.Transformer(dropped).apply({'params': params}, enc, dec, deterministic=deterministic,
                                                  rngs={'dropout': key})

  clean = forward(config, params, enc, dec)
  np.testing.assert_allclose(run(params, jax.random.key(0), True), clean, atol=1e-6, rtol=0)
  a, b, c = (np.asarray(run(params, jax.random.key(seed), False)) for seed in (0, 0, 1))
  np.testing.assert_array_equal(a, b)  # same rng, same masks
  assert np.abs(a - clean).mean() > 1e-2 * np.abs(clean).mean()
  assert np.abs(a - c).mean() > 1e-2 * np.abs(clean).mean()


def test_bfloat16_close_to_float32(config, params, forward):
  rng = np.random.default_rng(4)
  enc = rng.integers(1, 96, (2, INPUT_LENGTH)).astype(np.int32)
  dec = rng.integers(1, 96, (2, TARGET_LENGTH)).astype(np.int32)
  ref = forward(config, params, enc, dec)
  got = forward(config.replace(dtype='bfloat16'), params, enc, dec)
  assert got.dtype == np.float32  # logits come back in float32
  assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)
  assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.9
