"""Training batches for the benchmarks: seqio-packed (flanx) and padded (Hugging Face) rows of one shape.

Sources: 'cot' = the real FLAN CoT TSVs tokenized with the dev vocabulary (tasks.cot, as benchmarks/pipeline.py
builds them); 'synthetic' = seeded random token ids with log-normal lengths, for machines without the shared
data. Either way seqio's EncDecFeatureConverter(pack=True / pack=False) lays out the rows, so non-padding
fractions are the converter's own.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.common import SHARED_DATA

COT_DIR = SHARED_DATA / 'flan_cot'
VOCAB = SHARED_DATA / 'vocab' / 'dev_8k.model'


def cot_available() -> bool:
  """Whether the shared CoT data and dev vocabulary are on this machine."""
  return COT_DIR.is_dir() and VOCAB.is_file()


def hide_gpus_from_tensorflow() -> None:
  """Keeps TensorFlow (the input pipeline) off the GPU, which belongs to the measured process."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')


def _synthetic_examples(lengths: dict, seed: int, vocab: int = 8000):
  """tf.data of random examples: lengths log-normal around a quarter of the maximum, EOS-terminated."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def generate():
    while True:
      example = {}
      for key, limit in lengths.items():
        n = int(np.clip(rng.lognormal(np.log(limit / 4), 0.7), 2, limit))
        example[key] = np.concatenate([rng.integers(3, vocab, n - 1), [1]]).astype(np.int32)
      yield example

  spec = {k: tf.TensorSpec([None], tf.int32) for k in lengths}
  return tf.data.Dataset.from_generator(generate, output_signature=spec)


def make_batches(source: str, lengths: dict, batch_size: int, count: int, pack: bool, seed: int = 0,
                 cot_variants: tuple[str, ...] = ('zs_reasoning',)) -> dict[str, np.ndarray]:
  """`count` batches stacked on a leading axis: {feature: int32 [count, batch, length]}."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import seqio  # pylint: disable=g-import-not-at-top
  hide_gpus_from_tensorflow()
  converter = seqio.EncDecFeatureConverter(pack=pack)
  if source == 'cot':
    if not cot_available():
      raise FileNotFoundError(f'{COT_DIR} or {VOCAB} missing: use --data synthetic')
    from benchmarks import pipeline  # pylint: disable=g-import-not-at-top
    name = pipeline.register_mixture(str(COT_DIR), str(VOCAB), list(cot_variants),
                                     name='bench_train_' + '_'.join(cot_variants))
    ds = seqio.get_dataset(name, lengths, feature_converter=converter, dataset_split='train', shuffle=True,
                           seed=seed, num_epochs=None)
  elif source == 'synthetic':
    ds = converter(_synthetic_examples(lengths, seed), lengths)
  else:
    raise ValueError(f'unknown batch source {source!r} (expected cot or synthetic)')
  rows = list(ds.batch(batch_size, drop_remainder=True).take(count).as_numpy_iterator())
  return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}


def padding_stats(batches: dict[str, np.ndarray], pack: bool) -> dict:
  """Examples, real encoder/decoder tokens and non-padding fractions of stacked batches."""
  if pack:
    examples = int(batches['encoder_segment_ids'].max(axis=-1).sum())
    enc = int((batches['encoder_segment_ids'] > 0).sum())
    dec = int((batches['decoder_segment_ids'] > 0).sum())
  else:
    examples = int(batches['encoder_input_tokens'].shape[0] * batches['encoder_input_tokens'].shape[1])
    enc = int((batches['encoder_input_tokens'] != 0).sum())
    dec = int((batches['decoder_loss_weights'] > 0).sum())
  enc_slots = batches['encoder_input_tokens'].size
  dec_slots = batches['decoder_target_tokens'].size
  return {'examples': examples, 'encoder_tokens': enc, 'decoder_tokens': dec,
          'non_padding_fraction_inputs': enc / enc_slots, 'non_padding_fraction_targets': dec / dec_slots,
          'non_padding_fraction': (enc + dec) / (enc_slots + dec_slots)}
