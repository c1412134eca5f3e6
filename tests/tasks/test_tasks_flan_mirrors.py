"""The public Flan Collection downloads load fully by pointing at the folder (issue 11, section 1).

Each fixture is written in the exact schema and naming of one mirror (column names, underscores, gz,
parquet part names, the extra files a `huggingface-cli download` leaves), with the source spellings FLAN's
exporter writes (flan/v2/task_configs.py: Flan2021, P3, NIv2, CoT, Dialog).
"""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from tasks import flan
from tasks import flan_layouts
from tasks import records as records_lib

CAPS = {'flan2021': 5, 't0': 4, 'niv2': 3, 'cot': 6, 'dialog': 2}
SIZES = {
    ('flan2021', 'zs_opt'): {'anli': 7, 'boolq': 3, 'squad': 12},
    ('flan2021', 'zs_noopt'): {'anli': 2, 'boolq': 9},
    ('flan2021', 'fs_opt'): {'squad': 4, 'anli': 3},
    ('flan2021', 'fs_noopt'): {'anli': 1, 'squad': 6},
    ('t0', 'zs_opt'): {'wiki_qa': 5, 'quail': 2},
    ('t0', 'zs_noopt'): {'wiki_qa': 3},
    ('t0', 'fs_opt'): {'quail': 8},
    ('t0', 'fs_noopt'): {'quail': 1, 'wiki_qa': 1},
    ('niv2', 'zs_opt'): {'task001': 4, 'task002': 1, 'task003': 3},
    ('niv2', 'fs_opt'): {'task001': 2},
    ('cot', 'zs_opt'): {'gsm8k': 9, 'aqua': 2},
    ('cot', 'fs_opt'): {'gsm8k': 3},
    ('dialog', 'zs_opt'): {'qrecc': 3, 'wiki_dialog': 1},
    ('dialog', 'fs_opt'): {'qrecc': 2},
}
# How FLAN's exporter spells each submixture's task_source.
FLAN_SOURCE = {'flan2021': 'Flan2021', 't0': 'P3', 'niv2': 'NIv2', 'cot': 'CoT', 'dialog': 'Dialog'}
# How Open-Orca's folders and SirNeural's files name the submixtures.
FILE_PREFIX = {'flan2021': 'flan', 't0': 't0', 'niv2': 'niv2', 'cot': 'cot', 'dialog': 'dialog'}
PUBLISHED = {'flan2021': 0.4, 't0': 0.32, 'niv2': 0.2, 'cot': 0.05, 'dialog': 0.03}


def records(submix, variant, underscore=False):
  out = []
  for task, n in SIZES.get((submix, variant), {}).items():
    for i in range(n):
      meta = {'task_source': FLAN_SOURCE[submix], 'task_name': task, 'template_type': variant}
      if underscore:
        meta = {'_' + k: v for k, v in meta.items()}
      out.append({'inputs': f'{submix} {task} {variant} input {i}', 'targets': f'target {i}', **meta})
  return out


def all_records(underscore=False):
  return [r for (s, v) in SIZES for r in records(s, v, underscore)]


def hf_download_leftovers(root):
  """What `huggingface-cli download --local-dir` leaves beside the data."""
  (root / 'README.md').write_text('---\nlicense: apache-2.0\n---\n')
  (root / '.gitattributes').write_text('*.parquet filter=lfs\n')
  cache = root / '.cache' / 'huggingface' / 'download'
  cache.mkdir(parents=True)
  (cache / 'train.parquet.metadata').write_text('abc\n')


def write_flan_export(root):
  """FLAN's own jsonl export: records carry `_task_source` etc. (run_example's passthrough features)."""
  rows = all_records(underscore=True)
  for i in range(3):
    (root / f'flan2022_export-{i:05d}-of-00003.jsonl').write_text(
        ''.join(json.dumps(r) + '\n' for r in rows[i::3]))


