"""The keep-best retention policy (t5x SaveBestCheckpointer's rules), by hand-worked cases."""

from __future__ import annotations

import pytest

from flanx.training import keep_best
from flanx.training.keep_best import KeepBest

BLEU = 'inference_eval/dolly/bleu'
LOSS = 'eval/validation/loss'


def _kept(decision):
  return sorted(s for s, why in decision.items() if why != 'deleted')


def test_keeps_the_best_k_and_the_latest():
  records = {10: {BLEU: 5.0}, 20: {BLEU: 9.0}, 30: {BLEU: 7.0}, 40: {BLEU: 1.0}, 50: {BLEU: 2.0}}
  decision = keep_best.decide(records, KeepBest(metric=BLEU, keep=2))
  assert _kept(decision) == [20, 30, 50]
  assert decision[20] == 'best #1' and decision[30] == 'best #2' and decision[50] == 'latest'
  assert keep_best.best_step(records, KeepBest(metric=BLEU)) == 20


def test_min_mode_and_ties_prefer_the_later_step():
  records = {10: {LOSS: 2.0}, 20: {LOSS: 1.5}, 30: {LOSS: 1.5}, 40: {LOSS: 3.0}}
  policy = KeepBest(metric=LOSS, mode='min', keep=1)
  assert keep_best.ranked(records, policy) == [30, 20, 10, 40]
  assert _kept(keep_best.decide(records, policy)) == [30, 40]


def test_checkpoints_without_metrics_and_force_keep_period():
  records = {10: {BLEU: 3.0}, 15: None, 20: {BLEU: 1.0}, 30: {BLEU: 2.0}, 40: {BLEU: 0.5}}
  kept = keep_best.decide(records, KeepBest(metric=BLEU, keep=1))
  assert _kept(kept) == [10, 15, 40] and kept[15] == 'no metrics'
  dropped = keep_best.decide(records, KeepBest(metric=BLEU, keep=1, keep_checkpoints_without_metrics=False,
                                               force_keep_period=20))
  assert _kept(dropped) == [10, 20, 40] and dropped[20] == 'force_keep_period' and dropped[40] == 'latest, force_keep_period'


def test_nan_and_missing_metric_rank_nowhere():
  records = {10: {BLEU: float('nan')}, 20: {'other': 1.0}, 30: {BLEU: 1.0}, 40: {BLEU: 0.0}}
  policy = KeepBest(metric=BLEU, keep=1, keep_checkpoints_without_metrics=False)
  assert keep_best.ranked(records, policy) == [30, 40]
  assert _kept(keep_best.decide(records, policy)) == [30, 40]


def test_rank_sum_of_two_metrics():
  # BLEU ranks (max): 30, 20, 10, 40 -> 0,1,2,3 ; loss ranks (min): 20, 10, 40, 30 -> 0,1,2,3
  records = {10: {BLEU: 4.0, LOSS: 1.2}, 20: {BLEU: 5.0, LOSS: 1.0}, 30: {BLEU: 6.0, LOSS: 2.0},
             40: {BLEU: 1.0, LOSS: 1.5}}
  policy = KeepBest(metric=(BLEU, LOSS), mode=('max', 'min'), keep=1)
  # rank sums: 10 -> 2+1=3, 20 -> 1+0=1, 30 -> 0+3=3, 40 -> 3+2=5
  assert keep_best.ranked(records, policy) == [20, 30, 10, 40]
  assert 'rank sum' in policy.describe()


def test_settings_are_checked_and_dicts_accepted():
  assert keep_best.from_setting({'metric': BLEU, 'keep': 3}) == KeepBest(metric=BLEU, keep=3)
  assert keep_best.from_setting(None) is None
  with pytest.raises(ValueError, match='unknown key'):
    keep_best.from_setting({'metric': BLEU, 'kep': 3})
  with pytest.raises(ValueError, match='mode'):
    KeepBest(metric=BLEU, mode='maximum')
  with pytest.raises(ValueError, match='one per metric'):
    KeepBest(metric=(BLEU, LOSS), mode=('max',))
  with pytest.raises(ValueError, match='keep'):
    KeepBest(metric=BLEU, keep=0)


def test_record_keeps_history_of_deleted(tmp_path):
  policy = KeepBest(metric=BLEU, keep=1)
  first = {10: {BLEU: 2.0}, 20: {BLEU: 1.0}}
  keep_best.write_record(str(tmp_path), policy, first, keep_best.decide(first, policy))
  second = {10: {BLEU: 2.0}, 30: {BLEU: 3.0}}  # 20 was deleted in between
  keep_best.write_record(str(tmp_path), policy, second, keep_best.decide(second, policy))
  record = keep_best.read_record(str(tmp_path))
  assert record['best'] == 30 and record['rule'] == f'best by {BLEU} (highest)'
  status = {r['step']: r['status'] for r in record['checkpoints']}
  assert status == {10: 'deleted', 20: 'deleted', 30: 'best #1, latest'}
  assert record['checkpoints'][0]['metrics'] == {BLEU: 2.0}
