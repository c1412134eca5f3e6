"""Native chain-of-thought tasks from the FLAN CoT TSVs (`question \\t answer \\t rationale`).

Files: `<dir>/<dataset>_train.tsv` with literal `\\n` escapes; the directory comes from gin
`tasks.cot.cot_dir.path` or env `FLANX_COT_DIR`, looked up when a dataset is first built.

Per dataset four tasks, `cot_<dataset>_<variant>`:
  zs_answer / zs_reasoning: zero-shot, target is the answer / the rationale then the answer;
  fs_answer / fs_reasoning: the same with exemplars of the same dataset in front (seeded draw,
    never the example itself, added while the inputs stay within `few_shot_budget` tokens, 1920 as
    Flan's cap, and within the run's inputs length less EOS: exemplars are dropped, never the
    question; `tasks.few_shot.fit_exemplars`).
Mixture `cot_native`: all of them, examples-proportional with a per-task cap (100k, as Flan's CoT).
"""

import functools
import os
from typing import List, Optional, Sequence

import gin
import seqio

from tasks import spec as spec_lib
from tasks import templates
from tasks import vocab as vocab_lib

DIR_ENV = 'FLANX_COT_DIR'
# The nine FLAN 2022 CoT datasets (flan/v2/cot_data).
DATASETS = ('aqua', 'creak', 'ecqa', 'esnli', 'gsm8k', 'qasc', 'qed', 'sensemaking', 'strategyqa')
COLUMNS = ('question', 'answer', 'rationale')
CAP = 100_000
VARIANTS = (
    spec_lib.Variant('zs_answer', templates.COT_ANSWER_ONLY),
    spec_lib.Variant('zs_reasoning', templates.COT_WITH_REASONING),
    spec_lib.Variant('fs_answer', templates.COT_ANSWER_ONLY, few_shot=True),
    spec_lib.Variant('fs_reasoning', templates.COT_WITH_REASONING, few_shot=True),
)


@gin.configurable
def cot_dir(path: Optional[str] = None) -> str:
  """Directory of the CoT TSVs: argument / gin binding, else $FLANX_COT_DIR."""
  path = path or os.environ.get(DIR_ENV)
  if not path:
    raise FileNotFoundError('CoT data not configured: set $FLANX_COT_DIR or gin '
                            '`tasks.cot.cot_dir.path` to the directory of <dataset>_train.tsv')
  return path


def tsv_path(dataset: str, directory: Optional[str] = None) -> str:
  """Where a dataset's TSV lives (configured directory unless `directory` is given)."""
  return os.path.join(directory or cot_dir(), f'{dataset}_train.tsv')


def make_spec(dataset: str, directory: Optional[str] = None,
              few_shot_budget: int = spec_lib.DEFAULT_FEW_SHOT_BUDGET,
              vocabulary: Optional[seqio.Vocabulary] = None, on_error: str = 'raise',
              variants: Sequence[spec_lib.Variant] = VARIANTS, prefix: str = ''
              ) -> spec_lib.DatasetSpec:
  """The spec of one CoT dataset (tasks `{prefix}cot_{dataset}_{variant}`)."""
  return spec_lib.DatasetSpec(
      name=f'{prefix}cot_{dataset}', variants=tuple(variants), required=COLUMNS,
      path=functools.partial(tsv_path, dataset, directory), fmt='tsv', columns=COLUMNS,
      unescape_newlines=True, vocabulary=vocabulary, few_shot_budget=few_shot_budget,
      on_error=on_error)


@gin.configurable
def register_cot(directory: Optional[str] = None, datasets: Sequence[str] = DATASETS,
                 cap: int = CAP, few_shot_budget: int = spec_lib.DEFAULT_FEW_SHOT_BUDGET,
                 vocabulary: Optional[seqio.Vocabulary] = None, mixture: str = 'cot_native',
                 on_error: str = 'raise', prefix: str = '') -> List[str]:
  """Registers the CoT tasks of `datasets` and their capped mixture; returns the names."""
  vocabulary = vocabulary or vocab_lib.LazyVocabulary()
  names = []
  for dataset in datasets:
    names += spec_lib.register(make_spec(dataset, directory, few_shot_budget, vocabulary,
                                         on_error, prefix=prefix))
  rate = functools.partial(seqio.mixing_rate_num_examples, maximum=cap)
  spec_lib.add_mixture(prefix + mixture, names, default_rate=rate)
  return names + [prefix + mixture]


register_cot()
