"""MMLU (Hendrycks et al. 2021), 57 subjects, 5-shot from the dev split, answer-letter accuracy.

Data: the original release's `data/` folder (`{dev,val,test}/{subject}_{split}.csv`, no header,
columns question, A, B, C, D, answer; standard CSV quoting: fields with commas, quotes or newlines
are double-quoted, quotes doubled), found through gin `tasks.mmlu.mmlu_dir.path` or env
`FLANX_MMLU_DIR` (the `data/` folder or the folder holding it) when a dataset is first built.

Prompt, as the reference evaluation (hendrycks/test evaluate.py, evaluate_flan.py) writes it:
  `The following are multiple choice questions (with answers) about  {subject words}.\\n\\n` (the
  reference joins the words with a leading space, hence two spaces), then the first five dev rows
  as `{question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n`, then the question as
  `…\\nAnswer:`. Target: the letter. If the prompt is too long, dev exemplars are dropped from the
  end (as the reference does); if even the zero-shot prompt does not fit, building fails clearly.
Difference from the reference: fields are kept as written (the reference's pandas reader turns
  all-numeric columns into numbers, e.g. `0.50` -> `0.5`, and empty fields into `nan`).
Metric: accuracy of the answer letter the prediction starts with (`tasks.metrics.mmlu_letter`);
  the reference scores the four letter logits of the first decoded token instead, which agrees
  whenever greedy decoding starts with a letter.
Splits: `test` (the published figures), `validation` (val). Tasks `mmlu_direct_<subject>`, mixture
`mmlu_direct`; per-category and average accuracy come from the report (`CATEGORIES`).
"""

import csv
import functools
import io
import os
from typing import Dict, List, Optional, Tuple

import gin
import seqio

from tasks import few_shot
from tasks import metrics
from tasks import registrations
from tasks import spec as spec_lib
from tasks import vocab as vocab_lib

DIR_ENV = 'FLANX_MMLU_DIR'
SPLIT_FILES = {'test': 'test', 'validation': 'val', 'dev': 'dev'}
NUM_SHOTS = 5
LETTERS = metrics.MMLU_LETTERS

# The standard 57 -> 4 grouping (hendrycks/test categories.py: subject -> subcategory -> category).
_GROUPS = {
    'STEM': ('abstract_algebra', 'astronomy', 'college_biology', 'college_chemistry', 'college_computer_science',
             'college_mathematics', 'college_physics', 'computer_security', 'conceptual_physics',
             'electrical_engineering', 'elementary_mathematics', 'high_school_biology', 'high_school_chemistry',
             'high_school_computer_science', 'high_school_mathematics', 'high_school_physics',
             'high_school_statistics', 'machine_learning'),
    'humanities': ('formal_logic', 'high_school_european_history', 'high_school_us_history',
                   'high_school_world_history', 'international_law', 'jurisprudence', 'logical_fallacies',
                   'moral_disputes', 'moral_scenarios', 'philosophy', 'prehistory', 'professional_law',
                   'world_religions'),
    'social sciences': ('econometrics', 'high_school_geography', 'high_school_government_and_politics',
                        'high_school_macroeconomics', 'high_school_microeconomics', 'high_school_psychology',
                        'human_sexuality', 'professional_psychology', 'public_relations', 'security_studies',
                        'sociology', 'us_foreign_policy'),
    'other': ('anatomy', 'business_ethics', 'clinical_knowledge', 'college_medicine', 'global_facts', 'human_aging',
              'management', 'marketing', 'medical_genetics', 'miscellaneous', 'nutrition', 'professional_accounting',
              'professional_medicine', 'virology'),
}
CATEGORIES: Dict[str, str] = {s: c for c, subjects in _GROUPS.items() for s in subjects}
SUBJECTS = tuple(sorted(CATEGORIES))


@gin.configurable
def mmlu_dir(path: Optional[str] = None) -> str:
  """The MMLU `data/` folder: argument / gin binding, else $FLANX_MMLU_DIR (its parent works too)."""
  path = path or os.environ.get(DIR_ENV)
  if not path:
    raise FileNotFoundError('MMLU data not configured: set $FLANX_MMLU_DIR or gin `tasks.mmlu.mmlu_dir.path` to '
                            "the release's data/ folder (holding dev/, val/, test/)")
  return path


def data_folder(path: str) -> str:
  """`path` itself when it holds dev/, else its data/ subfolder when that does."""
  if not os.path.isdir(os.path.join(path, 'dev')) and os.path.isdir(os.path.join(path, 'data', 'dev')):
    return os.path.join(path, 'data')
  return path


def csv_path(subject: str, split: str, directory: Optional[str] = None) -> str:
  """Where a subject's split lives: `<data>/{dev,val,test}/{subject}_{split}.csv`."""
  name = SPLIT_FILES[split]
  return os.path.join(data_folder(directory or mmlu_dir()), name, f'{subject}_{name}.csv')


