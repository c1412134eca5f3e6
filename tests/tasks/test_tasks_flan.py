"""Flan 2022 from preprocessed files: capped examples-proportional rates, mixtures, formats."""

import collections
import json

import gin
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio
import tensorflow as tf

from tasks import dolly
from tasks import flan
from tasks import records as records_lib

CAPS = {'flan2021': 5, 't0': 4, 'niv2': 3, 'cot': 6, 'dialog': 2}
# Per (submix, variant): examples per Flan task_name. Known sizes for hand computation.
SIZES = {
    ('flan2021', 'zs_opt'): {'anli': 7, 'boolq': 3, 'squad': 12},
    ('flan2021', 'zs_noopt'): {'anli': 2, 'boolq': 9},
    ('flan2021', 'fs_opt'): {'squad': 4},
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
SOURCE_NAME = {'flan2021': 'Flan2021', 't0': 'T0', 'niv2': 'NIv2', 'cot': 'CoT',
               'dialog': 'Dialog'}


def make_records(submix):
  out = []
  for (s, variant), tasks in SIZES.items():
    if s != submix:
      continue
    for task, n in tasks.items():
      for i in range(n):
        out.append({'inputs': f'{task} {variant} input {i}', 'targets': f'target {i}',
                    'task_source': SOURCE_NAME[s], 'task_name': task,
                    'template_type': variant if s != 't0' else variant.replace('_', '')})
  return out


def write_tfrecord(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for r in records:
      feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                 for k, v in r.items()}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())


@pytest.fixture(scope='module')
def flan_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('flan')
  for submix in CAPS:
    records = make_records(submix)
    if submix == 'flan2021':  # two JSONL shards
      half = len(records) // 2
      for name, part in (('a', records[:half]), ('b', records[half:])):
        (root / f'flan2021_{name}.jsonl').write_text(
            ''.join(json.dumps(r) + '\n' for r in part))
    elif submix == 't0':  # underscore-prefixed fields, as some exports have them
      (root / 't0_a.jsonl').write_text(''.join(
          json.dumps({('_' + k if k != 'inputs' and k != 'targets' else k): v
                      for k, v in r.items()}) + '\n' for r in records))
    elif submix in ('niv2', 'cot'):
      pq.write_table(pa.Table.from_pylist(records), str(root / f'{submix}_a.parquet'))
    else:
      write_tfrecord(root / f'{submix}_a.tfrecord', records)
  return root


@pytest.fixture(scope='module')
def registered(flan_dir):
  return flan.register_flan2022(pattern=str(flan_dir / '{submix}_*'), caps=CAPS,
                                vocabulary=seqio.ByteVocabulary(), prefix='t_')


def hand_task_share(submix, variant):
  capped = {t: min(n, CAPS[submix]) for t, n in SIZES[(submix, variant)].items()}
  return {t: c / sum(capped.values()) for t, c in capped.items()}


def test_registered_names(registered):
  assert 't_flan2022_submix' in registered
  assert [n for n in registered if n.endswith('_submix')] == [
      't_flan2021_submix', 't_t0_submix', 't_niv2_submix', 't_cot_submix', 't_dialog_submix',
      't_flan2022_submix']
  assert len([n for n in registered if n.startswith('t_flan2022_') and
              not n.endswith('submix')]) == 4 + 4 + 2 + 2 + 2


def test_source_rates_are_capped_proportions(registered):
  for (submix, variant), sizes in SIZES.items():
    source = seqio.get_mixture_or_task(f't_flan2022_{submix}_{variant}').source
    assert source.scan()[0] == dict(sorted(sizes.items()))
    assert source.task_rates() == pytest.approx(hand_task_share(submix, variant))
    assert source.num_input_examples('train') == sum(min(n, CAPS[submix])
                                                     for n in sizes.values())