def write_dpi(root):
  """DataProvenanceInitiative/{submix}_submix_original: data/train-NNNNN-of-NNNNN-<hash>.parquet."""
  for submix in CAPS:
    rows = [r for (s, v) in SIZES if s == submix for r in records(s, v)]
    folder = root / f'{submix}_submix_original'
    (folder / 'data').mkdir(parents=True)
    hf_download_leftovers(folder)
    half = len(rows) // 2
    for k, part in enumerate((rows[:half], rows[half:])):
      table = pa.Table.from_pylist(part, schema=pa.schema([(c, pa.string()) for c in flan.FIELDS]))
      pq.write_table(table, str(folder / 'data' / f'train-{k:05d}-of-00002-3567632fcf5dcbb{k}.parquet'))


def write_openorca(root):
  """Open-Orca/FLAN: {flan,t0,niv2,cot,dialog}_{zsopt,...}_data/part.N.parquet with `_`-prefixed metadata."""
  hf_download_leftovers(root)
  (root / 'cot_zs_submix_data.json').write_text('{"not": "read"}\n')  # the repo's duplicate json dumps
  schema = pa.schema([('inputs', pa.string()), ('targets', pa.string()), ('_template_idx', pa.int64()),
                      ('_task_source', pa.string()), ('_task_name', pa.string()),
                      ('_template_type', pa.string())])
  for (submix, variant) in SIZES:
    folder = root / f"{FILE_PREFIX[submix]}_{variant.replace('_', '')}_data"
    folder.mkdir()
    rows = [dict(r, _template_idx=i % 10) for i, r in enumerate(records(submix, variant, underscore=True))]
    for k in range(2):
      pq.write_table(pa.Table.from_pylist(rows[k::2], schema=schema), str(folder / f'part.{k}.parquet'))


def write_sirneural(root):
  """SirNeural/flan_v2: {flan,...}_{zs,fs}_{opt,noopt}_train.jsonl.gz with inputs/targets/task only;
  flan_fs_opt_train split into byte chunks of one gzip stream (`cat flan_fs_opt_train_*.gz | gunzip`)."""
  hf_download_leftovers(root)
  for (submix, variant) in list(SIZES) + [('niv2', 'zs_noopt')]:  # files no flanx task reads
    rows = [{'inputs': r['inputs'], 'targets': r['targets'], 'task': FILE_PREFIX[submix]}
            for r in records(submix, variant)] or [{'inputs': 'x', 'targets': 'y', 'task': 'niv2'}]
    data = gzip.compress(''.join(json.dumps(r) + '\n' for r in rows).encode())
    name = f'{FILE_PREFIX[submix]}_{variant}_train'
    if (submix, variant) == ('flan2021', 'fs_opt'):
      cut = len(data) // 3  # mid-record: only the joined stream is valid gzip
      for k, chunk in enumerate((data[:cut], data[cut:2 * cut], data[2 * cut:]), 1):
        (root / f'{name}_part{k}.jsonl.gz').write_bytes(chunk)
    else:
      (root / f'{name}.jsonl.gz').write_bytes(data)


WRITERS = {'flan': write_flan_export, 'dpi': write_dpi, 'openorca': write_openorca,
           'sirneural': write_sirneural}


@pytest.fixture(scope='module', params=sorted(WRITERS))
def mirror(request, tmp_path_factory):
  """(layout, registered task prefix) for a folder in that layout, registered by pointing at the folder."""
  layout = request.param
  root = tmp_path_factory.mktemp(layout)
  WRITERS[layout](root)
  prefix = f'm_{layout}_'
  flan.register_flan2022(pattern=str(root), caps=CAPS, vocabulary=seqio.ByteVocabulary(), prefix=prefix)
  return layout, prefix, root


def expected_counts(layout, submix, variant):
  sizes = SIZES[(submix, variant)]
  if layout == 'sirneural':  # the files carry no task name: one uncapped pool per file
    return {flan_layouts.UNNAMED_TASK: sum(sizes.values())}
  return dict(sorted(sizes.items()))


