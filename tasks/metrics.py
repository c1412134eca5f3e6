"""Eval text metrics, seqio metric_fn signature `(targets, predictions) -> dict`, 0-100 scale."""

from typing import Dict, Sequence


def _check(targets: Sequence[str], predictions: Sequence[str]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions')


def rouge_l(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Mean ROUGE-L F-measure (rouge-score's default tokenizer, with stemming)."""
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  _check(targets, predictions)
  if not targets:
    return {'rougeL': 0.0}
  scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)
  scores = [scorer.score(t, p)['rougeL'].fmeasure for t, p in zip(targets, predictions)]
  return {'rougeL': 100.0 * sum(scores) / len(scores)}


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Corpus BLEU (sacrebleu defaults: 13a tokenization, exponential smoothing)."""
  import sacrebleu  # pylint: disable=g-import-not-at-top
  _check(targets, predictions)
  if not targets:
    return {'bleu': 0.0}
  return {'bleu': float(sacrebleu.corpus_bleu(list(predictions), [list(targets)]).score)}


def exact_match(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Percentage of predictions equal to their target after stripping outer whitespace."""
  _check(targets, predictions)
  if not targets:
    return {'exact_match': 0.0}
  hits = sum(t.strip() == p.strip() for t, p in zip(targets, predictions))
  return {'exact_match': 100.0 * hits / len(targets)}


def text_metrics(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """ROUGE-L, BLEU and exact match together."""
  out = {}
  for fn in (rouge_l, bleu, exact_match):
    out.update(fn(targets, predictions))
  return out
