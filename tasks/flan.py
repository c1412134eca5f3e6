"""Flan 2022 from the preprocessed collection files, and the `dolly_flan` continued-tuning mix.

Input: a downloaded Flan Collection folder (local or gs://) in any public layout (tasks/flan_layouts.py:
FLAN's own export, DataProvenanceInitiative, Open-Orca/FLAN, SirNeural/flan_v2), detected from the file
names or named by gin `tasks.flan_layouts.flan_layout.layout` / env `FLANX_FLAN_LAYOUT`. Point at it with
gin `tasks.flan.flan_data_pattern.pattern` or env `FLANX_FLAN_DATA`: the folder, or a glob that may
contain `{submix}` (flan2021, t0, niv2, cot, dialog), `{variant}` (zs_opt, ...) and `{variant_short}`
(zsopt, ...). Records are routed by their task_source / template_type (any spelling: P3, T0, Flan2021,
NIv2, CoT, zsopt, ...), or by the file name where the layout keeps them there.

Registered (cheaply; files are read when a dataset is first built):
- `flan2022_<submix>_<variant>`: one task per submixture and template variant. Its source mixes
  the collection's tasks (task_name) examples-proportionally with the submixture's per-task cap:
  each epoch holds exactly min(n, cap) examples of a task with n examples (a fresh seeded sample
  of the capped tasks every epoch), so task t has rate min(n_t, cap) / sum_u min(n_u, cap).
- `<submix>_submix`: the submixture's variants at equal rates (flan2021, t0: zs/fs x opt/noopt;
  niv2, cot, dialog: zs_opt and fs_opt).
- `flan2022_submix`: flan2021 0.4, t0 0.32, niv2 0.2, cot 0.05, dialog 0.03.
- `dolly_flan`: Dolly plus a Flan replay fraction (gin `tasks.flan.flan_replay_fraction.fraction`).

Order: each epoch reads the files in a seeded order and each file front to back; the task's
shuffle buffer (20k examples) mixes from there. Files sorted by task_name therefore mix poorly:
use shuffled or many-sharded exports (most are). Counting reads the files once per process; each
epoch of each variant task reads its files again (use {submix}/{variant} in the glob to avoid
reading other variants' files).
"""

import collections
import dataclasses
import itertools
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np
import seqio

from tasks import dolly  # pylint: disable=unused-import  (registers the `dolly` task)
from tasks import flan_layouts as layouts_lib
from tasks import records as records_lib
from tasks import registrations
from tasks import spec as spec_lib

PATTERN_ENV = 'FLANX_FLAN_DATA'
ALL_VARIANTS = layouts_lib.ALL_VARIANTS
OPT_VARIANTS = ('zs_opt', 'fs_opt')
FIELDS = layouts_lib.FIELDS
SHUFFLE_BUFFER = 20_000
normalize_variant = layouts_lib.normalize_variant


@dataclasses.dataclass(frozen=True)
class Submix:
  """A Flan 2022 submixture: template variants, per-task cap, rate in `flan2022_submix`."""
  name: str
  variants: Tuple[str, ...]
  cap: int
  rate: float


SUBMIXES = (
    Submix('flan2021', ALL_VARIANTS, 30_000, 0.4),
    Submix('t0', ALL_VARIANTS, 20_000, 0.32),
    Submix('niv2', OPT_VARIANTS, 5_000, 0.2),
    Submix('cot', OPT_VARIANTS, 100_000, 0.05),
    Submix('dialog', OPT_VARIANTS, 200_000, 0.03),
)
SUBMIX_BY_NAME = {s.name: s for s in SUBMIXES}


@gin.configurable
def flan_data_pattern(pattern: Optional[str] = None) -> str:
  """Folder or glob of the Flan files: argument / gin binding, else $FLANX_FLAN_DATA."""
  pattern = pattern or os.environ.get(PATTERN_ENV)
  if not pattern:
    raise FileNotFoundError(
        'Flan data not configured: set $FLANX_FLAN_DATA or gin `tasks.flan.flan_data_pattern.pattern` '
        'to the downloaded Flan Collection folder (or a glob; may contain {submix} and {variant}); '
        f'layouts: {layouts_lib.EXPECTED}.')
  return pattern


