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
  of the capped tasks every epoch, the same whether read from seqio's cache or not), so task t has
  rate min(n_t, cap) / sum_u min(n_u, cap).
- `<submix>_submix`: the submixture's variants at equal rates (flan2021, t0: zs/fs x opt/noopt;
  niv2, cot, dialog: zs_opt and fs_opt).
- `flan2022_submix`: flan2021 0.4, t0 0.32, niv2 0.2, cot 0.05, dialog 0.03.
- `dolly_flan`: Dolly plus a Flan replay fraction (gin `tasks.flan.flan_replay_fraction.fraction`).

Hosts: a source shards itself (seqio's ShardInfo): whole files when there are at least as many files as shards,
else a share of every file (records.Share: whole Parquet row groups where there are enough, else every N-th
record, picked before it is parsed), so no host parses another host's records when reading. Counting (the scan
behind task sizes and ordinals) still reads every file once per process on every host: task sizes are global.

Order: each epoch reads the files in a new seeded order, FILES_IN_FLIGHT at a time (record by record), each
front to back; the task's shuffle buffer (SHUFFLE_BUFFER: 3k examples) mixes from there. Caps apply after that
(and after seqio's cache: the tasks are cacheable, see `cap_per_epoch`). Counting reads the files once per
process; each epoch of each variant task reads its files again (use {submix}/{variant} in the glob to avoid
reading other variants' files).
"""

import array
import collections
import dataclasses
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np
import seqio

from tasks import cached_reads
from tasks import dolly  # pylint: disable=unused-import  (registers the `dolly` task)
from tasks import flan_layouts as layouts_lib
from tasks import records as records_lib
from tasks import registrations
from tasks import spec as spec_lib

PATTERN_ENV = 'FLANX_FLAN_DATA'
ALL_VARIANTS = layouts_lib.ALL_VARIANTS
OPT_VARIANTS = ('zs_opt', 'fs_opt')
FIELDS = layouts_lib.FIELDS
# Examples each variant task's shuffle buffer holds (seqio's default is 1,000). On files whose tasks are interleaved
# (as an export sampling the mixture writes them) 1,000 already mixes as well as a perfect shuffle; 3,000 keeps a
# folder whose files are sorted by task mixed to 0.83 of a perfect shuffle (1,000: 0.60, 20,000: 0.98), while the
# 14 buffers fill and hold 6.7x less than the earlier 20,000 (benchmarks/shuffle_quality.py; BENCHMARKS.md).
SHUFFLE_BUFFER = 3_000
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


@dataclasses.dataclass
class Scan:
  """One read of a file list: examples per (submix, variant, task_name) in each file, the read report, and every
  record's key (4 bytes a record), from which a reader of a file's share finds its records' task ordinals."""
  per_file: List[Dict[Tuple[str, str, str], int]]
  report: records_lib.ReadReport
  keys: Dict[Tuple[str, str, str], int]  # (submix, variant, task_name) -> its number in record_keys
  record_keys: List[np.ndarray]  # per file, each record's key number (-1: a bad record)


_SCANS: Dict[Any, Scan] = {}
FILES_IN_FLIGHT = 4  # files a source reads at once (interleaved): mixes neighbouring files' tasks early


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


def scan_records(files: Sequence[layouts_lib.FlanFile], on_error: str = 'raise') -> Scan:
  """Reads `files` once per process: examples per (submix, variant, task_name) per file, and each record's key."""
  key = (tuple((f.layout, f.submix, f.variant) + tuple(spec_lib.file_key(p) for p in f.paths) for f in files),
         on_error, records_lib.max_record_bytes())
  if key not in _SCANS:
    report = records_lib.ReadReport(f'Flan files ({len(files)}: {[f.name for f in files[:2]]}...)')
    per_file, keys, record_keys = [], {}, []
    for file in files:
      counts, numbers = collections.Counter(), array.array('i')
      for number, where, record, problem in layouts_lib.iter_numbered_records(file):
        assert number == len(numbers), (file.name, number)  # unshared reads number every record
        problem, match = (problem, None) if problem else layouts_lib.classify(record, file)
        if problem:
          records_lib.reject(where, problem, on_error, report)
          numbers.append(-1)
          continue
        numbers.append(keys.setdefault(match[:3], len(keys)))
        counts[match[:3]] += 1
        report.kept += 1
      per_file.append(dict(counts))
      record_keys.append(np.frombuffer(numbers, dtype=np.int32) if numbers else np.zeros(0, np.int32))
    report.log()
    _SCANS[key] = Scan(per_file, report, keys, record_keys)
  return _SCANS[key]


def scan_files_per_file(files: Sequence[layouts_lib.FlanFile], on_error: str = 'raise'
                        ) -> Tuple[List[Dict[Tuple[str, str, str], int]], records_lib.ReadReport]:
  """Examples per (submix, variant, task_name) in each of `files` (read once per process)."""
  scan = scan_records(files, on_error)
  return scan.per_file, scan.report


def ranks_in_file(record_keys: np.ndarray) -> np.ndarray:
  """Each record's position among the earlier records of its file with the same key."""
  order = np.argsort(record_keys, kind='stable')
  ordered = record_keys[order]
  first = np.ones(len(ordered), bool)
  first[1:] = ordered[1:] != ordered[:-1]
  group_start = np.flatnonzero(first)[np.cumsum(first) - 1]
  ranks = np.empty(len(ordered), np.int64)
  ranks[order] = np.arange(len(ordered)) - group_start
  return ranks


def scan_files(files: Sequence[layouts_lib.FlanFile], on_error: str = 'raise'
               ) -> Tuple[Dict[Tuple[str, str, str], int], records_lib.ReadReport]:
  """Examples per (submix, variant, task_name) in `files` (read once per process)."""
  per_file, report = scan_files_per_file(files, on_error)
  total = collections.Counter()
  for counts in per_file:
    total.update(counts)
  return dict(total), report


class FlanFileSource(seqio.DataSource):
  """Examples of one (submixture, template variant), each once, with their place in their Flan task.

  Every example carries `task_name`, `task_size` (the task's examples in this variant) and `task_ordinal` (its
  index among them, in file order): what `cap_per_epoch` needs to keep exactly min(n, cap) of each task per
  epoch, so the capping runs after seqio's cache. One shard per file: seqio's cache script reads the files in
  parallel. Hosts get disjoint whole files when there are at least as many files as hosts, else each a share of
  every file (records.Share, picked before parsing); either way no host parses another host's records.
  """

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
    self._files: Optional[List[layouts_lib.FlanFile]] = None
    self._offsets: Optional[List[Dict[str, int]]] = None
    self._records_scan: Optional[Scan] = None
    super().__init__(splits=('train',))

  @property
  def supports_arbitrary_sharding(self) -> bool:
    # True: seqio passes every ShardInfo here (with fewer files than shards it would otherwise read everything
    # on every host and drop the rest); get_dataset splits inside files then.
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [f.name for f in self.files()]

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

  def _shared_records(self, file: layouts_lib.FlanFile, share: records_lib.Share
                      ) -> Iterator[Tuple[int, str, str, str]]:
    """(number, task_name, inputs, targets) of this submixture and variant in `share` of `file`."""
    for number, where, record, problem in layouts_lib.iter_numbered_records(file, share):
      problem, match = (problem, None) if problem else layouts_lib.classify(record, file)
      if problem:
        records_lib.reject(where, problem, self._on_error, None)  # counted by scan()
      elif match[0] == self.submix.name and match[1] == self.variant:
        yield (number,) + match[2:]

  def scan(self) -> Tuple[Dict[str, int], records_lib.ReadReport]:
    """Examples per task_name and the read report (one read, shared by every source that
    reads the same files)."""
    if self._scan is None:
      files = self.files()
      scan = scan_records(tuple(files), self._on_error)
      per_file, report = scan.per_file, scan.report
      mine = [{task: n for (submix, variant, task), n in counts.items()
               if submix == self.submix.name and variant == self.variant} for counts in per_file]
      totals = collections.Counter()
      offsets = []
      for counts in mine:  # where each file's examples of a task start among the task's examples
        offsets.append({task: totals[task] for task in counts})
        totals.update(counts)
      if not totals:
        raise ValueError(f'no {self.submix.name} {self.variant} records in {len(files)} files '
                         f'({[f.name for f in files[:3]]}...)')
      self._files, self._offsets, self._records_scan = files, offsets, scan
      self._scan = (dict(sorted(totals.items())), report)
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
    """Examples per epoch once capped (the source itself yields every example once)."""
    counts, _ = self.scan()
    return int(sum(min(n, self.cap_of(t)) for t, n in counts.items()))

  def read_file(self, index: int, share: Optional[records_lib.Share] = None) -> Iterator[Dict[str, Any]]:
    """The examples of this submixture and variant in file `index` (of `files()`), or in `share` of it, with their
    task position."""
    if share is not None:
      yield from self._read_share(index, share)
      return
    counts, _ = self.scan()
    offsets, seen = self._offsets[index], collections.Counter()
    for task, inputs, targets in self._records([self._files[index]]):
      ordinal = offsets.get(task, 0) + seen[task]
      seen[task] += 1
      if task not in offsets or ordinal >= counts[task]:
        raise RuntimeError(f'Flan files changed while reading: {self._files[index].name} now has more {task!r} '
                           'examples than when it was counted')
      yield {'inputs': inputs, 'targets': targets, 'task_name': task, 'task_size': counts[task],
             'task_ordinal': ordinal}

  def _read_share(self, index: int, share: records_lib.Share) -> Iterator[Dict[str, Any]]:
    """`read_file` of a share: the task ordinals come from the scan's record keys (the records before each one
    in the file are not read here)."""
    counts, _ = self.scan()
    scan, file = self._records_scan, self._files[index]
    keys = scan.record_keys[index]
    ranks = ranks_in_file(keys)
    for number, task, inputs, targets in self._shared_records(file, share):
      key = scan.keys.get((self.submix.name, self.variant, task))
      if key is None or number >= len(keys) or keys[number] != key:
        raise RuntimeError(f'Flan files changed while reading: record {number} of {file.name} is not the '
                           f'{task!r} example it was when counted')
      yield {'inputs': inputs, 'targets': targets, 'task_name': task, 'task_size': counts[task],
             'task_ordinal': self._offsets[index][task] + int(ranks[number])}

  def get_dataset(self, split: str = 'train', shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1):
    """This shard's files (all without `shard_info`), each read front to back, FILES_IN_FLIGHT at a time; with
    `shuffle`, in a seeded order that changes every pass (tf.data's own shuffle: no Python state, so a rebuilt
    pipeline repeats it exactly). With fewer files than shards, shard k reads share (k + i) mod N of file i (the
    rotation spreads the files' remainders over the shards)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    del sequence_length, use_cached, num_epochs
    if split != 'train':
      raise ValueError(f'Flan files have only a train split, not {split!r}')
    registrations.check()
    self.scan()
    indices = np.arange(len(self._files), dtype=np.int64)
    shard, num_shards = (shard_info.index, shard_info.num_shards) if shard_info is not None else (0, 1)
    within_files = num_shards > len(indices)
    if num_shards > 1 and not within_files:
      indices = indices[shard::num_shards]

    def read(i):
      i = int(i)
      return self.read_file(i, records_lib.Share((shard + i) % num_shards, num_shards) if within_files else None)

    text, number = tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)
    signature = {'inputs': text, 'targets': text, 'task_name': text, 'task_size': number, 'task_ordinal': number}
    files = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle:
      seed = self._seed if seed is None else int(seed)
      files = files.shuffle(len(indices), seed=records_lib.stable_int(seed, 'files') % 2**31,
                            reshuffle_each_iteration=True)
    return files.interleave(
        lambda i: tf.data.Dataset.from_generator(read, args=(i,),
                                                 output_signature=signature),
        cycle_length=max(1, min(FILES_IN_FLIGHT, len(indices))), block_length=1)


def _mix32(v):
  """A 32-bit integer hash (murmur3-style finalizer) in int64 arithmetic that never overflows."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for shift in (16, 16):
    v = tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, shift)) * 0x45D9F3B, 0xFFFFFFFF)
  return tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, 16))


