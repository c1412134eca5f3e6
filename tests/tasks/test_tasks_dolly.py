"""Dolly tasks from a JSONL file: prompts, split, categories, packed batches, the demo set."""

import json
import pathlib
import sys

import gin
import numpy as np
import pytest
import seqio

from tasks import demo
from tasks import dolly
from tasks import records as records_lib
from tasks import spec as spec_lib
from tasks import synthetic
from tasks import vocab as vocab_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
DEV_VOCAB = REPO.parent / 'shared' / 'data' / 'vocab' / 'dev_8k.model'
# The exact batch fields flanx's trainer reads from seqio's packed encoder-decoder converter.
PACKED_FIELDS = {'encoder_input_tokens', 'encoder_segment_ids', 'encoder_positions',
                 'decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights',
                 'decoder_segment_ids', 'decoder_positions'}
CATEGORY_SIZES = {'open_qa': 40, 'closed_qa': 25, 'brainstorming': 10}


def dolly_records():
  out = []
  for category, n in CATEGORY_SIZES.items():
    for i in range(n):
      out.append({'instruction': f'Question {i} about {category}?',
                  'context': f'Line one of {i}.\nLine two.' if i % 3 == 0 else '',
                  'response': f'Answer {i}\twith a tab.', 'category': category})
  return out


@pytest.fixture()
def dolly_file(tmp_path):
  path = tmp_path / 'dolly.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in dolly_records()))
  return path


def byte_vocab():
  return seqio.ByteVocabulary()


def test_prompt_puts_context_after_instruction_only_when_present(dolly_file):
  spec = dolly.make_spec('t_dolly_prompt', str(dolly_file), validation_fraction=0.0,
                         vocabulary=byte_vocab())
  source = spec_lib.SpecSource(spec, spec.variants[0], byte_vocab())
  rendered = dict(source.render('train'))
  assert rendered['Question 0 about open_qa?\n\nContext:\nLine one of 0.\nLine two.'] == (
      'Answer 0\twith a tab.')
  assert rendered['Question 1 about open_qa?'] == 'Answer 1\twith a tab.'
  assert len(rendered) == sum(CATEGORY_SIZES.values())


def test_split_is_deterministic_and_disjoint(dolly_file):
  spec = dolly.make_spec('t_dolly_split', str(dolly_file), validation_fraction=0.3,
                         vocabulary=byte_vocab())
  train = spec_lib.split_records(spec, 'train')
  validation = spec_lib.split_records(spec, 'validation')
  key = lambda r: (r['instruction'], r['response'])
  assert len(train) + len(validation) == 75
  assert not {key(r) for r in train} & {key(r) for r in validation}
  # Same answer from an independent recomputation of the documented rule.
  expected_validation = [r for r in dolly_records() if records_lib.stable_fraction(
      str(0), r['instruction'], r['response'], r['category'], r['context']) < 0.3]
  assert validation == expected_validation
  assert 0.1 < len(validation) / 75 < 0.5


def test_category_tasks_and_mixture_rates(dolly_file):
  names = dolly.register_dolly('t_dolly', str(dolly_file), validation_fraction=0.0,
                               categories=tuple(CATEGORY_SIZES), vocabulary=byte_vocab())
  assert names == ['t_dolly', 't_dolly_open_qa', 't_dolly_closed_qa', 't_dolly_brainstorming',
                   't_dolly_categories']
  mixture = seqio.get_mixture_or_task('t_dolly_categories')
  total = sum(CATEGORY_SIZES.values())
  for category, n in CATEGORY_SIZES.items():
    task = seqio.get_mixture_or_task(f't_dolly_{category}')
    assert mixture.get_rate(task) / mixture.total_rate == pytest.approx(n / total)
  only = dolly.register_dolly('t_dolly_cq', str(dolly_file), validation_fraction=0.0,
                              categories=('closed_qa',), per_category=False,
                              vocabulary=byte_vocab())
  task = seqio.get_mixture_or_task(only[0])
  targets = [ex['targets_pretokenized'].decode() for ex in
             task.get_dataset(None, shuffle=False).as_numpy_iterator()]
  assert len(targets) == 25


