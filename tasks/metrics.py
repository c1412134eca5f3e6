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


# BIG-Bench Hard (Suzgun et al. 2022): a chain-of-thought answer is the text after the first
# "So the answer is ", up to the end of its line, without the final period. This reproduces the
# accuracies published with the official code-davinci-002 outputs for all 27 tasks.
BBH_ANSWER_CUE = 'So the answer is '


def bbh_answer(prediction: str) -> str:
  """The answer a BBH chain-of-thought prediction states (the whole text, stripped, when no cue)."""
  start = prediction.find(BBH_ANSWER_CUE)
  if start < 0:
    return prediction.strip()
  answer = prediction[start + len(BBH_ANSWER_CUE):].split('\n', 1)[0].strip()
  return answer[:-1].strip() if answer.endswith('.') else answer


def _accuracy(name: str, hits: Sequence[bool]) -> Dict[str, float]:
  return {name: 100.0 * sum(hits) / len(hits) if hits else 0.0, 'num_examples': float(len(hits))}


def bbh_direct_exact_match(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """BBH answer-only: the prediction, stripped, equals the target; with the example count."""
  _check(targets, predictions)
  return _accuracy('exact_match', [t.strip() == p.strip() for t, p in zip(targets, predictions)])


def bbh_cot_exact_match(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """BBH chain of thought: the answer after "So the answer is" equals the target; with the count."""
  _check(targets, predictions)
  return _accuracy('exact_match', [t.strip() == bbh_answer(p) for t, p in zip(targets, predictions)])


MMLU_LETTERS = ('A', 'B', 'C', 'D')


def mmlu_letter(prediction: str) -> str:
  """The answer letter a prediction starts with (`B`, `B.`, `(B)`, `B) …`), else ''."""
  text = prediction.strip()
  if text.startswith('(') and text[2:3] == ')':
    text = text[1:]
  letter = text[:1]
  follows = text[1:2]
  return letter if letter in MMLU_LETTERS and (not follows or not follows.isalnum()) else ''


def mmlu_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """MMLU: the predicted answer letter equals the target letter; with the example count."""
  _check(targets, predictions)
  return _accuracy('accuracy', [t.strip() == mmlu_letter(p) for t, p in zip(targets, predictions)])
