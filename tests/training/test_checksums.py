"""Per-array checksums: a hand-written numpy reference, sharding independence, every flipped bit detected."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from flanx.training import checksums

REPO = pathlib.Path(__file__).resolve().parents[2]
M32 = 2**32


def reference_checksum(x: np.ndarray) -> str:
  """The documented formula in plain Python integers, element by element."""
  words = x.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]).reshape(-1)

  def mix(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % M32
    return h ^ (h >> 16)

  first = second = 0
  for i, w in enumerate(int(v) for v in words):
    first = (first + w * (mix(i) | 1)) % M32
    second = (second + w * (mix(i ^ 0x9E3779B9) | 1)) % M32
  shape = ','.join(str(d) for d in x.shape)
  return f'{x.dtype.name}[{shape}]:{first:08x}{second:08x}'


def test_matches_the_reference_formula():
  rng = np.random.default_rng(0)
  arrays = {'f32': rng.standard_normal((5, 7)).astype(np.float32),
            'bf16': rng.standard_normal((3, 4, 2)).astype(ml_dtypes.bfloat16),
            'i32': np.arange(-6, 6, dtype=np.int32), 'scalar': np.float32(3.5)}
  sums = checksums.tree_checksums({k: jnp.asarray(v) for k, v in arrays.items()})
  for name, x in arrays.items():
    assert sums[f"['{name}']"] == reference_checksum(np.asarray(x)), name


def test_every_single_bit_flip_changes_the_checksum():
  bits = np.random.default_rng(1).integers(0, 2**32, (4, 8), dtype=np.uint32)  # raw words: no NaN canonicalizing
  base = checksums.tree_checksums([bits])['[0]']
  for i in range(bits.size):
    for b in range(32):
      flipped = bits.copy().reshape(-1)
      flipped[i] ^= np.uint32(1 << b)
      assert checksums.tree_checksums([flipped.reshape(bits.shape)])['[0]'] != base, (i, b)
  assert checksums.mismatches({'a': '1', 'b': '2'}, {'a': '1', 'b': '3', 'c': '4'}) == ['b', 'c']


_SHARDED = '''
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flanx.training import checksums
x = np.random.default_rng(2).standard_normal((8, 6)).astype(np.float32)
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ('data', 'model'))
sharded = jax.device_put(x, NamedSharding(mesh, P('data', 'model')))
print('CHECKSUMS', checksums.tree_checksums([sharded])['[0]'], checksums.tree_checksums([x])['[0]'])
'''


def test_same_value_on_any_sharding():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  out = subprocess.run([sys.executable, '-c', _SHARDED], env=env, capture_output=True, text=True, timeout=300)
  line = [l for l in out.stdout.splitlines() if l.startswith('CHECKSUMS')]
  assert line, out.stderr[-2000:]
  _, sharded, whole = line[0].split()
  assert sharded == whole


_MANY_SHARDED = '''
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flanx.training import checksums
mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
specs = [P('data', 'model'), P('model', 'data'), P(None, 'model'), P('data', None)]
tree = [jax.device_put(np.full((32, 16), i, np.float32), NamedSharding(mesh, specs[i % 4])) for i in range(200)]
sums = checksums.tree_checksums(tree)
print('CHECKSUMS', len(set(sums.values())))
'''


def test_a_sharded_tree_on_eight_cpu_devices_does_not_hang():
  """200 arrays over a 4 x 2 mesh of CPU devices in one process: the per-array programs, all queued at once, hung
  XLA:CPU on the first tree (every pool thread held by a program part waiting for partners queued behind it;
  XLA aborts after 60 s); waited for one at a time they take about a second."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, '-c', _MANY_SHARDED], env=env, capture_output=True, text=True, timeout=300)
  line = [l for l in out.stdout.splitlines() if l.startswith('CHECKSUMS')]
  assert out.returncode == 0 and line, out.stderr[-2000:]
  assert line[0].split()[1] == '200'  # every array's own value
