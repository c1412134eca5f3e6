"""Compile-only TPU checks (flanx/training/aot.py, tpu_topology.py) with libtpu's compile-only devices, on CPU.

Slice figures are checked against Google's published ones (cloud.google.com/tpu/docs: v3, v4, v5e, v5p, v6e)
and against what libtpu itself describes; reports against XLA's own memory_analysis(); the command lines'
exit statuses (0 fits, 3 does not fit, 1 error) with small configs.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('libtpu', reason='compiling for TPUs needs the libtpu wheel (pip install libtpu==0.0.42.*)')

from flanx.training import tpu_topology  # pylint: disable=g-import-not-at-top

GIB = 2 ** 30
# A small config: the tiny model with a small vocabulary and short sequences (a TPU compile of it takes
# seconds to a minute on a busy CPU).
SMALL = ['--gin_file=models/tiny.gin', '--gin.T5Config.vocab_size=256',
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 16}", '--gin.BATCH_SIZE=32']
# A registered task: the check refuses an unknown one, as the real run does.
DEMO_TASK = ["MIXTURE_OR_TASK_MODULE = 'tasks.demo'", "MIXTURE_OR_TASK_NAME = 'flanx_demo'"]


# Google's published figures: (accelerator, chips, JAX devices, hosts, GiB of HBM per device).
@pytest.mark.parametrize('accelerator, chips, devices, hosts, hbm_gib', [
    ('v3-8', 4, 8, 1, 16),  # 2 TensorCores of 16 GiB per chip, 4 chips per host
    ('v3-32', 16, 32, 4, 16),
    ('v3-128', 64, 128, 16, 16),
    ('v4-8', 4, 4, 1, 32),  # megacore: one device per chip, 32 GiB
    ('v4-64', 32, 32, 8, 32),
    ('v4-128', 64, 64, 16, 32),
    ('v5litepod-8', 8, 8, 1, 16),
    ('v5litepod-16', 16, 16, 4, 16),  # 4x4 on 4-chip VMs
    ('v5p-8', 4, 4, 1, 95),
    ('v6e-8', 8, 8, 1, 32),
])
def test_slices_match_published_figures_and_libtpu(accelerator, chips, devices, hosts, hbm_gib):
  tpu = tpu_topology.parse(accelerator)
  assert (tpu.chips, tpu.devices, tpu.hosts, tpu.hbm_bytes_per_device) == (chips, devices, hosts, hbm_gib * GIB)
  assert tpu.usable_hbm_bytes_per_device < 1.01 * tpu.hbm_bytes_per_device
  described = tpu_topology.compile_only_devices(tpu)
  assert len(described) == devices and len({d.process_index for d in described}) == hosts
  assert all(d.platform == 'tpu' for d in described)


@pytest.mark.parametrize('name', ['v3-16', 'v4-6', 'v5litepod-3', 'tpu7x-8', 'v4_8'])
def test_unknown_accelerator_names_are_refused(name):
  with pytest.raises(ValueError, match='unknown TPU accelerator type'):
    tpu_topology.parse(name)


@pytest.fixture
def gin_run():
  """Parses a gin configuration for an in-process check; clears it afterwards."""
  import gin
  from flanx import gin_config
  from flanx.training import aot
  aot.force_cpu_backend()

  def parse(files, bindings):
    gin_config.parse_gin(files, bindings)

  yield parse
  gin.clear_config()


def _bindings(flags):
  return [f[len('--gin.'):].replace('=', ' = ', 1) for f in flags if f.startswith('--gin.')]


@pytest.mark.slow
@pytest.mark.parametrize('accelerator, mesh, per_host', [('v4-8', {'data': 4, 'model': 1}, 32),
                                                        ('v3-32', {'data': 16, 'model': 2}, 8)])
def test_train_step_report_is_xla_memory_analysis(gin_run, accelerator, mesh, per_host):
  from flanx.training import aot
  extra = ['--gin.make_mesh.model=2'] if mesh['model'] == 2 else []
  gin_run(['models/tiny.gin', 'runs/finetune.gin'],
          _bindings(SMALL + extra) + ["MODEL_DIR = '/nonexistent'"] + DEMO_TASK)
  report = aot.check('train', accelerator)
  (step,) = report.steps
  analysis = step.compiled.memory_analysis()
  assert (step.arguments, step.outputs, step.aliased, step.temporaries, step.generated_code) == (
      analysis.argument_size_in_bytes, analysis.output_size_in_bytes, analysis.alias_size_in_bytes,
      analysis.temp_size_in_bytes, analysis.generated_code_size_in_bytes)
  assert step.total == (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                        - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
                        + analysis.generated_code_size_in_bytes)
  # The donated state comes back in place; arguments hold at least the shards' own bytes and at most those
  # padded to whole TPU tiles (8 x 128 elements).
  assert step.aliased > 0 and step.abstract_argument_bytes <= step.arguments <= _tiled_bytes(step.abstract_args)
  assert report.mesh == mesh and report.per_host_batch == per_host and report.fits
  doc = report.to_json()
  assert doc['topology'] == tpu_topology.parse(accelerator).topology and doc['fits'] is True
  assert doc['num_devices'] == mesh['data'] * mesh['model'] and doc['per_device_bytes']['total'] == step.total
  assert doc['hbm_bytes_per_device'] == tpu_topology.parse(accelerator).hbm_bytes_per_device


def _tiled_bytes(tree):
  """Per-device bytes of sharded abstract arrays with their last two dims padded to 8 x 128 tiles."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = (1, 1) + tuple(leaf.sharding.shard_shape(leaf.shape))
    rows, cols = -(-shape[-2] // 8) * 8, -(-shape[-1] // 128) * 128
    total += int(np.prod(shape[:-2])) * rows * cols * np.dtype(leaf.dtype).itemsize
  return total


def test_batch_the_hosts_cannot_split_is_an_error(gin_run):
  from flanx.training import aot
  gin_run(['models/tiny.gin', 'runs/finetune.gin'],
          _bindings(SMALL) + ['BATCH_SIZE = 6', "MODEL_DIR = '/nonexistent'"] + DEMO_TASK)
  with pytest.raises(ValueError, match=r'= 6 is not divisible by the 4 processes \(hosts\)'):  # as the pod says
    aot.check('train', 'v3-32')


def test_unregistered_task_fails_before_any_compile(gin_run, monkeypatch):
  from flanx.training import aot, run_checks

  def no_compile(*args):
    raise AssertionError('compiled before checking the task name')

  monkeypatch.setattr(aot, 'compile_step', no_compile)
  gin_run(['models/tiny.gin', 'runs/finetune.gin'],
          _bindings(SMALL) + ["MODEL_DIR = '/nonexistent'", "MIXTURE_OR_TASK_MODULE = 'tasks.demo'",
                              "MIXTURE_OR_TASK_NAME = 'flanx_dem'"])
  with pytest.raises(run_checks.RunConfigError, match=r"'flanx_dem': no seqio task or mixture of that name is "
                     r'registered; did you mean flanx_demo\b'):  # other tests may register more look-alikes
    aot.check('train', 'v4-8')


def _cli(mode, *flags, tmp_path):
  report = tmp_path / 'report.json'
  proc = subprocess.run([sys.executable, '-m', f'flanx.{mode}', *flags, f'--compile_report={report}'],
                        capture_output=True, text=True, timeout=900, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  return proc, (json.loads(report.read_text()) if report.exists() else None)


@pytest.mark.slow
@pytest.mark.parametrize('mode, run_gin, accelerator, steps', [
    ('infer', 'runs/infer.gin', 'v4-8', 1),  # decode
    ('eval', 'runs/eval.gin', 'v3-32', 2),  # decode and teacher-forced scoring, 4 hosts
])
def test_decode_step_compiles_from_the_command_line(tmp_path, mode, run_gin, accelerator, steps):
  proc, doc = _cli(mode, *SMALL, f'--gin_file={run_gin}', "--gin.CHECKPOINT_PATH='/nonexistent'",
                   "--gin.INFER_OUTPUT_DIR='/nonexistent'" if mode == 'infer' else "--gin.MIXTURE_OR_TASK_NAME='x'",
                   '--gin.MAX_DECODE_LENGTH=8', f'--topology={accelerator}', '--compile_only', tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert set(doc) >= {'topology', 'num_devices', 'mesh', 'per_device_bytes', 'hbm_bytes_per_device', 'fits'}
  assert doc['fits'] is True and len(doc['steps']) == steps and doc['mode'] == mode
  assert set(doc['per_device_bytes']) >= {'arguments', 'outputs', 'temporaries', 'total'}
  assert 'fits:' in proc.stdout and tpu_topology.parse(accelerator).topology in proc.stdout


@pytest.mark.slow
def test_oversized_config_does_not_fit_exits_3_and_suggests_fsdp(tmp_path):
  # 50M-row embedding and output head: about 24 GiB of float32 params on each of a v4-8's 4 devices, plus
  # the decode step's logits. Sharding the params' embed axis over the 4 devices (fsdp) brings them to a quarter.
  proc, doc = _cli('infer', *SMALL, '--gin_file=runs/infer.gin', '--gin.T5Config.vocab_size=50000000',
                   "--gin.CHECKPOINT_PATH='/nonexistent'", "--gin.INFER_OUTPUT_DIR='/nonexistent'",
                   '--gin.MAX_DECODE_LENGTH=8', '--topology=v4-8', '--compile_only', '--suggest', tmp_path=tmp_path)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert doc['fits'] is False and doc['per_device_bytes']['total'] > doc['usable_hbm_bytes_per_device']
  assert 'DOES NOT FIT' in proc.stdout and 'lever fsdp: fits' in proc.stdout
  (fsdp,) = doc['suggestions']  # the first lever that fits ends the search
  assert fsdp['lever'] == 'fsdp' and fsdp['fits'] and fsdp['flags'] == ['--gin.axis_rules.fsdp=True']
  assert fsdp['total_bytes'] < doc['usable_hbm_bytes_per_device'] < doc['per_device_bytes']['total']


@pytest.mark.slow
@pytest.mark.parametrize('flags, message', [
    (['--topology=v3-16', '--compile_only'], "unknown TPU accelerator type 'v3-16'"),
    (['--topology=v4-8'], 'needs both --topology=ACCELERATOR_TYPE and --compile_only'),
])
def test_bad_compile_only_flags_exit_1(tmp_path, flags, message):
  proc, doc = _cli('train', *SMALL, '--gin_file=runs/finetune.gin', *flags, tmp_path=tmp_path)
  assert proc.returncode == 1 and message in proc.stderr and doc is None


def test_mfu_follows_from_model_flops_and_step_time():
  from flanx.training import aot
  tpu = tpu_topology.parse('v4-8')  # 4 chips of 275 bf16 TFLOP/s
  step = aot.StepMemory('train_step', 10, 0, 0, 5, 1, 1.0)
  report = aot.Report('train', tpu, {'data': 4, 'model': 1}, [step], 8, 8, model_flops_per_step=5.5e14,
                      step_time=1.0)
  assert report.mfu == pytest.approx(5.5e14 / (4 * 275e12))  # 50%
  assert 'MFU = 50.0%' in report.text() and report.to_json()['mfu'] == pytest.approx(0.5)
  assert tpu_topology.parse('v3-8').peak_flops_per_device == pytest.approx(61.5e12)  # one TensorCore


def test_compile_only_command_lines_restart_with_a_larger_stack():
  # libtpu's compiler threads take their stack size from the limit the process started with; the XXL/UL2 train
  # steps of v4 pods overflowed 8 MiB. The command line restarts itself (same argv) with the limit raised.
  import resource
  soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
  if soft == hard:
    pytest.skip(f'the stack limit cannot be raised here (soft = hard = {soft})')
  code = ('import resource, sys; from flanx.training import aot; aot.restart_with_compiler_stack(sys.argv[1:]); '
          'print(resource.getrlimit(resource.RLIMIT_STACK)[0], flush=True)')
  env = {k: v for k, v in os.environ.items() if k != 'FLANX_COMPILE_STACK_RAISED'}

  def run(*args):
    limit = lambda: resource.setrlimit(resource.RLIMIT_STACK, (8 << 20, hard))
    proc = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=120,
                          env=env, preexec_fn=limit, check=True)
    return int(proc.stdout.split()[-1])

  assert run('--topology=v4-8', '--compile_only') == hard  # restarted once, with the hard limit
  assert run('--gin_file=runs/finetune.gin') == 8 << 20  # a real run keeps its limit
