"""Registration-time task settings given on a flanx command line take effect (issue 11, section 2): the
binding imports the task module, gin parses it, and the registration is re-run with it."""

import json

import gin
import pytest
import seqio

from flanx import gin_config


@pytest.fixture()
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()
  from tasks import registrations  # pylint: disable=g-import-not-at-top
  registrations.reapply()  # back to the import-time registrations


def test_dolly_on_error_from_a_command_line_binding(tmp_path, monkeypatch, clean_gin):
  path = tmp_path / 'dolly.jsonl'
  good = {'instruction': 'i', 'context': '', 'response': 'r', 'category': 'open_qa'}
  path.write_text(json.dumps(good) + '\n{"broken\n' + json.dumps(dict(good, response='s')) + '\n')
  monkeypatch.setenv('FLANX_DOLLY_PATH', str(path))
  gin_config.parse_gin([], ["tasks.dolly.register_dolly.on_error = 'skip'",
                            'tasks.dolly.register_dolly.validation_fraction = 0.0'], finalize=False)
  from tasks import registrations  # pylint: disable=g-import-not-at-top
  assert registrations.stale() == {}
  registrations.check()  # building a dataset now would not fail for stale settings
  task = seqio.get_mixture_or_task('dolly')
  assert task.num_input_examples('train') == 2  # the malformed line skipped, as bound; nothing held back
