"""Eval metrics against hand computation."""

import math

import pytest

from tasks import metrics


def test_rouge_l_matches_lcs_by_hand():
  # LCS("the cat sat on the mat", "the cat on the mat") = 5 tokens: P = 5/5, R = 5/6.
  p, r = 1.0, 5 / 6
  expected = 100 * 2 * p * r / (p + r)
  got = metrics.rouge_l(['the cat sat on the mat', 'a b'], ['the cat on the mat', 'c d'])
  assert got['rougeL'] == pytest.approx((expected + 0.0) / 2)


def test_bleu_by_hand():
  assert metrics.bleu(['the cat sat on the mat'], ['the cat sat on the mat'])['bleu'] == (
      pytest.approx(100.0))
  # A 5-word prefix of a 6-word reference: every n-gram precision is 1, so BLEU is the
  # brevity penalty exp(1 - 6/5).
  hyp, ref = 'the cat sat on the', 'the cat sat on the mat'
  expected = 100 * math.exp(1 - 6 / 5)
  assert metrics.bleu([ref], [hyp])['bleu'] == pytest.approx(expected, rel=1e-6)


def test_exact_match_and_combined():
  got = metrics.text_metrics(['72', 'yes', 'b\nc'], [' 72 ', 'no', 'b\nc'])
  assert got['exact_match'] == pytest.approx(200 / 3)
  assert set(got) == {'rougeL', 'bleu', 'exact_match'}
  with pytest.raises(ValueError, match='2 targets but 1 predictions'):
    metrics.exact_match(['a', 'b'], ['a'])