def _permute(x, n, key):
  """A pseudo-random bijection of [0, n), applied elementwise to int64 vectors `x`, `n`, `key` (one bijection per
  (n, key)): a 4-round Feistel network on the smallest even-bit power of two >= n, cycle-walked back into [0, n).
  Vectorized, so one call marks a whole batch of examples (a per-example tf.while_loop cost ~1 ms each)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  one = tf.constant(1, tf.int64)
  half = tf.while_loop(lambda h: tf.reduce_any(tf.bitwise.left_shift(one, 2 * h) < n),
                       lambda h: [tf.where(tf.bitwise.left_shift(one, 2 * h) < n, h + 1, h)], [tf.ones_like(n)])[0]
  mask = tf.bitwise.left_shift(one, half) - 1
  keys = [_mix32(tf.bitwise.bitwise_and(key + 0x3C6EF372 * r, 0x7FFFFFFF)) for r in range(4)]

  def feistel(v):
    left, right = tf.bitwise.right_shift(v, half), tf.bitwise.bitwise_and(v, mask)
    for k in keys:
      left, right = right, tf.bitwise.bitwise_xor(left, tf.bitwise.bitwise_and(_mix32(right + k), mask))
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

  return tf.while_loop(lambda v: tf.reduce_any(v >= n), lambda v: [tf.where(v >= n, feistel(v), v)],
                       [feistel(x)])[0]


CAP_BATCH = 1024  # examples marked per vectorized call of cap_per_epoch's rule (order and result do not depend on it)


def cap_per_epoch(dataset, cap: int, seed: int, num_epochs: Optional[int]):
  """`num_epochs` passes (None: forever) over `dataset` (one pass of a FlanFileSource's examples), keeping in
  each exactly min(n, cap) of every task's n examples: those whose pseudo-random rank (a permutation of the
  task's ordinals, fresh per epoch and task, seeded) is below the cap. Stateless, so exact on any host and after a
  rebuild; tasks without a name (SirNeural) are never capped. The rule runs on CAP_BATCH examples at a time
  (batched and unbatched again in order: the examples and their order are those of a per-example filter)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def one_epoch(epoch):
    def mark(batch):
      size, ordinal = tf.cast(batch['task_size'], tf.int64), tf.cast(batch['task_ordinal'], tf.int64)
      key = _mix32(tf.bitwise.bitwise_and(tf.strings.to_hash_bucket_fast(batch['task_name'], 2**31 - 1)
                                          + _mix32(tf.constant(seed % 2**31, tf.int64) + epoch), 0x7FFFFFFF))
      keep = tf.logical_or(tf.logical_or(size <= cap, tf.equal(batch['task_name'], layouts_lib.UNNAMED_TASK)),
                           _permute(ordinal, size, key) < cap)
      return batch, keep

    def dense(example, keep):  # unbatching leaves variable-length features typed as ragged: plain tensors again
      del keep
      return {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in example.items()}

    marked = dataset.ragged_batch(CAP_BATCH).map(mark).unbatch()
    return marked.filter(lambda example, keep: keep).map(dense)

  epochs = tf.data.Dataset.range(num_epochs) if num_epochs else tf.data.Dataset.range(2**62)
  return epochs.flat_map(one_epoch)


class CappedTask(seqio.Task):
  """A Flan variant task: seqio's pipeline over one pass of the files (cacheable up to the tokenized examples),
  then `cap_per_epoch`, so every epoch holds exactly min(n, cap) examples of each task_name, freshly sampled."""

  def __init__(self, *args, cap: int, seed: int, **kwargs):
    super().__init__(*args, **kwargs)
    self.cap, self.cap_seed = cap, seed

  def get_dataset(self, sequence_length=None, split='train', use_cached=False, shuffle=True,
                  shuffle_buffer_size=None, seed=None, shard_info=None, num_epochs=1, **kwargs):
    kwargs['try_in_mem_cache'] = False  # a pass is re-read each epoch (the file order changes)
    one_pass = super().get_dataset(sequence_length, split, use_cached=use_cached, shuffle=shuffle,
                                   shuffle_buffer_size=shuffle_buffer_size, seed=seed, shard_info=shard_info,
                                   num_epochs=1, **kwargs)
    seed = self.cap_seed if seed is None else int(seed)
    return cap_per_epoch(one_pass, self.cap, seed, num_epochs)

  def _get_cached_source(self, split: str, file_shuffle_buffer_size: Optional[int] = None):
    return cached_reads.cached_source(self, split, file_shuffle_buffer_size)


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
  tokenizes 14 x this many before its first batch, holds them, and saves them in every checkpoint's data position
  (fill time, memory and that file scale with it; BENCHMARKS.md "Flan at pod scale" measures 3k, 5k and 20k).
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
      task = CappedTask(prefix + task_name(submix.name, variant), source=source, output_features=features,
                        preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                                       seqio.preprocessors.append_eos_after_trim],
                        shuffle_buffer_size=shuffle_buffer, cap=source.cap, seed=spec_lib.DEFAULT_SEED)
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
