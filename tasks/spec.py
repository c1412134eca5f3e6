"""Declarative datasets: one `DatasetSpec` (source, fields, templates) -> registered seqio tasks.

Example (a TSV of `question \\t answer` rows, one zero-shot task named `my_qa`):

  register(DatasetSpec(
      name='my_qa', path='/data/qa.tsv', columns=('question', 'answer'),
      required=('question', 'answer'),
      variants=(Variant('', (Template('Q: {question}', '{answer}'),)),),
      validation_fraction=0.05, metric_fns=(metrics.exact_match,)))

Records are read and validated when a dataset is first built, never at registration.
"""

import dataclasses
import functools
import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import seqio

from tasks import few_shot as few_shot_lib
from tasks import records as records_lib
from tasks import registrations
from tasks import templates as templates_lib
from tasks import vocab as vocab_lib

SPLITS_WITH_VALIDATION = ('train', 'validation')
DEFAULT_SEED = 20240229
DEFAULT_FEW_SHOT_BUDGET = 1920


@dataclasses.dataclass(frozen=True)
class Variant:
  """One task per variant: its template choices (one picked per example) and shot setting."""
  name: str
  templates: Tuple[templates_lib.Template, ...]
  few_shot: bool = False


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Everything needed to turn a record file into seqio tasks `{name}` / `{name}_{variant}`.

  path: file or glob (local or gs://), or a function returning one (looked up at build time, so
    gin/env settings apply); when it returns None, `loader` supplies (description, records).
  required / optional: fields that must be non-empty strings / strings (validated at read).
  keep: only records whose field value is in the given tuple (e.g. {'category': ('open_qa',)}).
  """
  name: str
  variants: Tuple[Variant, ...]
  required: Tuple[str, ...]
  optional: Tuple[str, ...] = ()
  path: Union[str, Callable[[], Optional[str]], None] = None
  loader: Optional[Callable[[], Tuple[str, Iterable[Any]]]] = None
  fmt: str = 'auto'
  columns: Tuple[str, ...] = ()
  unescape_newlines: bool = False
  keep: Optional[Mapping[str, Tuple[str, ...]]] = None
  validation_fraction: float = 0.0
  metric_fns: Tuple[Callable[..., Dict[str, float]], ...] = ()
  vocabulary: Optional[seqio.Vocabulary] = None
  few_shot_budget: int = DEFAULT_FEW_SHOT_BUDGET
  max_exemplars: Optional[int] = None
  on_error: str = 'raise'
  seed: int = DEFAULT_SEED

  def task_name(self, variant: Variant) -> str:
    return f'{self.name}_{variant.name}' if variant.name else self.name

  @property
  def splits(self) -> Tuple[str, ...]:
    return SPLITS_WITH_VALIDATION if self.validation_fraction > 0 else ('train',)


# Records already read, shared by every task reading the same file with the same rules.
_CACHE: Dict[Any, Tuple[List[Dict[str, str]], records_lib.ReadReport]] = {}
_CACHE_LOCK = threading.Lock()


def file_key(pattern: str) -> Any:
  """A cache key that changes when a local file changes."""
  if '://' in pattern or not os.path.exists(pattern):
    return pattern
  stat = os.stat(pattern)
  return (pattern, stat.st_mtime_ns, stat.st_size)


def load_records(spec: DatasetSpec) -> Tuple[List[Dict[str, str]], records_lib.ReadReport]:
  """All valid records of a spec's source (read once, then cached), with the read report."""
  records_lib.check_on_error(spec.on_error)
  path = spec.path() if callable(spec.path) else spec.path
  if path is None and spec.loader is None:
    raise ValueError(f'{spec.name}: no data path configured and no loader')
  rules = (spec.required, spec.optional, spec.fmt, spec.columns, spec.on_error,
           spec.unescape_newlines, records_lib.max_record_bytes())
  key = (file_key(path), rules) if path else (spec.loader, rules)
  with _CACHE_LOCK:
    if key in _CACHE:
      return _CACHE[key]
  if path:
    records, report = records_lib.read_records(path, spec.required, spec.optional, spec.fmt,
                                               spec.columns, spec.on_error)
  else:
    records, report = _validate_loaded(spec)
  if spec.unescape_newlines:
    records = [{k: v.replace('\\n', '\n') for k, v in r.items()} for r in records]
  with _CACHE_LOCK:
    _CACHE[key] = (records, report)
  return records, report