def test_each_epoch_holds_exactly_the_capped_counts(registered):
  # Through seqio: three epochs, each with the capped counts and its own sample of the capped tasks.
  task = seqio.get_mixture_or_task('t_flan2022_flan2021_zs_opt')
  examples = [(ex['task_name'].decode(), ex['inputs_pretokenized'].decode()) for ex in
              task.get_dataset(None, shuffle=False, num_epochs=3).as_numpy_iterator()]
  epochs = [examples[:13], examples[13:26], examples[26:]]
  for epoch in epochs:
    assert collections.Counter(t for t, _ in epoch) == {'anli': 5, 'boolq': 3, 'squad': 5}
    assert len(set(epoch)) == 13  # no example twice within an epoch
  assert len({frozenset(e) for e in epochs}) == 3  # fresh samples of the capped tasks
  again = [(ex['task_name'].decode(), ex['inputs_pretokenized'].decode()) for ex in
           task.get_dataset(None, shuffle=False, num_epochs=3).as_numpy_iterator()]
  assert again == examples  # seeded


def test_capping_is_a_uniform_exact_sample():
  # cap_per_epoch on a synthetic task of 10 examples, cap 3: exactly 3 per epoch, each example about equally often
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n, cap, epochs = 10, 3, 400
  ds = tf.data.Dataset.from_tensor_slices({'task_name': ['t'] * n, 'task_size': [n] * n,
                                           'task_ordinal': list(range(n))})
  kept = [int(ex['task_ordinal']) for ex in flan.cap_per_epoch(ds, cap, 7, epochs).as_numpy_iterator()]
  assert len(kept) == cap * epochs
  frequency = collections.Counter(kept)
  assert set(frequency) == set(range(n))
  assert all(abs(f - cap * epochs / n) < 45 for f in frequency.values()), frequency  # 120 +- 5 sigma


def test_capping_in_batches_equals_a_per_example_filter(monkeypatch):
  # The vectorized rule (CAP_BATCH examples per call) keeps exactly the examples, in order, that the rule applied
  # to one example at a time keeps: several interleaved tasks, sizes below/at/above the cap, unnamed examples,
  # batch boundaries inside an epoch, and every kept set a per-task bijection's first `cap` ranks.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  sizes = {'a': 1, 'b': 5, 'c': 6, 'd': 37, 'e': 200, flan.layouts_lib.UNNAMED_TASK: 9}
  rows = [(name, n, i) for name, n in sizes.items() for i in range(n)]
  rows = [rows[i] for i in rng.permutation(len(rows))]
  ds = tf.data.Dataset.from_tensor_slices({'task_name': [r[0] for r in rows], 'task_size': [r[1] for r in rows],
                                           'task_ordinal': [r[2] for r in rows],
                                           'inputs': tf.ragged.constant([[r[2]] * (1 + r[2] % 4) for r in rows])})
  ds = ds.map(lambda ex: {**ex, 'inputs': ex['inputs'].to_tensor() if isinstance(ex['inputs'], tf.RaggedTensor)
                          else ex['inputs']})
  cap, seed, epochs = 6, 11, 3

  def one_at_a_time(epoch):
    def keep(ex):
      size, ordinal = tf.cast(ex['task_size'], tf.int64), tf.cast(ex['task_ordinal'], tf.int64)
      key = flan._mix32(tf.bitwise.bitwise_and(tf.strings.to_hash_bucket_fast(ex['task_name'], 2**31 - 1)
                                               + flan._mix32(tf.constant(seed, tf.int64) + epoch), 0x7FFFFFFF))
      return tf.logical_or(tf.logical_or(size <= cap, tf.equal(ex['task_name'], flan.layouts_lib.UNNAMED_TASK)),
                           flan._permute(ordinal, size, key) < cap)
    return ds.filter(keep)

  expected = list(tf.data.Dataset.range(epochs).flat_map(one_at_a_time).as_numpy_iterator())
  monkeypatch.setattr(flan, 'CAP_BATCH', 16)  # 266 examples: many batch boundaries in each epoch
  got = list(flan.cap_per_epoch(ds, cap, seed, epochs).as_numpy_iterator())
  assert len(got) == len(expected) == epochs * sum(min(n, cap) if t != flan.layouts_lib.UNNAMED_TASK else n
                                                    for t, n in sizes.items())
  for a, b in zip(got, expected):
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
  assert flan.cap_per_epoch(ds, cap, seed, 1).element_spec == ds.element_spec
  for n in (1, 2, 3, 5, 16, 17, 1000):  # the permutation is a bijection of [0, n) for every key
    x = tf.range(n, dtype=tf.int64)
    image = flan._permute(x, tf.fill([n], tf.constant(n, tf.int64)), tf.fill([n], tf.constant(n * 7919, tf.int64)))
    assert sorted(image.numpy().tolist()) == list(range(n))


