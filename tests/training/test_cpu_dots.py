"""The train step's dot library: oneDNN on Intel CPUs ('auto'), per executable, with the default step's loss."""

from __future__ import annotations

import gin
import jax
import numpy as np
import pytest

from flanx.model import network
from flanx.training import adafactor, cpu_dots, partitioning, steps
from tests.training.test_steps import _batch

_CPUINFO = 'processor\t: 0\nvendor_id\t: {}\ncpu family\t: 6\nmodel name\t: Some CPU\n\nprocessor\t: 1\n'


@pytest.fixture
def cpuinfo(tmp_path):
  def write(vendor):
    path = tmp_path / f'cpuinfo_{vendor}'
    path.write_text(_CPUINFO.format(vendor) if vendor else 'processor\t: 0\nBogoMIPS\t: 50.00\n')
    return str(path)
  return write


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.mark.parametrize('vendor, platform, library, expected', [
    ('GenuineIntel', 'cpu', 'auto', cpu_dots.ONEDNN),
    ('AuthenticAMD', 'cpu', 'auto', None),
    (None, 'cpu', 'auto', None),  # e.g. an ARM cpuinfo: no vendor_id
    ('GenuineIntel', 'tpu', 'auto', None),  # compile-only TPU devices on an Intel host (flanx.training.aot)
    ('GenuineIntel', 'cpu', 'default', None),
    ('AuthenticAMD', 'cpu', 'onednn', cpu_dots.ONEDNN),
])
def test_the_option_resolves_from_platform_and_vendor(cpuinfo, vendor, platform, library, expected):
  path = cpuinfo(vendor)
  assert cpu_dots.cpu_vendor(path) == vendor
  assert cpu_dots.train_step_compiler_options(platform, library, cpuinfo_path=path) == expected


def test_bad_choices_are_refused(tmp_path):
  assert cpu_dots.cpu_vendor(str(tmp_path / 'missing')) is None
  with pytest.raises(ValueError, match=r"dot_library='mkl'"):
    cpu_dots.train_step_compiler_options('cpu', 'mkl')
  with pytest.raises(ValueError, match="XLA:CPU option; the train step runs on 'tpu'"):
    cpu_dots.train_step_compiler_options('tpu', 'onednn')


def _compiled_step(config, params, batch, library):
  gin.bind_parameter('train_step_compiler_options.dot_library', library)
  tx = adafactor.adafactor(1e-2, param_axes=network.logical_axes(config))
  shardings = steps.make_shardings(config, tx, partitioning.make_mesh(), partitioning.axis_rules())
  state = steps.new_state(jax.device_put(params, shardings.params), tx, shardings)
  step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
  compiled = step.lower(state, batch).compile()
  _, metrics = compiled(state, batch)
  return compiled.as_text(), float(metrics['loss'])


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU dot libraries')
def test_onednn_train_step_has_onednn_dots_and_the_default_loss(tiny_config, random_params, clean_gin):
  config = tiny_config()
  params = random_params(config)
  batch = _batch(np.random.default_rng(0), config)
  default_hlo, default_loss = _compiled_step(config, params, batch, 'default')
  onednn_hlo, onednn_loss = _compiled_step(config, params, batch, 'onednn')
  assert '__onednn' not in default_hlo and '__ynn_fusion' in default_hlo
  assert onednn_hlo.count('__onednn') >= 10, 'oneDNN took (almost) none of the dots'
  assert np.isfinite(default_loss) and default_loss > 1.0
  np.testing.assert_allclose(onednn_loss, default_loss, rtol=1e-6)