@pytest.mark.slow
def test_packed_batches_have_trainer_fields(dolly_file):
  if not DEV_VOCAB.exists():
    pytest.skip(f'shared dev vocabulary absent ({DEV_VOCAB})')
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB))
  dolly.register_dolly('t_dolly_packed', str(dolly_file), validation_fraction=0.2,
                       per_category=False, vocabulary=vocabulary)
  lengths = {'inputs': 64, 'targets': 32}
  ds = seqio.get_dataset('t_dolly_packed', lengths, dataset_split='train', shuffle=False,
                         feature_converter=seqio.EncDecFeatureConverter(pack=True))
  batch = next(ds.batch(4).as_numpy_iterator())
  assert set(batch) == PACKED_FIELDS
  assert batch['encoder_input_tokens'].shape == (4, 64)
  assert batch['decoder_target_tokens'].shape == (4, 32)
  # Segment 1 of row 0 is the first example (EOS-terminated, its tab kept losslessly).
  inputs, targets = seqio.get_mixture_or_task('t_dolly_packed').source.render('train')[0]
  seg = batch['decoder_segment_ids'][0] == 1
  first_targets = batch['decoder_target_tokens'][0][seg]
  assert list(first_targets) == vocabulary.encode(targets) + [1]
  assert vocabulary.decode(first_targets) == targets and '\t' in targets
  seg = batch['encoder_segment_ids'][0] == 1
  assert vocabulary.decode(batch['encoder_input_tokens'][0][seg]) == inputs
  # Decoder inputs: targets shifted right with 0 at the segment start.
  dec_in = batch['decoder_input_tokens'][0][batch['decoder_segment_ids'][0] == 1]
  assert dec_in[0] == 0
  np.testing.assert_array_equal(dec_in[1:], first_targets[:-1])


def test_path_from_gin_then_env(dolly_file, tmp_path, monkeypatch):
  monkeypatch.delenv(dolly.PATH_ENV, raising=False)
  assert dolly.dolly_path() is None
  monkeypatch.setenv(dolly.PATH_ENV, str(dolly_file))
  assert dolly.dolly_path() == str(dolly_file)
  with gin.unlock_config():
    gin.bind_parameter('tasks.dolly.dolly_path.path', str(tmp_path / 'other.jsonl'))
  try:
    assert dolly.dolly_path() == str(tmp_path / 'other.jsonl')
  finally:
    gin.clear_config()
  # The default `dolly` task reads the configured path when its dataset is built.
  task = seqio.get_mixture_or_task('dolly')
  assert task.num_input_examples('train') + task.num_input_examples('validation') == 75


def test_metrics_attached():
  task = seqio.get_mixture_or_task('dolly')
  names = {fn.__name__ for fn in task.metric_fns}
  assert names == {'rouge_l', 'bleu', 'exact_match'}


def test_demo_file_regenerates_byte_for_byte():
  shipped = pathlib.Path(demo.DATA_PATH).read_bytes()
  assert synthetic.to_jsonl(synthetic.generate()).encode('ascii') == shipped
  assert len(shipped) < 300_000
  lines = shipped.decode().splitlines()
  assert 2000 <= len(lines) <= 4000


def test_demo_answers_follow_from_prompts():
  for r in synthetic.generate(200):
    if r['category'] == 'arithmetic':
      numbers = [int(t.strip('?')) for t in (r['instruction'] + ' ' + r['context']).split()
                 if t.strip('?').isdigit()]
      assert int(r['response']) == sum(numbers)
    elif r['category'] == 'uppercase':
      assert r['response'] == r['context'].upper()
    elif r['category'] == 'reversal':
      assert r['instruction'].split('"')[1] == r['response'][::-1]
    else:
      items = r['context'].split('\n') if r['context'] else (
          r['instruction'].split(': ', 1)[1].split(', '))
      sep = '\n' if r['context'] else ', '
      key = int if items[0].isdigit() else str
      assert r['response'] == sep.join(sorted(items, key=key))


def test_demo_task_uses_bytes_and_round_trips_newlines():
  task = seqio.get_mixture_or_task('flanx_demo')
  assert isinstance(task.output_features['targets'].vocabulary, seqio.ByteVocabulary)
  assert task.num_input_examples('train') + task.num_input_examples('validation') == 2400
  assert 0.05 < task.num_input_examples('validation') / 2400 < 0.15
  vocabulary = task.output_features['targets'].vocabulary
  for ex in task.get_dataset({'inputs': 256, 'targets': 64}, 'validation',
                             shuffle=False).take(50).as_numpy_iterator():
    assert vocabulary.decode(ex['targets']) == ex['targets_pretokenized'].decode()
  assert {fn.__name__ for fn in task.metric_fns} == {'exact_match', 'bleu'}


def test_synthetic_main_writes_the_same_file(tmp_path, monkeypatch):
  out = tmp_path / 'demo.jsonl'
  monkeypatch.setattr(sys, 'argv', ['synthetic', '--out', str(out)])
  synthetic.main()
  assert out.read_bytes() == pathlib.Path(demo.DATA_PATH).read_bytes()