def share(layout, submix, variant):
  counts = expected_counts(layout, submix, variant)
  capped = {t: min(n, CAPS[submix]) if t else n for t, n in counts.items()}
  return {t: c / sum(capped.values()) for t, c in capped.items()}


def test_layout_is_detected(mirror):
  layout, _, root = mirror
  files = flan_layouts.resolve(str(root))
  assert {f.layout for f in files} == {layout}
  assert not any('.cache' in p or p.endswith(('.md', 'submix_data.json')) for f in files for p in f.paths)


def test_every_variant_task_loads_fully(mirror):
  layout, prefix, _ = mirror
  loaded = 0
  for (submix, variant) in SIZES:
    source = seqio.get_mixture_or_task(f'{prefix}flan2022_{submix}_{variant}').source
    counts, report = source.scan()
    assert counts == expected_counts(layout, submix, variant), (submix, variant)
    assert report.num_skipped == 0
    task = seqio.get_mixture_or_task(f'{prefix}flan2022_{submix}_{variant}')
    epoch = [ex['inputs_pretokenized'].decode() for ex in
             task.get_dataset(None, shuffle=False, num_epochs=1).as_numpy_iterator()]
    assert len(epoch) == source.num_input_examples('train')
    assert all(inputs.startswith(f'{submix} ') and f' {variant} input ' in inputs for inputs in epoch)
    loaded += 1
  assert loaded == 14


def test_mixture_rates_equal_hand_computation(mirror):
  layout, prefix, _ = mirror
  rates = flan.flattened_rates(seqio.get_mixture_or_task(f'{prefix}flan2022_submix'))
  per_name = flan.task_name_rates(f'{prefix}flan2022_submix')
  for (submix, variant) in SIZES:
    n_variants = 4 if submix in ('flan2021', 't0') else 2
    assert rates[f'{prefix}flan2022_{submix}_{variant}'] == pytest.approx(PUBLISHED[submix] / n_variants)
    for task, fraction in share(layout, submix, variant).items():
      assert per_name[(f'{prefix}flan2022_{submix}_{variant}', task)] == pytest.approx(
          PUBLISHED[submix] / n_variants * fraction)
  assert sum(per_name.values()) == pytest.approx(1.0)


def test_examples_reach_seqio(mirror):
  layout, prefix, _ = mirror
  task = seqio.get_mixture_or_task(f'{prefix}flan2022_t0_fs_opt')  # the t0 data FLAN tags 'P3'
  got = sorted(ex['inputs_pretokenized'].decode() for ex in
               task.get_dataset(None, shuffle=False, num_epochs=1).as_numpy_iterator())
  assert len(got) == (8 if layout == 'sirneural' else 4)  # 8 quail examples, cap 4 where names allow
  assert all(g.startswith('t0 quail fs_opt input ') for g in got)


@pytest.mark.parametrize('alias,submix', [
    ('P3', 't0'), ('T0', 't0'), ('t0sf', 't0'), ('T0-SF', 't0'), ('flan', 'flan2021'), ('Flan2021', 'flan2021'),
    ('NIv2', 'niv2'), ('niv2', 'niv2'), ('CoT', 'cot'), ('Dialog', 'dialog')])
def test_source_aliases(alias, submix):
  assert flan_layouts.submix_of(alias) == submix


def test_mixed_layout_is_an_error_naming_both(tmp_path):
  write_openorca(tmp_path)
  (tmp_path / 'cot_zs_opt_train.jsonl.gz').write_bytes(gzip.compress(b'{"inputs": "a", "targets": "b"}\n'))
  with pytest.raises(flan_layouts.LayoutError) as info:
    flan_layouts.resolve(str(tmp_path))
  message = str(info.value)
  assert 'mixes layouts' in message and 'openorca (28 files' in message and 'sirneural (1 files' in message
  assert flan_layouts.LAYOUT_ENV in message and 'SirNeural/flan_v2' in message
  # Naming the layout settles it: the SirNeural file is then read by its records (which lack task_source).
  files = flan_layouts.resolve(str(tmp_path), 'openorca')
  assert len(files) == 29 and {f.layout for f in files} == {'openorca'}


