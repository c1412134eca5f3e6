"""Shared helpers for tests that run the trainer on the tiny fixture task (in process or as a subprocess)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import pathlib
import shutil
import sys
import tempfile

import gin
import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / 'tests'
if str(TESTS) not in sys.path:
  sys.path.insert(0, str(TESTS))
import fixture_tasks  # noqa: E402  pylint: disable=g-import-not-at-top  (registers the fixture task)

TINY_MODEL = [
    'T5Config.vocab_size = 384', 'T5Config.d_model = 32', 'T5Config.d_ff = 64', 'T5Config.num_heads = 4',
    'T5Config.d_kv = 8', 'T5Config.num_encoder_layers = 2', 'T5Config.num_decoder_layers = 2',
]


def run_bindings(model_dir, steps: int, **extra) -> list[str]:
  """gin bindings of a tiny run on the fixture task; `extra` adds or overrides KEY=VALUE bindings."""
  bindings = TINY_MODEL + [
      f'MODEL_DIR = "{model_dir}"', f'MIXTURE_OR_TASK_NAME = "{fixture_tasks.TASK}"',
      'MIXTURE_OR_TASK_MODULE = "fixture_tasks"', "TASK_FEATURE_LENGTHS = {'inputs': 24, 'targets': 12}",
      'BATCH_SIZE = 8', f'TRAIN_STEPS = {steps}', 'LEARNING_RATE = 0.01', 'EVAL_PERIOD = 0',
      'train.progress_bar = False', 'train.log_every = 1']
  return bindings + [f'{k} = {v}' for k, v in extra.items()]


def train_in_process(model_dir, steps: int, **extra) -> dict:
  """Parses the run's gin config and calls train() in this process."""
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  from flanx.training import loop  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin_config.parse_gin(['runs/finetune.gin'], run_bindings(model_dir, steps, **extra))
  try:
    return loop.train()
  finally:
    gin.clear_config()


def train_command(model_dir, steps: int, **extra) -> list[str]:
  """The `python -m flanx.train …` command line of the same run."""
  return [sys.executable, '-m', 'flanx.train', '--gin_file=runs/finetune.gin'] + [
      '--gin.' + b.replace(' = ', '=', 1) for b in run_bindings(model_dir, steps, **extra)]


@functools.cache
def shared_compile_cache() -> str:
  """One persistent compilation cache for this test session's trainer subprocesses (removed at exit)."""
  folder = tempfile.mkdtemp(prefix='flanx-tests-compile-cache-')
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  return folder


def subprocess_env(devices: int = 1, shared_cache: bool = True) -> dict:
  """Environment for a trainer subprocess on `devices` CPU devices, finding the fixture task.

  With `shared_cache`, the subprocesses share one compilation cache (JAX_COMPILATION_CACHE_DIR, which flanx uses
  when no --compile_cache_dir is given): the many short runs of the same tiny model compile each program once per
  session, as runs sharing a --compile_cache_dir do. Without it, a run keeps its cache in MODEL_DIR (flanx's
  default); a test of the cache itself passes its own --compile_cache_dir."""
  env = dict(os.environ, PYTHONPATH=f'{TESTS}{os.pathsep}{REPO}', JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  # XLA:CPU's own limit stays: a device thread that waits 60 s for its partners in a collective aborts the run, so
  # a hang fails in a minute (the two seen were a deadlock, fixed in flanx/training/checksums.py, not a slow host).
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  if shared_cache:
    env.setdefault('JAX_COMPILATION_CACHE_DIR', shared_compile_cache())
  else:
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return env


def read_metrics(model_dir) -> list[dict]:
  """The rows of MODEL_DIR/train_metrics.jsonl."""
  with open(pathlib.Path(model_dir) / 'train_metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def saved_params(model_dir, step: int) -> dict:
  """Params of checkpoint_<step> as numpy arrays."""
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  tree = checkpoints.restore_params(str(pathlib.Path(model_dir) / f'checkpoint_{step}'))
  return jax.tree.map(np.asarray, tree)


def assert_trees_equal(a, b, atol: float = 0.0) -> None:
  """Same paths, and bitwise-equal arrays (or equal within `atol`)."""
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    if atol == 0.0:
      np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    else:
      np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))
