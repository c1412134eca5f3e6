"""Truncation counting (issue 11, section 3): the fraction of examples seqio cuts at the run's lengths."""

import json

import pytest
import seqio

from tasks import dolly
from tasks import truncation

# Byte vocabulary: an example's length is its UTF-8 bytes + 1 (EOS).
INSTRUCTIONS = ['a' * 4, 'b' * 10, 'c' * 11, 'd' * 30]  # lengths 5, 11, 12, 31
RESPONSES = ['x' * 2, 'y' * 3, 'z' * 9, 'w' * 1]  # lengths 3, 4, 10, 2


@pytest.fixture(scope='module')
def task(tmp_path_factory):
  path = tmp_path_factory.mktemp('trunc') / 'd.jsonl'
  path.write_text(''.join(json.dumps({'instruction': i, 'context': '', 'response': r, 'category': 'open_qa'})
                          + '\n' for i, r in zip(INSTRUCTIONS, RESPONSES)))
  dolly.register_dolly('t_trunc', str(path), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())
  return seqio.get_mixture_or_task('t_trunc')


def test_fractions_by_hand(task):
  report = truncation.truncation_report(task, {'inputs': 11, 'targets': 4})
  assert report == {'task': 't_trunc', 'split': 'train', 'examples': 4, 'inputs': 0.5, 'max_inputs': 31,
                    'targets': 0.25, 'max_targets': 10}
  assert truncation.mixture_truncation('t_trunc', {'inputs': 64, 'targets': 64})['t_trunc']['inputs'] == 0.0


def test_agrees_with_what_seqio_keeps(task):
  lengths = {'inputs': 11, 'targets': 4}
  kept = list(task.get_dataset(lengths, shuffle=False).as_numpy_iterator())
  full = {ex['inputs_pretokenized'].decode(): len(ex['inputs_pretokenized']) + 1 for ex in kept}
  cut = sum(full[ex['inputs_pretokenized'].decode()] > len(ex['inputs']) for ex in kept)
  assert cut / len(kept) == truncation.truncation_report(task, lengths)['inputs']
