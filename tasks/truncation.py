"""How much of a task seqio cuts at given feature lengths: the fraction of examples whose tokenized inputs
or targets (EOS included) are longer than the run's `TASK_FEATURE_LENGTHS`.

A cut target is lost training signal and a cut input may lose its question; flanx logs these fractions at
train/eval start. The task's own preprocessors run with the real lengths (so few-shot prompts are fitted as
in training), except seqio's trim, which is what is being measured.
"""

from typing import Any, Dict, Mapping, Optional

import numpy as np
import seqio

_TRIMS = (seqio.preprocessors.append_eos_after_trim,)


def _untrimmed(prep):
  """The preprocessor with seqio's trim removed (EOS still appended)."""
  return seqio.preprocessors.append_eos if prep in _TRIMS else prep


def truncation_report(task: Any, feature_lengths: Mapping[str, int], split: str = 'train',
                      max_examples: Optional[int] = 1000) -> Dict[str, Any]:
  """{'examples': n, 'inputs': fraction cut, 'targets': fraction cut, 'max_inputs': longest, ...} over the
  first `max_examples` examples (unshuffled) of a task (object or name)."""
  task = seqio.get_mixture_or_task(task) if isinstance(task, str) else task
  if not isinstance(task, seqio.Task):
    raise TypeError(f'{task.name} is a mixture: report on each of its tasks (mixture.tasks)')
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for prep in task.preprocessors:
    if isinstance(prep, seqio.CacheDatasetPlaceholder):  # marks where seqio's cache would stop: not a step
      continue
    prep = seqio.utils.add_kwargs_to_transform(_untrimmed(prep), sequence_length=dict(feature_lengths),
                                               output_features=task.output_features)
    dataset = prep(dataset)
  if max_examples:
    dataset = dataset.take(max_examples)
  features = [f for f in feature_lengths if f in task.output_features]
  lengths = {f: [] for f in features}
  for example in dataset.as_numpy_iterator():
    for f in features:
      lengths[f].append(len(example[f]))
  n = len(lengths[features[0]]) if features else 0
  report: Dict[str, Any] = {'task': task.name, 'split': split, 'examples': n}
  for f in features:
    values = np.array(lengths[f], dtype=np.int64)
    report[f] = float((values > feature_lengths[f]).mean()) if n else 0.0
    report[f'max_{f}'] = int(values.max()) if n else 0
  return report


def mixture_truncation(name: str, feature_lengths: Mapping[str, int], split: str = 'train',
                       max_examples: Optional[int] = 1000) -> Dict[str, Dict[str, Any]]:
  """`truncation_report` for a task, or for every task of a mixture, by task name."""
  provider = seqio.get_mixture_or_task(name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  return {t.name: truncation_report(t, feature_lengths, split, max_examples) for t in tasks}
