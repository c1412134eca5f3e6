"""BIG-Bench Hard (27 tasks), 3-shot, as the Flan-T5 paper evaluates it: answer-only and chain of thought.

Data: a checkout of github.com/suzgunmirac/BIG-Bench-Hard (`bbh/<task>.json`, `cot-prompts/<task>.txt`),
found through gin `tasks.bbh.bbh_dir.path` or env `FLANX_BBH_DIR` when a dataset is first built.
Evaluation data only: never train on it.

Prompts, from the official CoT prompt file (canary line, `-----`, task description, three exemplars):
  bbh_cot_<task>:    description, the three exemplars verbatim (`Q: …\\nA: Let's think step by step. …
                     So the answer is X.`), then `Q: <input>\\nA: Let's think step by step.`
  bbh_direct_<task>: description, the same exemplars answer-only (`Q: …\\nA: X`, X taken from "So the
                     answer is X."), then `Q: <input>\\nA:`
Pieces are joined with blank lines. These are the official prompts of the published code-davinci-002
runs, except that for date_understanding, snarks and tracking_shuffled_objects_three_objects the
official answer-only runs used slightly different exemplar texts; here answer-only exemplars are
always derived from the CoT prompts, as in the Flan-T5 evaluation.
Metric: exact match, after the official answer extraction for CoT (`tasks.metrics.bbh_answer`).
Exemplars are dropped (last first) if the prompt does not fit the inputs length; if even the
zero-shot prompt does not fit, building the dataset fails with an error naming the task.
Both splits `test` and `validation` are the whole benchmark (it has one set).
Mixtures `bbh_direct` and `bbh_cot`: all 27 tasks, equal rates (report the macro average).
"""

import functools
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import gin
import seqio

from tasks import few_shot
from tasks import metrics
from tasks import registrations
from tasks import spec as spec_lib
from tasks import vocab as vocab_lib

DIR_ENV = 'FLANX_BBH_DIR'
TASKS = (
    'boolean_expressions', 'causal_judgement', 'date_understanding', 'disambiguation_qa',
    'dyck_languages', 'formal_fallacies', 'geometric_shapes', 'hyperbaton',
    'logical_deduction_five_objects', 'logical_deduction_seven_objects',
    'logical_deduction_three_objects', 'movie_recommendation', 'multistep_arithmetic_two', 'navigate',
    'object_counting', 'penguins_in_a_table', 'reasoning_about_colored_objects', 'ruin_names',
    'salient_translation_error_detection', 'snarks', 'sports_understanding', 'temporal_sequences',
    'tracking_shuffled_objects_five_objects', 'tracking_shuffled_objects_seven_objects',
    'tracking_shuffled_objects_three_objects', 'web_of_lies', 'word_sorting')
MODES = ('direct', 'cot')
SPLITS = ('test', 'validation')
SEPARATOR = '\n\n'
COT_CUE = "A: Let's think step by step."
DIRECT_CUE = 'A:'
METRIC_FNS = {'direct': metrics.bbh_direct_exact_match, 'cot': metrics.bbh_cot_exact_match}


@gin.configurable
def bbh_dir(path: Optional[str] = None) -> str:
  """The BIG-Bench-Hard checkout: argument / gin binding, else $FLANX_BBH_DIR."""
  path = path or os.environ.get(DIR_ENV)
  if not path:
    raise FileNotFoundError('BBH data not configured: set $FLANX_BBH_DIR or gin `tasks.bbh.bbh_dir.path` to '
                            'a checkout of github.com/suzgunmirac/BIG-Bench-Hard (holding bbh/ and cot-prompts/)')
  return path


