"""Each host reads only its share of uncached Flan files (issue 23 item 3).

With fewer files than shards, seqio would read every record on every host and keep every N-th. The Flan sources
shard themselves instead: whole files when there are enough, else whole Parquet row groups, else every N-th
record chosen before it is parsed. Checked here for 2 and 4 shards on every public layout: each shard parses
about 1/N of the records (counted where records become Python values, and at pyarrow for decoded rows), and the
shards' examples, task sizes and ordinals included, are disjoint and together exactly the unsharded examples.
"""

import collections
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from benchmarks import flan_mirror
from tasks import flan
from tasks import records as records_lib

SUBMIX = flan.SUBMIX_BY_NAME['flan2021']
FIELDS = ('inputs', 'targets', 'task_source', 'task_name', 'template_type')


def flan_rows(n, variant='zs_opt'):
  """n records of 7 tasks of unequal sizes, interleaved as an export writes them."""
  return [{'inputs': f'question {i}', 'targets': f'answer {i}', 'task_source': 'Flan2021',
           'task_name': f'task{(i * i) % 7}', 'template_type': variant} for i in range(n)]


def write_dpi(root, n=400, row_group_size=50):
  """DataProvenanceInitiative layout, one file of 8 row groups (a reader per row group up to 8 shards)."""
  folder = root / 'flan2021_submix_original' / 'data'
  folder.mkdir(parents=True)
  table = pa.Table.from_pylist(flan_rows(n), schema=pa.schema([(c, pa.string()) for c in FIELDS]))
  pq.write_table(table, str(folder / 'train-00000-of-00001-0123456789abcdef.parquet'), row_group_size=row_group_size)
  return str(root)


def write_openorca(root):
  """A realistic Open-Orca folder (benchmarks/flan_mirror: 1,450 long-tailed task names): one part per variant,
  one row group each, so shards split rows inside the row group."""
  flan_mirror.write(root, rows=3000, parts=1)
  return str(root / 'flan_zsopt_data')


def write_flan_jsonl(root, n=401):
  """FLAN's own JSONL export in one file, with a blank line and a malformed record (skipped, still numbered)."""
  lines = [json.dumps({'_' + k if k != 'inputs' and k != 'targets' else k: v for k, v in r.items()})
           for r in flan_rows(n)]
  lines[100] = '{"inputs": "broken'
  lines.insert(50, '')
  path = root / 'flan2022_export.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def write_sirneural(root, n=300):
  """SirNeural/flan_v2: one gzip stream split into byte chunks (one logical file)."""
  rows = [{'inputs': f'question {i}', 'targets': f'answer {i}', 'task': 'flan'} for i in range(n)]
  data = gzip.compress(''.join(json.dumps(r) + '\n' for r in rows).encode())
  cut = len(data) // 2
  (root / 'flan_zs_opt_train_part1.jsonl.gz').write_bytes(data[:cut])
  (root / 'flan_zs_opt_train_part2.jsonl.gz').write_bytes(data[cut:])
  return str(root)


WRITERS = {'dpi': (write_dpi, 'parquet'), 'openorca': (write_openorca, 'parquet'),
           'flan': (write_flan_jsonl, 'jsonl'), 'sirneural': (write_sirneural, 'jsonl')}


@pytest.fixture
def decoded_rows(monkeypatch):
  """Rows pyarrow decodes from Parquet files (ParquetFile.iter_batches wrapped, not replaced)."""
  counter = collections.Counter()
  original = pq.ParquetFile.iter_batches

  def iter_batches(self, *args, **kwargs):
    for batch in original(self, *args, **kwargs):
      counter['rows'] += batch.num_rows
      yield batch

  monkeypatch.setattr(pq.ParquetFile, 'iter_batches', iter_batches)
  return counter


def examples(source, shard_info=None):
  ds = source.get_dataset('train', shuffle=False, shard_info=shard_info)
  return [tuple(ex[k].decode() if isinstance(ex[k], bytes) else int(ex[k]) for k in sorted(ex))
          for ex in ds.as_numpy_iterator()]


