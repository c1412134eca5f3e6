"""Smoke test of benchmarks/peft_bench.py on the tiny model (CPU): every method's trainable-parameter count is the
one Hugging Face `peft` trains for the same adapter (full: the transformers model's), the memory plan and the
interleaved step times are measured, and the tables print them. How fast is the benchmark's business, not the
test's."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from benchmarks import common, peft_bench

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
hf_peft = pytest.importorskip('peft')

TINY = ['--model=tiny', '--batch=2', '--inputs=16', '--targets=8', '--steps=2']


def _args(methods=tuple(peft_bench.METHODS)) -> argparse.Namespace:
  """The flags of a `--worker` / `--interleaved` process at the tiny shape (2 rounds)."""
  return argparse.Namespace(model='tiny', batch=2, inputs=16, targets=8, steps=2, rounds=2, methods=list(methods))


def _peft_trainable(method: str) -> int:
  """What transformers + peft train for the benchmark's method on the same model (all params for full)."""
  from flanx.interop import hf_format  # pylint: disable=g-import-not-at-top
  from flanx.model import peft  # pylint: disable=g-import-not-at-top
  config = peft_bench._config(method, 'tiny')  # pylint: disable=protected-access
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf_format.hf_config_dict(config)))
  if not peft.is_peft(config):  # transformers 5.x always ties lm_head in memory; tiny's head is its own
    return sum(p.numel() for p in model.parameters()) + (0 if config.tie_embeddings else
                                                         config.vocab_size * config.d_model)
  settings = dict(peft.method(config).adapter_config(config, 'tiny'), inference_mode=False)
  return hf_peft.get_peft_model(model, hf_peft.get_peft_config(settings)).get_nb_trainable_parameters()[0]


def _flanx_trainable(method: str) -> int:
  """The params flanx trains for the benchmark's method (shapes only)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network, peft  # pylint: disable=g-import-not-at-top
  config = peft_bench._config(method, 'tiny')  # pylint: disable=protected-access
  return sum(x.size for x in jax.tree.leaves(peft.trained_part(config, network.abstract_params(config))[0]))


@pytest.mark.parametrize('method', list(peft_bench.METHODS))
def test_each_method_trains_what_peft_trains(method):
  assert _flanx_trainable(method) == _peft_trainable(method)


@pytest.fixture(scope='module')
def rows():
  return {m: peft_bench.worker(m, _args()) for m in peft_bench.METHODS}


@pytest.mark.slow  # a tiny train step compiled and run per method (a minute of CPU)
def test_sizes_and_memory_plan(rows):
  full = rows['full']
  assert full['frozen_params'] == 0 and full['frozen_bytes'] == 0
  for m, r in rows.items():
    assert r['method'] == m and r['peft'] == peft_bench.METHODS[m]
    assert r['trainable_params'] == _flanx_trainable(m)
    if m != 'full':  # the frozen base is the whole model; the method only adds params
      assert r['frozen_params'] == full['trainable_params'] and r['frozen_bytes'] == 4 * r['frozen_params']
      assert r['trainable_params'] < full['trainable_params'] // 10
      assert r['adam_state_bytes'] < full['adam_state_bytes']
    # Adam: two fp32 moments per trained param and a step count.
    assert 8 * r['trainable_params'] <= r['adam_state_bytes'] <= 8 * r['trainable_params'] + 64
    assert 0 < r['adafactor_state_bytes'] < r['adam_state_bytes']
    # The step's arguments hold every param (trained and frozen), its output the new state, donated in place.
    assert r['xla_argument_bytes'] >= 4 * (r['trainable_params'] + r['frozen_params'])
    assert 0 < r['xla_alias_bytes'] <= r['xla_output_bytes'] and r['xla_temp_bytes'] > 0
    assert r['peak_rss_bytes'] > 0 and len(r['own_process_step_s']) == 1


@pytest.mark.slow
def test_interleaved_timing_and_tables(rows):
  timing = peft_bench.interleaved(_args(['full', 'prefix_20', 'ia3']))
  assert list(timing['sides']) == ['full', 'prefix_20', 'ia3'] and timing['rounds'] == 2
  assert timing['order'] == ['full', 'prefix_20', 'ia3', 'ia3', 'prefix_20', 'full']  # reversed every round
  for m, side in timing['sides'].items():
    walls = [run['wall_s'] for run in side['runs']]
    assert len(walls) == 2 and min(walls) > 0
    over = timing['time_over_full'][m]
    full_walls = [run['wall_s'] for run in timing['sides']['full']['runs']]
    assert over['paired'] == pytest.approx([w / f for w, f in zip(walls, full_walls)])
  assert timing['time_over_full']['full']['value'] == 1.0
  for m, sizes in timing['sizes'].items():  # compiled again, the same step plans the same memory
    assert sizes == {k: rows[m][k] for k in sizes}
  md = peft_bench.markdown(list(rows.values()), timing)
  for m, r in rows.items():
    assert f"| {m} | {r['trainable_params']:,}" in md
  for m in timing['sides']:
    assert f"| {m} | {timing['sides'][m]['wall']['median']:.2f} |" in md
  assert json.loads(json.dumps(timing)) == timing  # results.json holds it as is


@pytest.mark.slow
def test_command_line_runs_each_method_in_its_own_process(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.peft_bench', *TINY, '--rounds=1', '--methods=full,ia3',
                         '--out', str(tmp_path)], cwd=common.REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / 'results.json').read_text())
  assert [r['method'] for r in result['methods']] == ['full', 'ia3'] and result['methods'][1]['peak_rss_bytes'] > 0
  assert result['model'] == 'tiny' and result['commit'] and len(result['load_average_end']) == 3
  assert result['host']['cpu'].get('Model name') and result['step_time']['rounds'] == 1
  assert '| ia3 |' in proc.stdout


def test_methods_must_include_full():
  with pytest.raises(SystemExit):
    peft_bench.main(['--methods=lora_r8,ia3'])
