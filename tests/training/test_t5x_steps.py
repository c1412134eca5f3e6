"""t5x step semantics from a t5x initial checkpoint: absolute TRAIN_STEPS, the step continuing from the checkpoint,
checkpoint_<absolute step> names, the learning-rate schedule on the absolute step, and (on request) the
checkpoint's Adafactor state restored, as t5x's train.py / RestoreCheckpointConfig do.

The t5x checkpoint is written here in t5x's format (flax msgpack "version 3", TensorStore zarr arrays) with the
writer of tests/interop/test_t5x_import.py.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import gin
import jax
import numpy as np
import pytest

from flanx import gin_config
from flanx.training import adafactor, checkpoints, loop, schedules, start_step

TESTS = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import fixture_tasks  # noqa: E402  (registers the fixture task)

pytest.importorskip('tensorstore')
_spec = importlib.util.spec_from_file_location('t5x_fixture_writer', TESTS / 'interop' / 'test_t5x_import.py')
_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_writer)
write_t5x_checkpoint = _writer.write_t5x_checkpoint

MODEL = dict(vocab_size=384, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2)
START = 1000


@pytest.fixture
def t5x_run(tmp_path, tiny_config, random_params):
  """A t5x run folder whose checkpoint_1000 holds params and an Adafactor state (t5x's param_states)."""
  config = tiny_config(**MODEL)
  params = random_params(config, 7)
  rng = np.random.default_rng(1)
  fresh = adafactor.adafactor().init(params)
  slots = {s: jax.tree.map(lambda x: (1e-4 * rng.random(x.shape) + 1e-6).astype(np.float32), getattr(fresh, s))
           for s in adafactor.SLOTS}
  param_states = jax.tree.map(lambda *xs: dict(zip(adafactor.SLOTS, xs)), *slots.values())
  folder = tmp_path / 't5x_run'
  write_t5x_checkpoint(folder, START, params, param_states, gcs_leaf='')
  return folder, slots


def _train(model_dir, initial, train_steps, **bindings):
  lines = [f'T5Config.{k} = {v}' for k, v in MODEL.items()] + [
      f'MODEL_DIR = "{model_dir}"', f'MIXTURE_OR_TASK_NAME = "{fixture_tasks.TASK}"',
      'MIXTURE_OR_TASK_MODULE = "fixture_tasks"', "TASK_FEATURE_LENGTHS = {'inputs': 24, 'targets': 12}",
      'BATCH_SIZE = 4', f'TRAIN_STEPS = {train_steps}', 'EVAL_PERIOD = 0', 'CHECKPOINT_PERIOD = 2',
      f'INITIAL_CHECKPOINT_PATH = "{initial}"', 'train.progress_bar = False',
      'train.log_every = 1', 'train.async_checkpointing = False', 'train.keep_checkpoints = None']
  lines += [f'{k} = {v}' for k, v in bindings.items()]
  gin.clear_config()
  gin_config.parse_gin(['runs/finetune.gin'], lines)
  try:
    return loop.train()
  finally:
    gin.clear_config()


def _steps_logged(model_dir) -> list[int]:
  with open(pathlib.Path(model_dir) / 'train_metrics.jsonl') as f:
    return [json.loads(line)['step'] for line in f if 'loss' in line]


def _checkpoint_names(model_dir) -> list[str]:
  return sorted(p.name for p in pathlib.Path(model_dir).glob('checkpoint_*'))


def test_plan_follows_t5x_and_refuses_relative_looking_train_steps(t5x_run, tmp_path):
  folder, _ = t5x_run
  plan = start_step.plan_start(str(folder), 1003)
  assert plan == start_step.StartPlan(START, 1003, False) and plan.schedule_offset == START
  assert start_step.plan_start(str(folder / f'checkpoint_{START}'), 1003).step == START
  with pytest.raises(start_step.StartStepError) as err:
    start_step.plan_start(str(folder), 3)  # a fine-tuning length, not t5x's absolute step
  assert 'set TRAIN_STEPS = 1000 + N (e.g. 1003 for 3)' in str(err.value)
  with pytest.raises(start_step.StartStepError, match='nothing would be trained'):
    start_step.plan_start(str(folder), START)
  assert start_step.plan_start(str(folder), 3, relative_steps=5) == start_step.StartPlan(START, START + 5, False)
  assert start_step.plan_start(str(folder), 3, continue_step=False) == start_step.StartPlan(0, 3, False)
  restored = start_step.plan_start(str(folder), 1003, restore_optimizer_state=True)
  assert restored.restore_optimizer_state and restored.schedule_offset == 0
  with pytest.raises(start_step.StartStepError, match='needs train.continue_step'):
    start_step.plan_start(str(folder), 3, continue_step=False, restore_optimizer_state=True)
  with pytest.raises(start_step.StartStepError, match='needs a t5x initial checkpoint'):
    start_step.plan_start(str(tmp_path / 'nothing'), 3, continue_step=True)
  assert start_step.plan_start(None, 7) == start_step.StartPlan(0, 7, False)
  schedule = start_step.shifted_schedule(schedules.linear_warmup(1.0, warmup_steps=2000), START)
  assert float(schedule(0)) == pytest.approx(0.5)  # the absolute step 1000 of a 2000-step warmup


@pytest.mark.slow
def test_step_continues_from_the_t5x_checkpoint_with_fresh_optimizer_state(t5x_run, tmp_path):
  folder, slots = t5x_run
  model_dir = tmp_path / 'run'
  with pytest.raises(start_step.StartStepError, match='TRAIN_STEPS'):
    _train(model_dir, folder, 3)
  assert not model_dir.exists()  # refused before anything was written
  result = _train(model_dir, folder, 1003)
  assert result['step'] == 1003 and result['status'] == 'finished'
  assert _steps_logged(model_dir) == [1001, 1002, 1003]
  with open(model_dir / 'train_metrics.jsonl') as f:
    row = [json.loads(line) for line in f][-1]
  # t5x's names and normalisation (one step per row here): summed loss, per all 4 x 12 target slots, z-loss split.
  assert row['loss_per_all_target_tokens'] == pytest.approx(row['loss'] / (4 * 12), rel=1e-5)
  assert row['cross_ent_loss'] + row['z_loss'] == pytest.approx(row['loss'], rel=1e-5)
  assert row['learning_rate'] == pytest.approx(1e-3) and row['timing/seqs'] == 4
  assert _checkpoint_names(model_dir) == ['checkpoint_1002', 'checkpoint_1003']  # t5x's absolute names
  ckpts = checkpoints.RunCheckpoints(str(model_dir))
  try:
    meta = ckpts.read_meta(1003)
  finally:
    ckpts.close()
  assert meta.step == 1003 and meta.schedule_offset == START
  # Resuming keeps counting (and the schedule offset) from the saved checkpoint.
  assert _train(model_dir, folder, 1005)['step'] == 1005
  assert _steps_logged(model_dir)[-2:] == [1004, 1005]


@pytest.mark.slow
def test_restore_optimizer_state_continues_the_checkpoints_second_moments(t5x_run, tmp_path):
  folder, slots = t5x_run
  restored_dir, fresh_dir = tmp_path / 'restored', tmp_path / 'fresh'
  _train(restored_dir, folder, 1001, **{'train.restore_optimizer_state': True})
  _train(fresh_dir, folder, 1001)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def opt_state(model_dir):
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(str(model_dir / 'checkpoint_1001' / 'opt_state'))

  after_restore, after_fresh = opt_state(restored_dir), opt_state(fresh_dir)
  assert int(_slot(after_restore, 'count', ())) == 1001 and int(_slot(after_fresh, 'count', ())) == 1
  # One update of a restored state moves v by (1 - rho) = 1001^-0.8 of the way to g^2; a fresh one is g^2.
  rho = 1 - 1001.0 ** -0.8
  key = ('token_embedder', 'embedding')  # [384, 32]: unfactored (32 < min_dim_size_to_factor)
  restored_v = _slot(after_restore, 'v', key)
  fresh_v = _slot(after_fresh, 'v', key)  # g^2 + epsilon1 (rho = 0 on a fresh state): same params, same batch
  before = slots['v'][key[0]][key[1]]
  np.testing.assert_allclose(restored_v, rho * before + (1 - rho) * fresh_v, rtol=2e-4)


def _slot(state, slot, key):
  tree = state[slot] if isinstance(state, dict) else state[adafactor.AdafactorState._fields.index(slot)]
  for k in key:
    tree = tree[k]
  return np.asarray(tree)