def read_rows(path: str) -> Tuple[Tuple[str, ...], ...]:
  """(question, A, B, C, D, answer) rows of one CSV; a clear error naming file and line otherwise."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: missing (MMLU layout: data/{{dev,val,test}}/{{subject}}_{{split}}.csv)')
  return _read_rows(spec_lib.file_key(path))


@functools.lru_cache(maxsize=None)
def _read_rows(key) -> Tuple[Tuple[str, ...], ...]:
  path = key[0] if isinstance(key, tuple) else key  # the key changes with the file (read once per version)
  with open(path, encoding='utf-8', newline='') as f:
    text = f.read()
  reader = csv.reader(io.StringIO(text))
  rows = []
  while True:
    line = reader.line_num + 1
    try:
      row = next(reader)
    except StopIteration:
      break
    except csv.Error as e:
      raise ValueError(f'{path}:{line}: malformed CSV: {e}') from e
    if not row:
      continue
    if len(row) != 6:
      raise ValueError(f'{path}:{line}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}')
    if row[5].strip() not in LETTERS:
      raise ValueError(f'{path}:{line}: answer must be one of {LETTERS}, got {row[5]!r}')
    rows.append(tuple(row[:5]) + (row[5].strip(),))
  return tuple(rows)


def format_question(row: Tuple[str, ...]) -> str:
  """`{question}\\nA. …\\nD. …\\nAnswer:` (the reference's format without the answer)."""
  options = ''.join(f'\n{letter}. {text}' for letter, text in zip(LETTERS, row[1:5]))
  return f'{row[0]}{options}\nAnswer:'


def header(subject: str) -> str:
  """The reference's first line; its subject formatting puts a space before every word."""
  words = ''.join(' ' + w for w in subject.split('_'))
  return f'The following are multiple choice questions (with answers) about {words}.\n\n'


def prompt_pieces(subject: str, split: str, directory: Optional[str] = None,
                  num_shots: int = NUM_SHOTS) -> List[Dict[str, object]]:
  """Every example of a subject's split as few-shot pieces (header, dev exemplars, question, letter)."""
  if subject not in CATEGORIES:
    raise ValueError(f'unknown MMLU subject {subject!r}')
  root = directory or mmlu_dir()
  shots = [f'{format_question(r)} {r[5]}\n\n' for r in read_rows(csv_path(subject, 'dev', root))[:num_shots]]
  return [{'prefix': header(subject), 'exemplars': shots, 'query': format_question(r), 'targets': r[5]}
          for r in read_rows(csv_path(subject, split, root))]


def prompts(subject: str, split: str, directory: Optional[str] = None) -> List[Tuple[str, str]]:
  """(full 5-shot prompt, letter) of every example, with no length limit."""
  return [(few_shot.join(p['prefix'], p['exemplars'], p['query']), p['targets'])
          for p in prompt_pieces(subject, split, directory)]


def _dataset(split: str, shuffle_files: bool = False, seed: Optional[int] = None, *, subject: str,
             directory: Optional[str], num_shots: int, vocabulary: seqio.Vocabulary):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  registrations.check()  # a gin setting made after registration must not be ignored
  del shuffle_files, seed  # a fixed evaluation set, in file order
  pieces = prompt_pieces(subject, split, directory, num_shots)
  pieces = few_shot.with_lengths(pieces, vocabulary)
  text = tf.TensorSpec([], tf.string)
  return tf.data.Dataset.from_generator(
      lambda: iter(pieces),
      output_signature={'prefix': text, 'exemplars': tf.TensorSpec([None], tf.string), 'query': text,
                        'targets': text, 'exemplar_lengths': tf.TensorSpec([None], tf.int32),
                        'fixed_length': tf.TensorSpec([], tf.int32)})


def task_name(subject: str, prefix: str = '') -> str:
  return f'{prefix}mmlu_direct_{subject}'


@gin.configurable
def register_mmlu(directory: Optional[str] = None, subjects: Tuple[str, ...] = SUBJECTS,
                  num_shots: int = NUM_SHOTS, vocabulary: Optional[seqio.Vocabulary] = None,
                  prefix: str = '') -> List[str]:
  """Registers `mmlu_direct_<subject>` and the mixture `mmlu_direct` (no file is read); returns the names."""
  features = spec_lib.default_features(vocabulary or vocab_lib.LazyVocabulary())
  names = []
  for subject in subjects:
    name = task_name(subject, prefix)
    source = seqio.FunctionDataSource(
        functools.partial(_dataset, subject=subject, directory=directory, num_shots=num_shots,
                          vocabulary=features['inputs'].vocabulary),
        splits=('test', 'validation'))
    fit = functools.partial(few_shot.fit_exemplars, on_overflow='raise', task_name=name)
    spec_lib.add_task(seqio.Task(name, source=source, output_features=features,
                                 preprocessors=[fit, *spec_lib.TASK_PREPROCESSORS],
                                 metric_fns=[metrics.mmlu_accuracy]))
    names.append(name)
  spec_lib.add_mixture(f'{prefix}mmlu_direct', names, default_rate=1.0)
  return names + [f'{prefix}mmlu_direct']


registrations.track(register_mmlu)
