"""The notebooks run top to bottom in their CPU/CI mode (tiny model, fixture data) and are stored without outputs."""

import json
import os
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / 'notebooks'
NOTEBOOKS = ('colab_tpu_finetune_dolly.ipynb', 'inference.ipynb')
CELL_TIMEOUT_S = 300


def _read(name: str):
  import nbformat  # pylint: disable=g-import-not-at-top
  return nbformat.read(str(NOTEBOOKS_DIR / name), as_version=4)


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
  import nbformat  # pylint: disable=g-import-not-at-top
  nb = _read(name)
  nbformat.validate(nb)
  code_cells = [c for c in nb.cells if c.cell_type == 'code']
  assert code_cells
  for i, cell in enumerate(code_cells):
    assert cell.outputs == [], f'{name}: code cell {i} has outputs (clear them before committing)'
    assert cell.execution_count is None, f'{name}: code cell {i} has an execution count'
  assert nb.metadata.kernelspec.name == 'python3'


def _kernel_manager(tmp_path: pathlib.Path):
  """A kernel manager whose only kernelspec runs ipykernel with this interpreter (the .venv's python)."""
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  from jupyter_client.manager import AsyncKernelManager  # pylint: disable=g-import-not-at-top
  kernels = tmp_path / 'kernels'
  spec_dir = kernels / 'flanx-notebook-test'
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'flanx tests', 'language': 'python'}))
  specs = KernelSpecManager(kernel_dirs=[str(kernels)])
  return AsyncKernelManager(kernel_name='flanx-notebook-test', kernel_spec_manager=specs)


def _outputs_text(nb) -> str:
  parts = []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.output_type == 'stream':
        parts.append(out.text)
      elif out.output_type in ('execute_result', 'display_data'):
        parts.append(out.get('data', {}).get('text/plain', ''))
  return ''.join(parts)


def _summary(text: str, marker: str) -> dict:
  """The JSON object printed just before the notebook's OK marker."""
  before = text[:text.index(marker)]
  start = before.rindex('\n{\n') + 1
  return json.loads(before[start:])


def _execute(name: str, tmp_path: pathlib.Path):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / 'run'
  # OMP_NUM_THREADS=1: torch's OpenMP pool on a small shared CPU box makes tiny-model generate() tens of times
  # slower (threads wait on each other); JAX and TF use their own thread pools.
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
             OMP_NUM_THREADS='1', FLANX_NOTEBOOK_MODE='ci', FLANX_NOTEBOOK_RUN_DIR=str(run_dir))
  env.pop('FLANX_VOCAB', None)
  env.pop('FLANX_DOLLY_PATH', None)
  before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
  nb = _read(name)
  client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
                          resources={'metadata': {'path': str(NOTEBOOKS_DIR)}})
  client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, when a cell fails
  assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before, 'the notebook wrote into notebooks/'
  errors = [out for cell in nb.cells for out in cell.get('outputs', []) if out.output_type == 'error']
  assert not errors
  return nb, run_dir


@pytest.mark.slow
def test_finetune_notebook_runs_in_ci_mode(tmp_path):
  nb, run_dir = _execute('colab_tpu_finetune_dolly.ipynb', tmp_path)
  text = _outputs_text(nb)
  marker = 'NOTEBOOK OK: colab_tpu_finetune_dolly'
  assert marker in text
  summary = _summary(text, marker)
  assert summary['mode'] == 'ci' and summary['model_gin'] == 'models/demo.gin'
  assert summary['run_dir'] == str(run_dir)
  assert summary['train_steps'] == 4
  # 200 fixture records split ~95/5 by the Dolly task's stable hash.
  assert sum(summary['dolly_records'].values()) == 200 and 0 < summary['dolly_records']['validation'] < 30
  assert sorted(summary['eval_dolly']) == ['bleu', 'exact_match', 'rougeL']
  for value in summary['eval_dolly'].values():
    assert 0.0 <= value <= 100.0
  assert 0.0 < summary['final_train_loss_per_token'] < 20.0
  assert summary['eval_teacher_forced']['loss_per_nonpadding_target_token'] > 0
  assert 0.0 <= summary['eval_teacher_forced']['accuracy'] <= 1.0
  matched, total = map(int, summary['hf_matches_flanx'].split('/'))
  assert matched == total == 6
  assert sorted(p.name for p in run_dir.iterdir()) == ['data', 'eval', 'hf', 'infer', 'model', 'prompts.jsonl']
  hf = run_dir / 'hf'
  assert {'config.json', 'model.safetensors', 'handler.py', 'tokenizer_config.json'} <= {p.name for p in hf.iterdir()}
  assert json.loads((hf / 'config.json').read_text())['vocab_size'] == 384
  assert (run_dir / 'model' / 'checkpoint_4' / 'params').is_dir()
  # The run trained the Dolly task (its JSONL reader) on the fixture, not the demo task.
  config_gin = (run_dir / 'model' / 'config.gin').read_text()
  assert "MIXTURE_OR_TASK_NAME = 'dolly'" in config_gin
  assert str(run_dir / 'data' / 'dolly_fixture.jsonl') in config_gin
  fixture = (run_dir / 'data' / 'dolly_fixture.jsonl').read_text().splitlines()
  assert len(fixture) == 200 and set(json.loads(fixture[0])) == {'instruction', 'context', 'response', 'category'}


@pytest.mark.slow
def test_inference_notebook_runs_in_ci_mode(tmp_path):
  nb, run_dir = _execute('inference.ipynb', tmp_path)
  text = _outputs_text(nb)
  marker = 'NOTEBOOK OK: inference'
  assert marker in text
  summary = _summary(text, marker)
  assert summary['mode'] == 'ci'
  assert summary['flanx_modes'] == ['beam', 'greedy', 'sample #1', 'sample #2']
  assert summary['transformers_modes'] == ['beam', 'greedy', 'sample']
  assert summary['flanx_infer_beam_matches_api'] == '3/3'
  assert summary['flanx_hf_folder_greedy_matches_checkpoint'] == 3
  assert summary['transformers_greedy_matches_flanx'] == 3
  assert isinstance(summary['endpoint_handler_output'], list) and len(summary['endpoint_handler_output']) == 1
  assert sorted(p.name for p in run_dir.iterdir()) == ['data', 'hf', 'infer', 'model', 'prompts.jsonl']
  assert (run_dir / 'infer' / 'prompts-beam.jsonl-00000-of-00001').exists()