@gin.configurable
def flan_replay_fraction(fraction: float = 0.1) -> float:
  """Share of Flan examples in `dolly_flan` (the rest is Dolly)."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'flan replay fraction must be in [0, 1], got {fraction}')
  return fraction


_SCANS: Dict[Any, Tuple[Dict[Tuple[str, str, str], int], records_lib.ReadReport]] = {}


def iter_matches(files: Sequence[layouts_lib.FlanFile], on_error: str,
                 report: Optional[records_lib.ReadReport] = None
                 ) -> Iterator[Tuple[str, str, str, str, str]]:
  """(submix, variant, task_name, inputs, targets) of every good record; bad ones raise or are skipped
  (counted in `report` when given)."""
  for file in files:
    for where, record, problem in layouts_lib.iter_records(file):
      problem, match = (problem, None) if problem else layouts_lib.classify(record, file)
      if problem:
        records_lib.reject(where, problem, on_error, report)
      else:
        yield match


def scan_files(files: Sequence[layouts_lib.FlanFile], on_error: str = 'raise'
               ) -> Tuple[Dict[Tuple[str, str, str], int], records_lib.ReadReport]:
  """Examples per (submix, variant, task_name) in `files` (read once per process)."""
  key = (tuple((f.layout, f.submix, f.variant) + tuple(spec_lib.file_key(p) for p in f.paths) for f in files),
         on_error, records_lib.max_record_bytes())
  if key not in _SCANS:
    report = records_lib.ReadReport(f'Flan files ({len(files)}: {[f.name for f in files[:2]]}...)')
    counts = collections.Counter()
    for match in iter_matches(files, on_error, report):
      counts[match[:3]] += 1
      report.kept += 1
    report.log()
    _SCANS[key] = (dict(counts), report)
  return _SCANS[key]


class FlanFileSource(seqio.DataSource):
  """Examples of one (submixture, template variant), capped examples-proportional over tasks."""

  def __init__(self, submix: Submix, variant: str, pattern: Optional[str] = None,
               cap: Optional[int] = None, seed: int = spec_lib.DEFAULT_SEED,
               on_error: str = 'raise', layout: Optional[str] = None):
    self.submix = submix
    self.variant = variant
    self.cap = submix.cap if cap is None else cap
    self._pattern = pattern
    self._layout = layout
    self._seed = seed
    self._on_error = records_lib.check_on_error(on_error)
    self._scan: Optional[Tuple[Dict[str, int], records_lib.ReadReport]] = None
    super().__init__(splits=('train',))

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def files(self) -> List[layouts_lib.FlanFile]:
    """The files of the configured folder / pattern that may hold this submixture and variant."""
    pattern = self._pattern or flan_data_pattern()
    pattern = (pattern.replace('{submix}', self.submix.name).replace('{variant}', self.variant)
               .replace('{variant_short}', self.variant.replace('_', '')))
    files = layouts_lib.resolve(pattern, self._layout or layouts_lib.flan_layout())
    return [f for f in files if f.matches(self.submix.name, self.variant)]

  def source_files(self) -> List[str]:
    """The paths of `files()` (a resumed run checks they did not change)."""
    return [path for f in self.files() for path in f.paths]

  def _records(self, files: Sequence[layouts_lib.FlanFile]) -> Iterator[Tuple[str, str, str]]:
    """(task_name, inputs, targets) of this submixture and variant, in file order."""
    for match in iter_matches(files, self._on_error):  # skips were counted by scan()
      if match[0] == self.submix.name and match[1] == self.variant:
        yield match[2:]

  def scan(self) -> Tuple[Dict[str, int], records_lib.ReadReport]:
    """Examples per task_name and the read report (one read, shared by every source that
    reads the same files)."""
    if self._scan is None:
      files = tuple(self.files())
      counts, report = scan_files(files, self._on_error)
      mine = {task: n for (submix, variant, task), n in counts.items()
              if submix == self.submix.name and variant == self.variant}
      if not mine:
        raise ValueError(f'no {self.submix.name} {self.variant} records in {len(files)} files '
                         f'({[f.name for f in files[:3]]}...)')
      self._scan = (dict(sorted(mine.items())), report)
    return self._scan

  def cap_of(self, task: str) -> float:
    """The per-task cap; none for records without a task name (SirNeural's files)."""
    return float('inf') if task == layouts_lib.UNNAMED_TASK else self.cap

  def task_rates(self) -> Dict[str, float]:
    """Share of each task_name in this source's stream: min(n, cap) / sum min(n, cap)."""
    counts, _ = self.scan()
    capped = {t: min(n, self.cap_of(t)) for t, n in counts.items()}
    total = sum(capped.values())
    return {t: c / total for t, c in capped.items()}

  def num_input_examples(self, split: str) -> int:
    counts, _ = self.scan()
    return int(sum(min(n, self.cap_of(t)) for t, n in counts.items()))

  def epoch(self, epoch: int, shuffle: bool = True, seed: Optional[int] = None
            ) -> Iterator[Tuple[str, str, str]]:
    """(task_name, inputs, targets) of one epoch: exactly min(n, cap) examples per task."""
    counts, _ = self.scan()
    seed = self._seed if seed is None else int(seed)
    keep = {}
    for task, n in counts.items():
      if n > self.cap_of(task):
        rng = np.random.default_rng([seed, epoch, records_lib.stable_int(task)])
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, self.cap, replace=False)] = True
        keep[task] = mask
    files = self.files()
    if shuffle:
      rng = np.random.default_rng([seed, epoch, records_lib.stable_int('files')])
      files = [files[i] for i in rng.permutation(len(files))]
    seen = collections.Counter()
    for task, inputs, targets in self._records(files):
      ordinal = seen[task]
      seen[task] += 1
      if task not in counts or ordinal >= counts[task]:
        raise RuntimeError(f'Flan files changed while reading: task {task!r} now has more than '
                           f'{counts.get(task, 0)} examples')
      if task in keep and not keep[task][ordinal]:
        continue
      yield task, inputs, targets

  def get_dataset(self, split: str = 'train', shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    del sequence_length, use_cached, num_epochs
    if split != 'train':
      raise ValueError(f'Flan files have only a train split, not {split!r}')
    registrations.check()
    self.scan()
    epochs = itertools.count()

    def generate():
      # Each pass over the dataset (e.g. under repeat()) is a new epoch with a fresh sample.
      for task, inputs, targets in self.epoch(next(epochs), shuffle, seed):
        yield {'inputs': inputs, 'targets': targets, 'task_name': task}

    text = tf.TensorSpec([], tf.string)
    ds = tf.data.Dataset.from_generator(
        generate, output_signature={'inputs': text, 'targets': text, 'task_name': text})
    if shard_info is not None and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


class ResamplingTask(seqio.Task):
  """A task whose source draws a fresh sample each epoch: never cached in memory by seqio
  (seqio caches sources under 10k examples, which would replay the first epoch's sample)."""

  def get_dataset(self, *args, **kwargs):
    kwargs['try_in_mem_cache'] = False
    return super().get_dataset(*args, **kwargs)


def task_name(submix: str, variant: str) -> str:
  return f'flan2022_{submix}_{variant}'


@gin.configurable
def register_flan2022(pattern: Optional[str] = None, caps: Optional[Mapping[str, int]] = None,
                      rates: Optional[Mapping[str, float]] = None, on_error: str = 'raise',
                      vocabulary: Optional[seqio.Vocabulary] = None,
                      prefix: str = '', layout: Optional[str] = None,
                      shuffle_buffer: int = SHUFFLE_BUFFER) -> List[str]:
  """Registers the Flan 2022 tasks and mixtures (names get `prefix`); returns the names.

  shuffle_buffer: examples each variant task buffers (seqio repeats, then shuffles): the mixture reads and
  tokenizes 14 x this many before its first batch (443 s on a loaded 2-core CPU for 20k, BENCHMARKS.md).
  """
  features = spec_lib.default_features(vocabulary)
  caps = dict(caps or {})
  rates = dict(rates or {})
  names, submix_names = [], []
  for submix in SUBMIXES:
    variant_tasks = []
    for variant in submix.variants:
      source = FlanFileSource(submix, variant, pattern, caps.get(submix.name), on_error=on_error,
                              layout=layout)
      task = ResamplingTask(prefix + task_name(submix.name, variant), source=source,
                            output_features=features,
                            preprocessors=list(spec_lib.TASK_PREPROCESSORS),
                            shuffle_buffer_size=shuffle_buffer)
      spec_lib.add_task(task)
      variant_tasks.append(task.name)
    mixture = f'{prefix}{submix.name}_submix'
    spec_lib.add_mixture(mixture, variant_tasks, default_rate=1.0)
    names += variant_tasks + [mixture]
    submix_names.append((mixture, rates.get(submix.name, submix.rate)))
  spec_lib.add_mixture(f'{prefix}flan2022_submix', submix_names)
  return names + [f'{prefix}flan2022_submix']


def flattened_rates(mixture: seqio.Mixture) -> Dict[str, float]:
  """Normalized rate of every task in a (possibly nested) mixture."""
  tasks = mixture.tasks
  rates = {t.name: mixture.get_rate(t) for t in tasks}
  total = sum(rates.values())
  return {name: rate / total for name, rate in rates.items()}


def task_name_rates(mixture_name: str) -> Dict[Tuple[str, str], float]:
  """Normalized rate of every (seqio task, Flan task_name) of a Flan mixture (reads counts)."""
  out = {}
  for name, rate in flattened_rates(seqio.get_mixture_or_task(mixture_name)).items():
    source = seqio.get_mixture_or_task(name).source
    for flan_task, share in source.task_rates().items():
      out[(name, flan_task)] = rate * share
  return out


@gin.configurable
def register_dolly_flan(name: str = 'dolly_flan', dolly_task: str = 'dolly',
                        replay: str = 'flan2022_submix') -> str:
  """Registers Dolly plus Flan replay: the share `flan_replay_fraction()` (read at use) goes to
  the tasks of `replay` in their own proportions, the rest to `dolly_task`."""
  replay_provider = seqio.get_mixture_or_task(replay)

  def dolly_rate(unused_task):
    return 1.0 - flan_replay_fraction()

  entries: List[Tuple[Any, Any]] = [(dolly_task, dolly_rate)]
  if isinstance(replay_provider, seqio.Task):
    entries.append((replay, lambda unused_task: flan_replay_fraction()))
  else:
    for task in replay_provider.tasks:
      def rate(t, mix=replay_provider):
        return flan_replay_fraction() * mix.get_rate(t) / sum(
            mix.get_rate(u) for u in mix.tasks)
      entries.append((task.name, rate))
  spec_lib.add_mixture(name, entries)
  return name


registrations.track(register_flan2022)
registrations.track(register_dolly_flan)
