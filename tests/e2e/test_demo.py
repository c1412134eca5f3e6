"""The README's main job runs end to end (a few steps only: learning itself is covered by test_train)."""

import json
import pathlib

from flanx import demo


def test_demo_pipeline_end_to_end(tmp_path, capsys):
  code = demo.main(['--run_dir', str(tmp_path / 'demo'), '--train_steps', '3', '--eval_examples', '8',
                    '--prompts', '3', '--min_exact_match', '0'])
  out = capsys.readouterr().out
  assert code == 0, out
  assert 'exact match (held-out)' in out and '| yes ' in out and '| NO ' not in out
  run = tmp_path / 'demo'
  assert (run / 'hf' / 'config.json').exists() and (run / 'hf' / 'model.safetensors').exists()
  assert (run / 'model' / 'checkpoint_3').is_dir() and (run / 'logs' / 'train.log').exists()
  metrics = json.loads((run / 'eval' / 'model' / 'validation_metrics.json').read_text())
  assert 'exact_match' in metrics['metrics']['flanx_demo']
  assert sorted(p.name for p in run.iterdir()) == ['base', 'eval', 'hf', 'infer', 'logs', 'model', 'prompts.jsonl']


def test_lora_demo_exports_an_adapter_peft_reproduces(tmp_path, capsys):
  code = demo.main(['--peft', 'lora', '--run_dir', str(tmp_path / 'demo'), '--train_steps', '3', '--eval_examples', '8',
                    '--prompts', '3', '--min_exact_match', '0'])
  out = capsys.readouterr().out
  assert code == 0, out
  assert '| peft ' in out and '| yes ' in out and '| NO ' not in out
  hf = tmp_path / 'demo' / 'hf'
  settings = json.loads((hf / 'adapter_config.json').read_text())
  assert settings['peft_type'] == 'LORA' and settings['r'] == 16 and settings['base_model_name_or_path'] == str(hf / 'base')
  assert (hf / 'base' / 'model.safetensors').exists() and not (hf / 'model.safetensors').exists()


def test_demo_names_the_tensorboard_install_when_it_is_missing(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'tensorboard' else real(name, *a))
  assert demo._tensorboard_command('runs/x/model') == (
      f'{demo.sys.executable} -m pip install tensorboard=={demo._TENSORBOARD_VERSION}, then '
      'tensorboard --logdir runs/x/model')
  monkeypatch.setattr(importlib.util, 'find_spec', real)
  if real('tensorboard') is not None:
    assert demo._tensorboard_command('runs/x/model') == 'tensorboard --logdir runs/x/model'
  constraints = (pathlib.Path(__file__).parents[2] / 'constraints.txt').read_text().split()
  assert f'tensorboard=={demo._TENSORBOARD_VERSION}' in constraints  # the version the project pins
