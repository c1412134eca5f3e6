"""benchmarks.xla_cpu_options: option sets reach XLA per executable, and its library counts and CPU ratios hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import xla_cpu_options


def test_option_sets_by_name_and_from_the_command_line():
  got = xla_cpu_options.parse_options('default,eigen', ['wide:xla_cpu_prefer_vector_width=512;xla_cpu_use_onednn=true'])
  assert got == {'default': {}, 'eigen': {'xla_cpu_experimental_ynn_fusion_type': ''},
                 'wide': {'xla_cpu_prefer_vector_width': 512, 'xla_cpu_use_onednn': True}}
  with pytest.raises(SystemExit, match='unknown'):
    xla_cpu_options.parse_options('default,nonesuch', [])


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU options')
def test_compiler_options_change_the_dot_library_of_one_executable():
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  lowered = jax.jit(lambda x, y: x @ y).lower(a, b)
  default = xla_cpu_options.libraries(lowered.compile())
  eigen = lowered.compile(xla_cpu_options.OPTIONS['eigen'])
  assert default == {'ynnpack': 1, 'eigen dot': 0}, default
  assert xla_cpu_options.libraries(eigen) == {'eigen dot': 1}
  np.testing.assert_array_equal(eigen(a, b), np.full((64, 16), 32.0))


def test_cpu_ratio_pairs_rounds_by_cpu_seconds():
  runs = lambda cpu: [{'wall_s': 10.0 + i, 'cpu_s': c} for i, c in enumerate(cpu)]
  run = {'sides': {'slow': {'runs': runs([2.0, 2.2, 1.8])}, 'fast': {'runs': runs([1.0, 1.0, 1.0])}}}
  r = xla_cpu_options.cpu_ratio(run, 'slow', 'fast', bound=0.5)
  assert r['value'] == pytest.approx(2.0) and r['paired'] == pytest.approx([2.0, 2.2, 1.8])
  assert xla_cpu_options.cpu_ratio(run, 'slow', 'fast', bound=0.1)['value'] is None  # spread 0.2 > 0.1
