"""Per-array checksums of a train state that do not depend on how the arrays are sharded.

Each array's raw bits (as unsigned integers) are summed with a pseudo-random odd weight per element, derived
from the element's position in the whole (global) array, modulo 2**32, twice with independent weights. Sums
modulo 2**32 can be taken shard by shard in any order, so the value is the same on any mesh, host count or
device, and computing it is one fused reduction on the devices that hold the data (no gathering). Any single
flipped bit changes it (an odd weight times 2**k is never 0 mod 2**32); random damage escapes with probability
about 2**-64.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
_GOLDEN = 0x9E3779B9


def _mix(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finalizer: spreads consecutive indices over all 32 bits."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _as_words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (64-bit elements become two words, along a new last axis)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = jnp.dtype(x.dtype).itemsize
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _array_checksum(x: jax.Array) -> jax.Array:
  words = _as_words(x)
  index = jnp.zeros(words.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(words.ndim)):  # row-major position in the global array (mod 2**32)
    index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride % 2**32)
    stride *= words.shape[axis]
  first = jnp.sum(words * (_mix(index) | jnp.uint32(1)), dtype=jnp.uint32)
  second = jnp.sum(words * (_mix(index ^ jnp.uint32(_GOLDEN)) | jnp.uint32(1)), dtype=jnp.uint32)
  return jnp.stack([first, second])


@functools.lru_cache(maxsize=None)
def _compiled(shape: tuple, dtype: Any, sharding: Any, weak_type: bool) -> Any:
  """The checksum program for one array signature, compiled once per process.

  One program per distinct (shape, dtype, sharding), shared by every tree: a T5's state has a dozen distinct ones
  among hundreds of arrays (one program for a whole tree was traced, lowered and compiled, or read from the compile
  cache, again for each tree). Kept here rather than in jit's own cache, which also keys on the caller's mesh
  context: a restore (outside the train loop's mesh) and the saves (inside it) would trace each program twice.
  """
  abstract = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding, weak_type=weak_type)
  return jax.jit(_array_checksum).lower(abstract).compile()


def _checksum(x: jax.Array) -> jax.Array:
  return _compiled(x.shape, x.dtype, x.sharding, x.weak_type)(x)


@jax.jit
def _tree_checksums(tree: PyTree) -> PyTree:
  return jax.tree.map(_array_checksum, tree)


def tree_checksums(tree: PyTree) -> dict[str, str]:
  """{path: 'dtype[shape]:16 hex digits'} for every array leaf of `tree` (jax or numpy arrays)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  arrays = [x if isinstance(x, jax.Array) else np.asarray(x) for _, x in leaves]
  if all(isinstance(x, jax.Array) for x in arrays):
    if jax.process_count() > 1:  # one program for the tree: the per-array programs, dispatched back to back,
      sums = _tree_checksums(arrays)  # deadlocked a 4-process CPU run (tests/e2e/test_data_layout_runs.py)
    else:  # all dispatched at once, each on the devices holding it (one at a time where that would deadlock)
      sums = [jax.block_until_ready(_checksum(x)) if _shares_cpu_threads(x) else _checksum(x) for x in arrays]
  else:  # host arrays (e.g. an import): one at a time, so at most one extra copy exists on the device
    sums = [jax.block_until_ready(_checksum(jnp.asarray(x))) for x in arrays]
  out = {}
  for (path, _), x, pair in zip(leaves, arrays, sums):
    first, second = (int(v) for v in np.asarray(jax.device_get(_replicated(pair))))
    shape = ','.join(str(d) for d in x.shape)
    out[jax.tree_util.keystr(path)] = f'{jnp.dtype(x.dtype).name}[{shape}]:{first:08x}{second:08x}'
  return out


def _shares_cpu_threads(x: jax.Array) -> bool:
  """Whether x spans several CPU devices, whose programs must not be queued back to back.

  XLA:CPU runs each device's part of a program on one shared thread pool and caps the programs in flight per
  device. Independent programs with collectives, dispatched back to back, can fill every thread with parts that
  wait for partners queued behind them: a single process with 8 CPU devices hung saving a checkpoint, 3 threads
  in an all-reduce and 5 waiting on the per-device cap (tests/e2e/test_train_runs.py, about 1 run in 3).
  """
  devices = x.sharding.device_set
  return len(devices) > 1 and next(iter(devices)).platform == 'cpu'


def _replicated(pair: jax.Array) -> jax.Array:
  """The 2-word result as a host value (on several hosts, gathered whatever sharding XLA chose for it)."""
  if pair.is_fully_addressable:
    return pair
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(pair, tiled=True)


def mismatches(recorded: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
  """Paths whose checksum differs, or that exist on one side only."""
  return sorted(k for k in set(recorded) | set(actual) if recorded.get(k) != actual.get(k))