@pytest.mark.parametrize('layout', sorted(WRITERS))
def test_each_shard_parses_only_its_share(layout, tmp_path, decoded_rows):
  write, fmt = WRITERS[layout]
  source = flan.FlanFileSource(SUBMIX, 'zs_opt', write(tmp_path), cap=10**9, on_error='skip')
  assert len(source.files()) == 1  # fewer files than shards: the split is inside the file
  source.scan()  # counting reads everything once per process; what follows is the read itself
  before = records_lib.PARSED[fmt]
  whole = examples(source)
  total = records_lib.PARSED[fmt] - before
  assert len(whole) == source.num_input_examples('train') > 200
  for num_shards in (2, 4):
    shards = []
    for index in range(num_shards):
      before, rows_before = records_lib.PARSED[fmt], decoded_rows['rows']
      shards.append(examples(source, seqio.ShardInfo(index, num_shards)))
      parsed = records_lib.PARSED[fmt] - before
      assert abs(parsed - total / num_shards) <= 1, (num_shards, index, parsed, total)
      if layout == 'dpi':  # 8 row groups: a shard decodes only its own groups
        assert decoded_rows['rows'] - rows_before == total // num_shards
    union = [ex for shard in shards for ex in shard]
    assert sorted(union) == sorted(whole)  # complete, each example once (task sizes and ordinals included)
    assert len(set(union)) == len(union)


def test_enough_files_are_shared_whole(tmp_path):
  """With at least as many files as shards a shard reads whole files, as before (seqio's cache script's case)."""
  for k in range(4):
    (tmp_path / f'flan2022_export-{k}.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in flan_rows(40)[k::4]))
  source = flan.FlanFileSource(SUBMIX, 'zs_opt', str(tmp_path), cap=10**9)
  whole = examples(source)
  shards = [examples(source, seqio.ShardInfo(i, 2)) for i in range(2)]
  by_file = [examples_of_files(source, [0, 2]), examples_of_files(source, [1, 3])]
  assert [sorted(s) for s in shards] == [sorted(f) for f in by_file]
  assert sorted(shards[0] + shards[1]) == sorted(whole)


def examples_of_files(source, indices):
  return [tuple(ex[k] for k in sorted(ex)) for i in indices for ex in source.read_file(i)]


def test_registered_task_shards_at_the_source(tmp_path):
  """Through seqio's Task: the ShardInfo reaches the source (it shards itself), so a host of 4 parses a quarter."""
  root = tmp_path / 'orca'
  write_openorca(root)
  prefix = 'shards_'
  flan.register_flan2022(pattern=str(root), vocabulary=seqio.ByteVocabulary(), prefix=prefix)
  task = seqio.get_mixture_or_task(prefix + 'flan2022_flan2021_zs_opt')
  task.source.scan()
  texts = {}
  parsed = []
  for index in range(4):
    before = records_lib.PARSED['parquet']
    ds = task.get_dataset(None, 'train', shuffle=False, shard_info=seqio.ShardInfo(index, 4))
    texts[index] = [ex['inputs_pretokenized'] for ex in ds.as_numpy_iterator()]
    parsed.append(records_lib.PARSED['parquet'] - before)
  total = sum(parsed)
  assert all(abs(p - total / 4) <= 1 for p in parsed), parsed
  every = [t for shard in texts.values() for t in shard]
  ds = task.get_dataset(None, 'train', shuffle=False)
  assert sorted(every) == sorted(ex['inputs_pretokenized'] for ex in ds.as_numpy_iterator())


@pytest.mark.parametrize('row_group_size,expected_reads', [(10, 'groups'), (1000, 'rows')])
def test_parquet_share_by_row_group_or_row(tmp_path, row_group_size, expected_reads, decoded_rows):
  """records.Share on a Parquet file: whole row groups when there are at least as many as shares, else rows
  taken out of each batch before they become Python values; numbered as the whole file numbers them."""
  path = str(tmp_path / 'part.parquet')
  rows = [{'inputs': f'q{i}', 'targets': f'a{i}'} for i in range(95)]
  pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
  whole = list(records_lib.iter_file_numbered(path))
  assert [n for n, *_ in whole] == list(range(95))
  got = []
  for index in range(3):
    before = decoded_rows['rows']
    share = list(records_lib.iter_file_numbered(path, share=records_lib.Share(index, 3)))
    decoded = decoded_rows['rows'] - before
    assert decoded < 95 if expected_reads == 'groups' else decoded == 95
    got += share
  assert sorted(got) == whole


def test_share_must_exist():
  with pytest.raises(ValueError, match='share 2 of 2 does not exist'):
    records_lib.Share(2, 2)
