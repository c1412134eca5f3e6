"""The one frozen-base loader gives, without an initial checkpoint, exactly the base a fresh PEFT run starts from
(scanned or looped layers, every method): resume, inference and export see the model that trained."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flanx.model import peft
from flanx.model.peft import frozen_base
from flanx.training import partitioning, steps

METHODS = [peft.LoraConfig(target_modules=('q', 'k', 'v', 'o', 'wi_0', 'wi_1', 'wo')),
           peft.PromptConfig(num_virtual_tokens=3), peft.PrefixConfig(num_virtual_tokens=2), peft.IA3Config()]


@pytest.mark.slow
@pytest.mark.parametrize('method', METHODS, ids=lambda m: m.name)
def test_seed_base_is_the_fresh_runs_base(tiny_config, method):
  # Scanned layers: there the base model alone would draw other values than the PEFT model's base part.
  config = tiny_config(scan_layers=True).replace(**{method.name: method})
  shardings = steps.make_shardings(config, None, partitioning.make_mesh(), partitioning.axis_rules())
  fresh = peft.split_trainable(steps.init_params(config, 11, shardings))[1]  # what loop's fresh start trains on
  loaded = frozen_base.load(config, None, 11, shardings.frozen)
  assert jax.tree.structure(loaded) == jax.tree.structure(fresh)
  jax.tree.map(np.testing.assert_array_equal, loaded, fresh)