def test_mixture_rates_equal_hand_computation(registered):
  rates = flan.flattened_rates(seqio.get_mixture_or_task('t_flan2022_submix'))
  published = {'flan2021': 0.4, 't0': 0.32, 'niv2': 0.2, 'cot': 0.05, 'dialog': 0.03}
  for (submix, variant) in SIZES:
    n_variants = 4 if submix in ('flan2021', 't0') else 2
    assert rates[f't_flan2022_{submix}_{variant}'] == pytest.approx(
        published[submix] / n_variants)
  per_name = flan.task_name_rates('t_flan2022_submix')
  for (submix, variant) in SIZES:
    n_variants = 4 if submix in ('flan2021', 't0') else 2
    for task, share in hand_task_share(submix, variant).items():
      assert per_name[(f't_flan2022_{submix}_{variant}', task)] == pytest.approx(
          published[submix] / n_variants * share)
  assert sum(per_name.values()) == pytest.approx(1.0)


def test_dolly_flan_replay_fraction_from_gin(registered, tmp_path):
  path = tmp_path / 'd.jsonl'
  path.write_text(json.dumps({'instruction': 'i', 'context': '', 'response': 'r',
                              'category': 'open_qa'}) + '\n')
  dolly.register_dolly('t_fdolly', str(path), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())
  flan.register_dolly_flan('t_dolly_flan', dolly_task='t_fdolly', replay='t_flan2022_submix')
  mixture = seqio.get_mixture_or_task('t_dolly_flan')
  with gin.unlock_config():
    gin.bind_parameter('tasks.flan.flan_replay_fraction.fraction', 0.25)
  try:
    rates = flan.flattened_rates(mixture)  # the fraction is read now, not at registration
  finally:
    gin.clear_config()
  assert rates['t_fdolly'] == pytest.approx(0.75)
  assert rates['t_flan2022_cot_zs_opt'] == pytest.approx(0.25 * 0.05 / 2)
  assert rates['t_flan2022_flan2021_fs_noopt'] == pytest.approx(0.25 * 0.4 / 4)
  assert flan.flattened_rates(mixture)['t_fdolly'] == pytest.approx(0.9)  # default 0.1


@pytest.mark.slow
def test_mixture_packs_into_trainer_fields(registered):
  ds = seqio.get_dataset('t_cot_submix', {'inputs': 48, 'targets': 16},
                         feature_converter=seqio.EncDecFeatureConverter(pack=True),
                         dataset_split='train', shuffle=False, num_epochs=1, seed=1)
  batch = next(ds.batch(2).as_numpy_iterator())
  assert set(batch) == {'encoder_input_tokens', 'encoder_segment_ids', 'encoder_positions',
                        'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights',
                        'decoder_segment_ids', 'decoder_positions'}


def test_bad_flan_records(tmp_path):
  good = {'inputs': 'x', 'targets': 'y', 'task_source': 'Flan2021', 'task_name': 'anli',
          'template_type': 'zs_opt'}
  cases = [('missing_field', {k: v for k, v in good.items() if k != 'targets'}),
           ('unknown_template_type', dict(good, template_type='three_shot')),
           ('unknown_task_source', dict(good, task_source='Alpaca')),
           ('empty_field', dict(good, targets=''))]
  for kind, bad in cases:
    path = tmp_path / f'{kind}.jsonl'
    path.write_text('\n'.join(json.dumps(r) for r in (good, good, bad, good)) + '\n')
    source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['flan2021'], 'zs_opt', str(path))
    with pytest.raises(records_lib.RecordError, match=f'{path}:3: '):
      source.scan()
    source = flan.FlanFileSource(flan.SUBMIX_BY_NAME['flan2021'], 'zs_opt', str(path),
                                 on_error='skip')
    counts, report = source.scan()
    assert counts == {'anli': 3} and dict(report.skipped) == {kind: 1}
    assert len(list(source.read_file(0))) == 3


def test_unconfigured_pattern_is_a_clear_error(monkeypatch):
  monkeypatch.delenv(flan.PATTERN_ENV, raising=False)
  source = seqio.get_mixture_or_task('flan2022_t0_zs_opt').source  # default registration
  with pytest.raises(FileNotFoundError, match='FLANX_FLAN_DATA'):
    source.scan()
