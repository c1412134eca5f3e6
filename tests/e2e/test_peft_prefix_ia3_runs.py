"""Prefix tuning and (IA)³ through the real trainer (PEFT='prefix' / 'ia3'): exact resume, checkpoints holding only
the method's params, and peft folders (and, for (IA)³, a merged model) verified against transformers + peft."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flanx import export
from flanx.model import peft

from train_helpers import assert_trees_equal, saved_params, train_in_process  # pylint: disable=g-bad-import-order

RUNS = {
    'prefix': {'PEFT': "'prefix'", 'PrefixConfig.num_virtual_tokens': 3, 'CHECKPOINT_PERIOD': 2},
    'ia3': {'PEFT': "'ia3'", 'CHECKPOINT_PERIOD': 2, 'T5Config.dropout_rate': 0.1, 'LEARNING_RATE': 0.1},
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(RUNS))
def test_run_resumes_exactly_and_exports_through_peft(tmp_path, name):
  bindings = RUNS[name]
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  train_in_process(straight, 4, **bindings)
  train_in_process(resumed, 2, **bindings)
  assert train_in_process(resumed, 4, **bindings)['step'] == 4
  trained = saved_params(straight, 4)
  leaves = {p[-1].key for p, _ in jax.tree_util.tree_leaves_with_path(trained)}
  assert leaves == set(peft.METHODS[name].trained_leaves) & leaves and leaves
  assert_trees_equal(saved_params(resumed, 4), trained)

  out = tmp_path / 'adapter'
  assert export.main(['--checkpoint_dir', str(straight), '--output_dir', str(out), '--adapter_only']) == 0  # verified
  settings = json.loads((out / 'adapter_config.json').read_text())
  assert settings['peft_type'] == peft.METHODS[name].peft_type
  assert settings['base_model_name_or_path'] == str(out / 'base')
  merged = tmp_path / 'merged'
  if name == 'ia3':
    assert export.main(['--checkpoint_dir', str(straight), '--output_dir', str(merged), '--merge']) == 0  # verified
    assert (merged / 'model.safetensors').is_file() and not (merged / 'adapter_config.json').exists()
    # The peft folder reads back as a new run's start (a negligible learning rate keeps it there).
    second = tmp_path / 'second'
    train_in_process(second, 1, **{**bindings, 'LEARNING_RATE': 1e-20, 'T5Config.dropout_rate': 0.0,
                                   'INITIAL_CHECKPOINT_PATH': f'"{out / "base"}"',
                                   'train.initial_adapter_path': f'"{out}"'})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), saved_params(second, 1), trained)
  else:
    with pytest.raises(ValueError, match='--adapter_only'):
      export.main(['--checkpoint_dir', str(straight), '--output_dir', str(merged), '--merge'])
