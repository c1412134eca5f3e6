"""Shared pytest fixtures: repo paths and tiny model configs (CPU, offline)."""

import functools
import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
# torch's OpenMP pool makes tiny CPU models (parity checks, export verification) far slower on 2 busy cores.
os.environ.setdefault('OMP_NUM_THREADS', '1')
# Tests compile many tiny XLA programs: skipping LLVM's optimisation passes roughly halves compile time on
# CPU and leaves float semantics unchanged (no fast-math either way).
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import pytest  # pylint: disable=g-import-not-at-top

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / 'shared'


@pytest.fixture
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture
def shared_dir() -> pathlib.Path:
  return SHARED_DIR


@pytest.fixture
def tiny_config():
  """Factory: tiny_config(**changes) → a T5Config small enough for CPU tests (d_model 32, 2+2 layers)."""
  from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top

  def make(**changes):
    base = dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2,
                num_decoder_layers=2, activation='gated-gelu', tie_embeddings=False, dropout_rate=0.0)
    base.update(changes)
    return T5Config(**base)

  return make


def _random_params(config, seed: int = 0):
  """Random float32 numpy params at T5's init scales, made without compiling anything (fast on CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.model import network as model  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    names = [getattr(k, 'key', str(k)) for k in path]
    if names[-1] == 'scale':
      return 1.0 + 0.1 * rng.standard_normal(shape)
    std = {'embedding': 1.0, 'rel_embedding': 0.5}.get(names[-1], shape[0] ** -0.5)
    if 'query' in names:
      std = (config.d_model * config.d_kv) ** -0.5
    return std * rng.standard_normal(shape)

  shapes = model.abstract_params(config)
  return jax.tree_util.tree_map_with_path(lambda p, s: draw(p, s.shape).astype(np.float32), shapes)


@pytest.fixture
def random_params():
  """Factory: random_params(config, seed) → canonical float32 numpy params (see _random_params)."""
  return _random_params


@functools.lru_cache(maxsize=None)
def _jitted_forward(config):
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network as model  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda params, *batch: model.Transformer(config).apply({'params': params}, *batch))


@pytest.fixture
def forward():
  """forward(config, params, encoder_tokens, decoder_tokens, *more) → float32 numpy logits; one jit per config."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return lambda config, params, *batch: np.asarray(_jitted_forward(config)(params, *batch))


def pytest_collection_modifyitems(config, items):
  """Whole-run tests (tests/e2e/) are `slow`: `scripts/test.sh -m "not slow"` runs the fast unit tests only."""
  e2e = REPO_ROOT / 'tests' / 'e2e'
  for item in items:
    if e2e in pathlib.Path(str(item.fspath)).parents:
      item.add_marker(pytest.mark.slow)