def _validate_loaded(spec: DatasetSpec) -> Tuple[List[Dict[str, str]], records_lib.ReadReport]:
  description, rows = spec.loader()
  report = records_lib.ReadReport(description)
  records = []
  for i, row in enumerate(rows):
    problem = records_lib.validate(row, spec.required, spec.optional)
    if problem:
      records_lib.reject(f'{description}: record {i}', problem, spec.on_error, report)
      continue
    records.append({k: row[k] for k in spec.required + spec.optional})
    report.kept += 1
  report.log()
  return records, report


def split_records(spec: DatasetSpec, split: str) -> List[Dict[str, str]]:
  """The kept records of one split (stable hash split, after the `keep` filter)."""
  if split not in spec.splits:
    raise ValueError(f'{spec.name} has splits {spec.splits}, not {split!r}')
  records, _ = load_records(spec)
  keep = spec.keep or {}
  fields = spec.required + spec.optional
  return [r for r in records
          if all(r[f] in allowed for f, allowed in keep.items())
          and records_lib.record_split(r, fields, spec.validation_fraction) == split]


class SpecSource(seqio.DataSource):
  """seqio source rendering a spec's records with one variant's templates."""

  def __init__(self, spec: DatasetSpec, variant: Variant, vocabulary: seqio.Vocabulary):
    self._spec = spec
    self._variant = variant
    self._vocabulary = vocabulary
    super().__init__(splits=spec.splits)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def num_input_examples(self, split: str) -> int:
    return len(split_records(self._spec, split))  # follows the configured path; records cached

  def source_files(self) -> List[str]:
    """The files the records come from (a resumed run checks they did not change); [] for a loader."""
    path = self._spec.path() if callable(self._spec.path) else self._spec.path
    return records_lib.expand(path) if path else []

  def _template_index(self, record: Mapping[str, str]) -> int:
    # Independent of the variant, so zero- and few-shot tasks phrase an example alike.
    key = records_lib.stable_int(self._spec.seed, *(record[f] for f in self._spec.required))
    return key % len(self._variant.templates)

  def prompt(self, record: Mapping[str, Any]) -> Tuple[str, Optional[str]]:
    """(inputs, targets or None) of one record of this task's format given at inference time (flanx.infer):
    the template the task picks for it over its fields, with absent optional fields empty (and absent fields
    counted as empty when picking among several templates, so a complete record gets exactly its training
    prompt); the targets when the record has the fields they need. ValueError names a field the inputs
    need that the record lacks, a field that is not a string, or a few-shot variant (its exemplars come
    from the training data, not from the record)."""
    if self._variant.few_shot:
      raise ValueError(f'task {self._spec.task_name(self._variant)} is few-shot (its exemplars are drawn from '
                       'its training data): use a zero-shot variant')
    fields = self._spec.required + self._spec.optional
    for name in fields:
      if name in record and not isinstance(record[name], str):
        raise ValueError(f'field {name!r} is {type(record[name]).__name__}, not a string')
    values = {**{f: '' for f in self._spec.optional}, **{f: record[f] for f in fields if f in record}}
    template = self._variant.templates[self._template_index({f: values.get(f, '') for f in fields})]
    try:
      inputs = template.render_inputs(values)
    except KeyError as e:
      raise ValueError(f'missing field {e.args[0]!r} (task {self._spec.task_name(self._variant)} builds its '
                       f'inputs from the fields {", ".join(fields)})') from None
    if not inputs.strip():
      raise ValueError(f'the inputs task {self._spec.task_name(self._variant)} builds from this record are empty')
    try:
      targets = template.render_targets(values)
    except KeyError:
      targets = None
    return inputs, targets

  def render(self, split: str) -> Iterable[Tuple[str, str]]:
    """(inputs, targets) of every example of a split, in record order, deterministically."""
    records = split_records(self._spec, split)
    templates = self._variant.templates
    choice = [self._template_index(r) for r in records]
    if not self._variant.few_shot:
      return [templates[c].render(r) for c, r in zip(choice, records)]
    return _FewShot(self._spec, self._variant, self._vocabulary, split, records, choice)

  def get_dataset(self, split: str = 'train', shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    del sequence_length, use_cached, num_epochs
    registrations.check()
    examples = self.render(split)
    if not len(examples):  # pylint: disable=g-explicit-length-test
      raise records_lib.RecordError(f'{self._spec.name}: split {split!r} has no records '
                                    f'(keep={self._spec.keep}, {load_records(self._spec)[1].source})')
    order = np.arange(len(examples))
    if shuffle:
      order = np.random.default_rng([self._spec.seed, 0 if seed is None else int(seed)]
                                    ).permutation(len(examples))
    if shard_info is not None and shard_info.num_shards > 1:
      order = order[shard_info.index::shard_info.num_shards]
    if isinstance(examples, _FewShot):  # pieces; `few_shot.fit_exemplars` joins them to the run's length
      text = tf.TensorSpec([], tf.string)
      return tf.data.Dataset.from_generator(
          lambda: (examples.pieces(int(i)) for i in order),
          output_signature={'prefix': text, 'exemplars': tf.TensorSpec([None], tf.string), 'query': text,
                            'targets': text, 'exemplar_lengths': tf.TensorSpec([None], tf.int32),
                            'fixed_length': tf.TensorSpec([], tf.int32)})
    if isinstance(examples, list):
      return tf.data.Dataset.from_tensor_slices({
          'inputs': tf.constant([examples[i][0] for i in order], tf.string, shape=[len(order)]),
          'targets': tf.constant([examples[i][1] for i in order], tf.string, shape=[len(order)]),
      })

    def generate():
      for i in order:
        inputs, targets = examples[i]
        yield {'inputs': inputs, 'targets': targets}

    spec = tf.TensorSpec([], tf.string)
    return tf.data.Dataset.from_generator(
        generate, output_signature={'inputs': spec, 'targets': spec})


def prompt_source(name: str) -> SpecSource:
  """The source of a registered task whose records have a template (`SpecSource.prompt`); ValueError saying
  why otherwise (not registered, a mixture, a task whose records are already prompts)."""
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    raise ValueError(f'task {name!r} is not registered (import its module: MIXTURE_OR_TASK_MODULE)')
  task = seqio.get_mixture_or_task(name)
  if isinstance(task, seqio.Mixture):
    names = ', '.join(t.name for t in task.tasks[:3]) + (', …' if len(task.tasks) > 3 else '')
    raise ValueError(f'{name!r} is a mixture: name one of its tasks ({names})')
  if not isinstance(task.source, SpecSource):
    raise ValueError(f'task {name!r} has no template to apply (its records are the prompts themselves)')
  return task.source


class _FewShot:
  """Few-shot examples built on demand: exemplars from the train split, never the example itself,
  drawn with a seeded RNG and added while the prompt stays within the token budget."""

  def __init__(self, spec, variant, vocabulary, split, records, choice):
    self._spec, self._variant, self._vocab = spec, variant, vocabulary
    self._split, self._records, self._choice = split, records, choice
    self._pool = records if split == 'train' else split_records(spec, 'train')
    self._lengths: Dict[int, np.ndarray] = {}
    self._texts: Dict[int, List[str]] = {}
    self._sep_len = len(vocabulary.encode(templates_lib.EXEMPLAR_SEPARATOR))
    self._exact = vocab_lib.newline_mode_of(vocabulary) in ('lossless', 'byte')

  def __len__(self) -> int:
    return len(self._records)

  def _exemplars(self, t: int) -> Tuple[List[str], np.ndarray]:
    if t not in self._texts:
      template = self._variant.templates[t]
      texts = [templates_lib.exemplar_text(*template.render(r)) for r in self._pool]
      self._texts[t] = texts
      self._lengths[t] = np.array([len(self._vocab.encode(x)) for x in texts])
    return self._texts[t], self._lengths[t]

  def __getitem__(self, i: int) -> Tuple[str, str]:
    prompt, targets, _ = self._draw(i)
    return prompt, targets

  def pieces(self, i: int) -> Dict[str, Any]:
    """Example i for `few_shot.fit_exemplars`: the drawn exemplars (each ending with the separator),
    the query and the targets; the run's input length may drop exemplars later, never the query."""
    _, targets, (texts, inputs, lengths, query_length) = self._draw(i, trim=False)
    sep = templates_lib.EXEMPLAR_SEPARATOR
    return {'prefix': '', 'exemplars': [x + sep for x in texts], 'query': inputs, 'targets': targets,
            'exemplar_lengths': lengths, 'fixed_length': query_length}  # token counts known here: saves work

  def _draw(self, i: int, trim: bool = True) -> Tuple[str, str, Tuple[List[str], str, List[int], int]]:
    t = int(self._choice[i])
    inputs, targets = self._variant.templates[t].render(self._records[i])
    texts, lengths = self._exemplars(t)
    budget = self._spec.few_shot_budget
    total = query_length = len(self._vocab.encode(inputs))
    rng = np.random.default_rng([self._spec.seed, records_lib.stable_int(self._split), i])
    chosen, tried = [], set()
    self_index = i if self._split == 'train' else -1
    limit = min(len(texts) - (self_index >= 0), self._spec.max_exemplars or len(texts))
    while len(chosen) < limit:
      j = int(rng.integers(len(texts)))
      if j == self_index or j in tried:
        continue
      tried.add(j)
      if total + lengths[j] + self._sep_len > budget:
        break
      chosen.append(j)
      total += lengths[j] + self._sep_len
    prompt = self._join(texts, chosen, inputs)
    # SentencePiece without lossless newlines is not exactly additive: trim until it fits.
    while trim and not self._exact and chosen and len(self._vocab.encode(prompt)) > budget:
      chosen.pop()
      prompt = self._join(texts, chosen, inputs)
    return prompt, targets, ([texts[j] for j in chosen], inputs,
                             [int(lengths[j]) + self._sep_len for j in chosen], query_length)

  @staticmethod
  def _join(texts: List[str], chosen: List[int], inputs: str) -> str:
    return templates_lib.EXEMPLAR_SEPARATOR.join([texts[j] for j in chosen] + [inputs])


def default_features(vocabulary: Optional[seqio.Vocabulary] = None
                     ) -> Dict[str, seqio.Feature]:
  """`inputs` and `targets` with one vocabulary and EOS (seqio's encoder-decoder layout)."""
  vocabulary = vocabulary or vocab_lib.LazyVocabulary()
  return {'inputs': seqio.Feature(vocabulary, add_eos=True),
          'targets': seqio.Feature(vocabulary, add_eos=True)}


def add_task(task: seqio.Task) -> seqio.Task:
  """Registers a task, replacing an earlier one of the same name."""
  if task.name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(task.name)
  seqio.TaskRegistry.add_provider(task.name, task)
  return task


def add_mixture(name: str, tasks: Sequence[Any], default_rate: Any = None) -> seqio.Mixture:
  """Registers a mixture, replacing an earlier one of the same name."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks, default_rate=default_rate)


TASK_PREPROCESSORS = (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim)


def register(spec: DatasetSpec) -> List[str]:
  """Registers one seqio task per variant of `spec`; returns the task names."""
  records_lib.check_on_error(spec.on_error)
  features = default_features(spec.vocabulary)
  vocabulary = features['targets'].vocabulary
  names = []
  for variant in spec.variants:
    name = spec.task_name(variant)
    preprocessors = list(TASK_PREPROCESSORS)
    if not variant.few_shot:  # reading, templating and tokenizing are deterministic: seqio may cache them
      preprocessors.insert(1, seqio.CacheDatasetPlaceholder())
    if variant.few_shot:  # exemplars fit min(few_shot_budget, the run's inputs length - EOS)
      preprocessors.insert(0, functools.partial(few_shot_lib.fit_exemplars, max_tokens=spec.few_shot_budget,
                                                on_overflow='keep', task_name=name))
    add_task(seqio.Task(name, source=SpecSource(spec, variant, vocabulary),
                        output_features=features, preprocessors=preprocessors,
                        metric_fns=list(spec.metric_fns)))
    names.append(name)
  return names
