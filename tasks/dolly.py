"""Dolly-15k tasks: `dolly`, `dolly_<category>` and the mixture `dolly_categories`.

Data source, looked up when a dataset is first built (so gin and env settings made after import
still apply): the JSONL path from `dolly_path` (gin: `tasks.dolly.dolly_path.path`, env
`FLANX_DOLLY_PATH`; local or gs://), else Hugging Face `datasets`
(`databricks/databricks-dolly-15k`, when installed and online), else TFDS `databricks_dolly`.
Every record needs string fields instruction, context, response, category, with a non-empty
instruction, response and category.

t5x: `--gin.MIXTURE_OR_TASK_MODULE="tasks.dolly" --gin.MIXTURE_OR_TASK_NAME="dolly"`.
"""

import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import gin
import seqio

from tasks import metrics
from tasks import registrations
from tasks import spec as spec_lib
from tasks import templates
from tasks import vocab as vocab_lib

PATH_ENV = 'FLANX_DOLLY_PATH'
HF_NAME = 'databricks/databricks-dolly-15k'
TFDS_NAME = 'databricks_dolly'
CATEGORIES = ('open_qa', 'general_qa', 'classification', 'closed_qa', 'brainstorming',
              'information_extraction', 'summarization', 'creative_writing')
REQUIRED = ('instruction', 'response', 'category')
OPTIONAL = ('context',)
METRICS = (metrics.rouge_l, metrics.bleu, metrics.exact_match)
DEFAULT_VALIDATION_FRACTION = 0.05


@gin.configurable
def dolly_path(path: Optional[str] = None) -> Optional[str]:
  """The Dolly JSONL path: argument / gin binding, else $FLANX_DOLLY_PATH, else None."""
  return path or os.environ.get(PATH_ENV) or None


def load_from_hub() -> Tuple[str, Iterable[Any]]:
  """Dolly records from HF `datasets`, else TFDS; an error saying how to point at a file."""
  failures = []
  try:
    import datasets  # pylint: disable=g-import-not-at-top
    rows = datasets.load_dataset(HF_NAME, split='train')
    return f'hf:{HF_NAME}', rows
  except Exception as e:  # pylint: disable=broad-except
    failures.append(f'Hugging Face datasets: {type(e).__name__}: {e}')
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    rows = tfds.as_numpy(tfds.load(TFDS_NAME, split='train'))
    return f'tfds:{TFDS_NAME}', ({k: v.decode('utf-8') for k, v in r.items()} for r in rows)
  except Exception as e:  # pylint: disable=broad-except
    failures.append(f'TFDS: {type(e).__name__}: {e}')
  raise FileNotFoundError(
      'No Dolly data: set $FLANX_DOLLY_PATH or gin `tasks.dolly.dolly_path.path` to the '
      'databricks-dolly-15k.jsonl file (local or gs://). Tried: ' + ' | '.join(failures))


def make_spec(name: str = 'dolly', path: Optional[str] = None,
              validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
              categories: Optional[Sequence[str]] = None, on_error: str = 'raise',
              vocabulary: Optional[seqio.Vocabulary] = None,
              metric_fns: Sequence[Any] = METRICS) -> spec_lib.DatasetSpec:
  """The Dolly dataset spec (JSONL at `path`, or the configured/hub source when None)."""
  return spec_lib.DatasetSpec(
      name=name, variants=(spec_lib.Variant('', (templates.DOLLY,)),),
      required=REQUIRED, optional=OPTIONAL,
      path=path if path else dolly_path, loader=load_from_hub, fmt='jsonl',
      keep={'category': tuple(categories)} if categories else None,
      validation_fraction=validation_fraction, metric_fns=tuple(metric_fns),
      vocabulary=vocabulary, on_error=on_error)


@gin.configurable
def register_dolly(name: str = 'dolly', path: Optional[str] = None,
                   validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                   categories: Optional[Sequence[str]] = None,
                   per_category: bool = True, on_error: str = 'raise',
                   vocabulary: Optional[seqio.Vocabulary] = None) -> List[str]:
  """Registers `name` (optionally only `categories`), `{name}_<category>` tasks and the
  examples-proportional mixture `{name}_categories`; returns the names."""
  vocabulary = vocabulary or vocab_lib.LazyVocabulary()
  base = make_spec(name, path, validation_fraction, categories, on_error, vocabulary)
  names = spec_lib.register(base)
  if per_category:
    category_tasks = []
    for category in categories or CATEGORIES:
      spec = make_spec(f'{name}_{category}', path, validation_fraction, (category,), on_error,
                       vocabulary)
      category_tasks += spec_lib.register(spec)
    spec_lib.add_mixture(f'{name}_categories', category_tasks,
                         default_rate=seqio.mixing_rate_num_examples)
    names += category_tasks + [f'{name}_categories']
  return names


registrations.track(register_dolly)