def test_unknown_layout_is_an_error_saying_what_is_expected(tmp_path):
  (tmp_path / 'README.md').write_text('hi')
  (tmp_path / 'flan.csv').write_text('a,b\n')
  with pytest.raises(flan_layouts.LayoutError, match='no Flan data files.*flan.csv.*expected one of.*Open-Orca'):
    flan_layouts.resolve(str(tmp_path))


def test_wrong_schema_names_the_fields(tmp_path):
  # e.g. a parquet export that calls its columns source/target (chiayewken/flan-v2)
  pq.write_table(pa.Table.from_pylist([{'source': 'a', 'target': 'b', 'task_name': 't', 'task_source': 'P3',
                                        'template_type': 'zs_opt'}]), str(tmp_path / 'x.parquet'))
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['t0'], 'zs_opt', str(tmp_path))
  with pytest.raises(records_lib.RecordError, match=r"x.parquet:row 0: missing field 'inputs' \(record has"):
    source.scan()


def test_layout_setting_from_env_and_gin(tmp_path, monkeypatch):
  write_sirneural(tmp_path)
  monkeypatch.setenv(flan_layouts.LAYOUT_ENV, 'dpi')
  assert flan_layouts.flan_layout() == 'dpi'
  with pytest.raises(ValueError, match='Flan layout must be'):
    flan_layouts.flan_layout('orca')
  monkeypatch.setenv(flan_layouts.LAYOUT_ENV, 'sirneural')
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['cot'], 'zs_opt', str(tmp_path))
  assert source.scan()[0] == {'': 11}
  (tmp_path / 'extra.jsonl').write_text('{}\n')
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['cot'], 'fs_opt', str(tmp_path))
  with pytest.raises(flan_layouts.LayoutError, match='extra.jsonl: not a SirNeural'):
    source.scan()


def test_record_contradicting_its_folder(tmp_path):
  folder = tmp_path / 'cot_zsopt_data'
  folder.mkdir()
  row = {'inputs': 'a', 'targets': 'b', '_task_source': 'CoT', '_task_name': 'gsm8k', '_template_type': 'fs_opt'}
  pq.write_table(pa.Table.from_pylist([row, dict(row, _template_type='zs_opt')]), str(folder / 'part.0.parquet'))
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['cot'], 'zs_opt', str(tmp_path))
  with pytest.raises(records_lib.RecordError, match='row 0: record is cot fs_opt but its file name says cot zs_opt'):
    source.scan()
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['cot'], 'zs_opt', str(tmp_path), on_error='skip')
  counts, report = source.scan()
  assert counts == {'gsm8k': 1} and dict(report.skipped) == {'layout_mismatch': 1}


def test_error_in_joined_parts_names_the_parts_and_line(tmp_path):
  lines = [json.dumps({'inputs': f'q{i}', 'targets': 'a', 'task': 'flan'}) for i in range(6)]
  lines[4] = '{"inputs": "broken'
  data = gzip.compress(('\n'.join(lines) + '\n').encode())
  for k, chunk in enumerate((data[:20], data[20:]), 1):
    (tmp_path / f'flan_fs_opt_train_part{k}.jsonl.gz').write_bytes(chunk)
  source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['flan2021'], 'fs_opt', str(tmp_path))
  with pytest.raises(records_lib.RecordError, match=r'flan_fs_opt_train_part1.jsonl.gz \(\+1 parts\):5: malformed'):
    source.scan()


def test_shuffle_buffer_is_a_registration_setting(tmp_path):
  names = flan.register_flan2022(pattern=str(tmp_path), vocabulary=seqio.ByteVocabulary(), prefix='sb_',
                                 shuffle_buffer=64)
  assert {seqio.get_mixture_or_task(n).shuffle_buffer_size for n in names if not n.endswith('submix')} == {64}
