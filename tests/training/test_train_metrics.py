"""Training metrics with t5x's names and normalisation (t5x models.compute_base_metrics + trainer), by hand."""

import numpy as np
import pytest

from flanx.model.config import T5Config
from flanx.training import train_metrics


def test_count_packed_examples_matches_t5x_docstring_example():
  ids = np.array([[1, 1, 3, 3, 0, 0], [2, 2, 2, 2, 2, 2], [2, 7, 7, 7, 7, 0]])
  assert train_metrics.count_packed_examples(ids) == 5
  assert train_metrics.count_packed_examples(np.array([[1, 1, 0], [1, 0, 0]]) != 0) == 2  # unpacked masks


def _batch(enc_ids, dec_ids):
  enc, dec = np.array(enc_ids), np.array(dec_ids)
  return {'encoder_input_tokens': (enc > 0) * 5, 'encoder_segment_ids': enc,
          'decoder_target_tokens': (dec > 0) * 7, 'decoder_segment_ids': dec}


def test_interval_sums_then_normalises_like_t5x():
  batch_size, lengths = 2, (4, 3)
  metrics = train_metrics.IntervalMetrics(T5Config(), batch_size, lengths, schedule=lambda step: 0.1 * (step + 1))
  b1 = _batch([[1, 1, 2, 0], [1, 1, 1, 1]], [[1, 2, 0], [1, 1, 1]])
  b2 = _batch([[1, 0, 0, 0], [1, 2, 3, 0]], [[1, 0, 0], [1, 2, 3]])
  metrics.add(b1, {'loss': 6.0, 'z_loss': 0.5, 'weight_sum': 5.0, 'num_correct': 2.0, 'grad_norm': 9.0}, step=11)
  metrics.add(b2, {'loss': 4.0, 'z_loss': 0.25, 'weight_sum': 4.0, 'num_correct': 3.0, 'grad_norm': 8.0}, step=12)
  out = metrics.result()
  slots = 2 * batch_size * lengths[1]  # two steps of [2, 3] targets
  expected = {
      'loss': 5.0, 'z_loss': 0.375, 'cross_ent_loss': 4.625,
      'loss_per_nonpadding_target_token': 10 / 9, 'loss_per_all_target_tokens': 10 / slots,
      'z_loss_per_all_target_tokens': 0.75 / slots, 'cross_ent_loss_per_all_target_tokens': 9.25 / slots,
      'accuracy': 5 / 9, 'non_padding_fraction/loss_weights': 9 / slots,
      'learning_rate': (1.1 + 1.2) / 2, 'learning_rate/current': 1.2,  # schedule at the updates' steps 10, 11
      'timing/seqs': 4.0, 'grad_norm': 8.0,
      'effective_batch_size/encoder': (3 + 4) / 2, 'effective_batch_size/decoder': (3 + 4) / 2,
      'non_padding_fraction/encoder': (7 + 4) / 16, 'non_padding_fraction/decoder': (5 + 4) / 12,
      'non_padding_fraction/overall': (11 + 9) / 28,
  }
  for key, value in expected.items():
    assert out[key] == pytest.approx(value), key
  seconds = out['timing/seconds']
  assert out['timing/steps_per_second'] == pytest.approx(2 / seconds)
  assert out['timing/seqs_per_second'] == pytest.approx(4 / seconds)
  assert out['timing/target_tokens_per_second'] == pytest.approx(slots / seconds)
  assert metrics.result()['timing/seqs'] == 0.0  # a new interval started


def test_unpacked_batches_use_t5x_token_feature_names():
  metrics = train_metrics.IntervalMetrics(T5Config(), 2, (3, 2), schedule=lambda step: 1e-3)
  batch = {'encoder_input_tokens': np.array([[4, 5, 0], [4, 0, 0]]), 'decoder_target_tokens': np.array([[3, 1],
                                                                                                        [1, 0]])}
  metrics.add(batch, {'loss': 1.0, 'z_loss': 0.0, 'weight_sum': 3.0, 'num_correct': 1.0}, step=1)
  out = metrics.result()
  assert out['effective_batch_size/encoder_input_tokens'] == 2
  assert out['non_padding_fraction/decoder_target_tokens'] == pytest.approx(3 / 4)