def _read(path: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: missing (expected a BIG-Bench-Hard checkout with bbh/<task>.json '
                            f'and cot-prompts/<task>.txt)')
  with open(path, encoding='utf-8') as f:
    return f.read()


def cot_prompt(path: str) -> Tuple[str, Tuple[str, ...]]:
  """(task description, the exemplars verbatim) of an official CoT prompt file."""
  return _cot_prompt(path, spec_lib.file_key(path))


@functools.lru_cache(maxsize=None)
def _cot_prompt(path: str, key) -> Tuple[str, Tuple[str, ...]]:
  del key  # changes with the file: read once per version
  text = _read(path)
  if '\n-----\n' not in text:
    raise ValueError(f'{path}: no `-----` line after the canary line')
  body = text.split('\n-----\n', 1)[1].strip('\n')
  description, *exemplars = re.split(r'\n\n(?=Q: )', body)
  for i, exemplar in enumerate(exemplars):
    if not exemplar.startswith('Q: ') or '\n' + COT_CUE not in exemplar or metrics.BBH_ANSWER_CUE not in exemplar:
      raise ValueError(f'{path}: exemplar {i + 1} is not `Q: …\\n{COT_CUE} … {metrics.BBH_ANSWER_CUE}X.`')
  if not exemplars:
    raise ValueError(f'{path}: no `Q: ` exemplars after the description')
  return description, tuple(exemplars)


def answer_only(exemplar: str) -> str:
  """A CoT exemplar as `Q: …\\nA: X`, X being the answer its reasoning states."""
  question = exemplar.split('\n' + COT_CUE, 1)[0]
  return f'{question}\n{DIRECT_CUE} {metrics.bbh_answer(exemplar)}'


def examples(path: str) -> Tuple[Tuple[str, str], ...]:
  """(input, target) pairs of a task file `{"examples": [{"input", "target"}]}`."""
  return _examples(path, spec_lib.file_key(path))


@functools.lru_cache(maxsize=None)
def _examples(path: str, key) -> Tuple[Tuple[str, str], ...]:
  del key  # changes with the file: read once per version
  try:
    rows = json.loads(_read(path))['examples']
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: expected {{"examples": [{{"input", "target"}}, …]}}: {e}') from e
  out = []
  for i, row in enumerate(rows):
    if not (isinstance(row, dict) and isinstance(row.get('input'), str) and isinstance(row.get('target'), str)):
      raise ValueError(f'{path}: examples[{i}] needs string fields "input" and "target"')
    out.append((row['input'], row['target']))
  return tuple(out)


def prompt_pieces(task: str, mode: str, directory: Optional[str] = None) -> List[Dict[str, object]]:
  """Every example of a task as few-shot pieces: prefix, exemplars (each with its separator), query, targets."""
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  root = directory or bbh_dir()
  description, exemplars = cot_prompt(os.path.join(root, 'cot-prompts', f'{task}.txt'))
  if mode == 'direct':
    exemplars = tuple(answer_only(e) for e in exemplars)
  cue = COT_CUE if mode == 'cot' else DIRECT_CUE
  shots = [e + SEPARATOR for e in exemplars]
  return [{'prefix': description + SEPARATOR, 'exemplars': shots, 'query': f'Q: {question}\n{cue}',
           'targets': target}
          for question, target in examples(os.path.join(root, 'bbh', f'{task}.json'))]


def prompts(task: str, mode: str, directory: Optional[str] = None) -> List[Tuple[str, str]]:
  """(full 3-shot prompt, target) of every example, with no length limit."""
  return [(few_shot.join(p['prefix'], p['exemplars'], p['query']), p['targets'])
          for p in prompt_pieces(task, mode, directory)]


def _dataset(split: str, shuffle_files: bool = False, seed: Optional[int] = None, *, task: str, mode: str,
             directory: Optional[str], vocabulary: seqio.Vocabulary):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  registrations.check()  # a gin setting made after registration must not be ignored
  del split, shuffle_files, seed  # one fixed evaluation set, in file order
  pieces = prompt_pieces(task, mode, directory)
  pieces = few_shot.with_lengths(pieces, vocabulary)
  text = tf.TensorSpec([], tf.string)
  return tf.data.Dataset.from_generator(
      lambda: iter(pieces),
      output_signature={'prefix': text, 'exemplars': tf.TensorSpec([None], tf.string), 'query': text,
                        'targets': text, 'exemplar_lengths': tf.TensorSpec([None], tf.int32),
                        'fixed_length': tf.TensorSpec([], tf.int32)})


def task_name(task: str, mode: str, prefix: str = '') -> str:
  return f'{prefix}bbh_{mode}_{task}'


@gin.configurable
def register_bbh(directory: Optional[str] = None, tasks: Tuple[str, ...] = TASKS, modes: Tuple[str, ...] = MODES,
                 vocabulary: Optional[seqio.Vocabulary] = None, prefix: str = '') -> List[str]:
  """Registers `bbh_{mode}_{task}` and mixtures `bbh_{mode}` (no file is read); returns the names."""
  features = spec_lib.default_features(vocabulary or vocab_lib.LazyVocabulary())
  names = []
  for mode in modes:
    mode_names = []
    for task in tasks:
      name = task_name(task, mode, prefix)
      source = seqio.FunctionDataSource(
          functools.partial(_dataset, task=task, mode=mode, directory=directory,
                            vocabulary=features['inputs'].vocabulary), splits=SPLITS)
      fit = functools.partial(few_shot.fit_exemplars, on_overflow='raise', task_name=name)
      spec_lib.add_task(seqio.Task(name, source=source, output_features=features,
                                   preprocessors=[fit, *spec_lib.TASK_PREPROCESSORS],
                                   metric_fns=[METRIC_FNS[mode]]))
      mode_names.append(name)
    spec_lib.add_mixture(f'{prefix}bbh_{mode}', mode_names, default_rate=1.0)
    names += mode_names + [f'{prefix}bbh_{mode}']
  return names


registrations.track(register_bbh)
