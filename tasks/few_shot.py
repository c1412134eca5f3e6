"""Few-shot prompts that fit the run's input length: exemplars are dropped, never the query.

A few-shot source yields the prompt in pieces: `prefix` (instruction; may be empty), `exemplars`
(solved examples in the order they may be used, each ending with its separator) and `query` (the
example itself with its answer cue, e.g. `...\\nA:`); optionally their token counts
`exemplar_lengths` and `fixed_length` (prefix + query), which saves tokenizing them again.
`fit_exemplars`, a seqio preprocessor placed before tokenization, joins `prefix + exemplars[:k] + query` with the largest `k` whose tokens (plus
EOS) fit `sequence_length['inputs']` (seqio passes the run's TASK_FEATURE_LENGTHS to preprocessors
that ask for it) and `max_tokens`. Exemplars are dropped from the end, as the MMLU reference
evaluation does. When even `prefix + query` does not fit: `on_overflow='raise'` stops with an error
naming the task and lengths (evaluation suites), `'keep'` leaves the zero-shot prompt for seqio to
truncate (training data; a generic truncation count sees it).
"""

from typing import Any, Dict, List, Mapping, Optional

import seqio

FEW_SHOT_FEATURES = ('prefix', 'exemplars', 'query', 'exemplar_lengths', 'fixed_length')
ON_OVERFLOW = ('raise', 'keep')


def input_budget(sequence_length: Optional[Mapping[str, Optional[int]]],
                 output_features: Mapping[str, seqio.Feature], max_tokens: Optional[int]
                 ) -> Optional[int]:
  """Tokens the prompt may use: the inputs length less EOS, capped at `max_tokens` (None: no limit)."""
  length = (sequence_length or {}).get('inputs')
  if length is not None:
    length -= int(bool(output_features['inputs'].add_eos))
  limits = [x for x in (length, max_tokens) if x is not None]
  return min(limits) if limits else None


def fit_exemplars(dataset, sequence_length=None, output_features=None, max_tokens: Optional[int] = None,
                  on_overflow: str = 'raise', task_name: str = ''):
  """seqio preprocessor: `prefix`/`exemplars`/`query` -> `inputs` within the input token budget."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if on_overflow not in ON_OVERFLOW:
    raise ValueError(f'on_overflow must be one of {ON_OVERFLOW}, got {on_overflow!r}')
  vocabulary = output_features['inputs'].vocabulary
  budget = input_budget(sequence_length, output_features, max_tokens)

  def size(text):
    return tf.size(vocabulary.encode_tf(text), out_type=tf.int32)

  def fit(ex):
    exemplars = tf.reshape(ex['exemplars'], [-1])

    def prompt(k):
      return tf.strings.reduce_join(tf.concat([[ex['prefix']], exemplars[:k], [ex['query']]], 0))

    out = {k: v for k, v in ex.items() if k not in FEW_SHOT_FEATURES}
    if budget is None:
      out['inputs'] = prompt(tf.size(exemplars))
      return out
    if 'exemplar_lengths' in ex:  # counted by the source already
      fixed, lengths = ex['fixed_length'], tf.reshape(ex['exemplar_lengths'], [-1])
    else:
      fixed = size(tf.strings.join([ex['prefix'], ex['query']]))
      lengths = tf.map_fn(size, exemplars, fn_output_signature=tf.int32)
    # Token counts add up exactly when pieces end at a newline in lossless mode; otherwise the
    # estimate is checked on the joined text and exemplars are dropped until it fits.
    k = tf.reduce_sum(tf.cast(fixed + tf.cumsum(lengths) <= budget, tf.int32))
    k, needed = tf.while_loop(lambda k, n: tf.logical_and(k > 0, n > budget),
                              lambda k, n: (k - 1, size(prompt(k - 1))), (k, size(prompt(k))))
    text = prompt(k)
    if on_overflow == 'raise':
      check = tf.debugging.assert_less_equal(
          needed, budget,
          message=(f'{task_name or "few-shot task"}: the prompt without any exemplar (instruction, '
                   f'query and answer cue) needs more than the {budget} input tokens available '
                   f'(inputs length less EOS); raise TASK_FEATURE_LENGTHS["inputs"]. Needed tokens:'))
      with tf.control_dependencies([check]):
        text = tf.identity(text)
    out['inputs'] = text
    return out

  return dataset.map(fit, num_parallel_calls=tf.data.AUTOTUNE)


def with_lengths(pieces: List[Dict[str, Any]], vocabulary: seqio.Vocabulary) -> List[Dict[str, Any]]:
  """`pieces` plus their token counts (`exemplar_lengths`, `fixed_length`), so the fit tokenizes only once."""
  counts: Dict[str, int] = {}

  def count(text: str) -> int:
    if text not in counts:
      counts[text] = len(vocabulary.encode(text))
    return counts[text]

  return [dict(p, exemplar_lengths=[count(e) for e in p['exemplars']],
               fixed_length=count(p['prefix']) + len(vocabulary.encode(p['query']))) for p in pieces]


def join(prefix: str, exemplars, query: str) -> str:
  """The prompt with every exemplar (the Python twin of `fit_exemplars` without a budget)."""
  return prefix + ''.join(exemplars) + query
