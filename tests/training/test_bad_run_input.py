"""Malformed run settings end in one clear message naming the key, before any work."""

from __future__ import annotations

import pathlib
import sys

import gin
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from train_helpers import run_bindings, train_in_process  # noqa: E402  pylint: disable=g-import-not-at-top

from flanx import gin_config  # noqa: E402
from flanx.training import run_checks  # noqa: E402


@pytest.mark.parametrize('binding, message', [
    ('BATCH_SIZE = "x"', r"BATCH_SIZE = 'x'.*expected a positive integer"),
    ('BATCH_SIZE = 0', r'BATCH_SIZE = 0.*expected a positive integer'),
    ('TRAIN_STEPS = 2.5', r'TRAIN_STEPS = 2.5.*expected a positive integer'),
    ("TASK_FEATURE_LENGTHS = {'inputs': 0, 'targets': 12}", r'TASK_FEATURE_LENGTHS.*positive integer lengths'),
    ("TASK_FEATURE_LENGTHS = {'inputs': 24}", r'TASK_FEATURE_LENGTHS.*targets'),
    ('LEARNING_RATE = "fast"', r"LEARNING_RATE = 'fast'.*positive number"),
    ('SEED = 1.5', r'SEED = 1.5.*expected an integer'),
    ('CHECKPOINT_PERIOD = -1', r'CHECKPOINT_PERIOD = -1.*positive integer'),
])
def test_macro_types_and_ranges_are_checked_when_parsing(tmp_path, binding, message):
  try:
    with pytest.raises(gin_config.GinConfigError, match=message) as info:
      gin_config.parse_gin(['runs/finetune.gin'], run_bindings(tmp_path, 3) + [binding])
    assert '--gin.' in str(info.value)  # says where the value came from
  finally:
    gin.clear_config()


def test_macro_set_in_a_gin_file_is_named_with_its_file_and_line(tmp_path):
  bad = tmp_path / 'bad.gin'
  bad.write_text('include "runs/finetune.gin"\n\nBATCH_SIZE = "eight"\n')
  try:
    with pytest.raises(gin_config.GinConfigError, match=r'BATCH_SIZE(.|\n)*bad.gin, line 3'):
      gin_config.parse_gin([str(bad)], [b for b in run_bindings(tmp_path, 3) if not b.startswith('BATCH_SIZE')])
  finally:
    gin.clear_config()


def test_train_arguments_bound_directly_are_checked_too(tmp_path):
  with pytest.raises(run_checks.RunConfigError, match=r'train.log_every = 0: expected a positive integer'):
    train_in_process(tmp_path / 'run', 3, **{'train.log_every': 0})
  with pytest.raises(run_checks.RunConfigError, match=r'BATCH_SIZE \(train.batch_size\) = 8 is not divisible by '
                                                      r'num_microbatches=3'):
    train_in_process(tmp_path / 'run', 3, NUM_MICROBATCHES=3)
  assert not (tmp_path / 'run').exists()


def test_batch_must_fit_the_mesh():
  run_checks.check_batch_fits(16, 2, 4, 2)
  with pytest.raises(run_checks.RunConfigError, match=r'= 12 is not divisible by num_microbatches x the mesh'
                                                      r"'s data-parallel size \(1 x 8\); use a multiple of 8 \(e.g. 16\)"):
    run_checks.check_batch_fits(12, 1, 8, 1)
