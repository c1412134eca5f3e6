"""Settings read at registration time take effect when set by gin before a dataset is built, or fail
loudly (issue 11, section 2): Dolly's on_error and the CoT datasets list, bound after `import tasks`."""

import json

import gin
import pytest
import seqio

import tasks  # pylint: disable=unused-import
from tasks import dolly
from tasks import registrations

GOOD = {'instruction': 'Say hi.', 'context': '', 'response': 'hi', 'category': 'open_qa'}


@pytest.fixture()
def restore_defaults():
  yield
  gin.clear_config()
  registrations.reapply()  # back to the import-time registrations
  assert registrations.stale() == {}


def bind(**bindings):
  with gin.unlock_config():
    for name, value in bindings.items():
      gin.bind_parameter(name, value)


def test_dolly_on_error_bound_after_import(tmp_path, monkeypatch, restore_defaults):
  path = tmp_path / 'dolly.jsonl'
  path.write_text('\n'.join([json.dumps(GOOD), '{"broken', json.dumps(dict(GOOD, response='hello'))]) + '\n')
  monkeypatch.setenv(dolly.PATH_ENV, str(path))
  bind(**{'tasks.dolly.register_dolly.on_error': 'skip'})
  task = seqio.get_mixture_or_task('dolly')
  with pytest.raises(registrations.StaleRegistrationError,
                     match=r"tasks.dolly.register_dolly: \{'on_error': 'skip'\}.*reapply"):
    task.get_dataset(None, 'train', shuffle=False)
  redone = registrations.reapply()
  assert redone[0] == 'tasks.dolly.register_dolly' and 'tasks.flan.register_dolly_flan' in redone
  task = seqio.get_mixture_or_task('dolly')
  assert task.num_input_examples('train') + task.num_input_examples('validation') == 2  # bad line skipped
  # Mixtures registered later hold the new task, not the one registered at import.
  assert task in seqio.get_mixture_or_task('dolly_flan').tasks


def test_cot_datasets_bound_after_import(restore_defaults):
  assert len(seqio.get_mixture_or_task('cot_native').tasks) == 9 * 4
  bind(**{'tasks.cot.register_cot.datasets': ['gsm8k']})
  with pytest.raises(registrations.StaleRegistrationError, match="register_cot: {'datasets': \\['gsm8k'\\]}"):
    registrations.check()
  registrations.reapply()
  names = [t.name for t in seqio.get_mixture_or_task('cot_native').tasks]
  assert names == ['cot_gsm8k_fs_answer', 'cot_gsm8k_fs_reasoning', 'cot_gsm8k_zs_answer', 'cot_gsm8k_zs_reasoning']


def test_nothing_stale_without_bindings():
  gin.clear_config()
  assert registrations.stale() == {}
  assert registrations.reapply() == []
  registrations.check()
