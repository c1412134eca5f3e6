"""Cloud TPU slices by their gcloud accelerator-type name (v3-128, v4-64, v5litepod-16, v5p-8, v6e-16).

Each name maps to the slice JAX sees on the real pod: the libtpu topology (`v3:8x8`), the JAX devices (a v3
device is one TensorCore; v4/v5p run in megacore mode, one device per chip; v5e/v6e have one core per chip),
the hosts (one JAX process per TPU VM worker) and the HBM of one device. Figures are Google's published ones
(cloud.google.com/tpu/docs/v3, v4, v5e, v5p, v6e): chips per slice, cores per chip, HBM per chip, chips per
host. `usable_hbm_gib` is what libtpu 0.0.42's compiler lets one device use (from its out-of-memory message),
slightly below the nominal HBM.

`compile_only_devices(slice)` returns libtpu's compile-only devices for a slice: they can be used to build
meshes and compile, never to run anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation: how its accelerator names count, and its per-chip figures."""
  name: str  # libtpu's topology prefix: v3, v4, v5e, v5p, v6e
  pattern: str  # gcloud accelerator-type name, N captured
  counts: str  # what N counts: 'cores' (v3/v4/v5p: 2 TensorCores per chip) or 'chips' (v5e/v6e)
  cores_per_chip: int
  megacore: bool  # one JAX device per chip (v4, v5p) instead of one per TensorCore
  hbm_gib_per_chip: float  # Google's published HBM per chip
  usable_hbm_gib_per_device: float  # libtpu's limit per device
  peak_tflops_per_chip: float  # bf16
  chips_per_host: int  # chips one TPU VM worker drives in a multi-host slice
  sizes: tuple[int, ...]  # the N Google offers
  shapes: dict  # chips -> chip grid


_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16),
              512: (16, 32), 1024: (32, 32)}
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
              256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16),
              6144: (16, 16, 24)}

GENERATIONS = (
    # v3: 2 TensorCores and 32 GiB per chip (16 GiB per core), 123 TFLOPs per chip, 4 chips per host,
    # 2D torus; v3-8 ... v3-2048 (1024 chips).
    Generation('v3', r'v3-(\d+)', 'cores', 2, False, 32, 15.48, 123, 4, (8, 32, 64, 128, 256, 512, 1024, 2048),
               _SHAPES_2D),
    # v4: 2 TensorCores (megacore) and 32 GiB per chip, 275 TFLOPs, 4 chips per host, 3D; v4-8 ... v4-4096.
    Generation('v4', r'v4-(\d+)', 'cores', 2, True, 32, 30.75, 275, 4,
               (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192), _SHAPES_3D),
    # v5e: 1 TensorCore and 16 GB per chip, 197 TFLOPs, 2D up to 256 chips; slices of 8 chips or fewer are one
    # VM, larger ones use 4-chip VMs.
    Generation('v5e', r'v5litepod-(\d+)', 'chips', 1, False, 16, 15.75, 197, 4, (1, 4, 8, 16, 32, 64, 128, 256),
               _SHAPES_2D),
    # v5p: 2 TensorCores (megacore) and 95 GB per chip, 459 TFLOPs, 4 chips per host, 3D; v5p-8 ... v5p-12288.
    Generation('v5p', r'v5p-(\d+)', 'cores', 2, True, 95, 95.74, 459, 4,
               (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 12288), _SHAPES_3D),
    # v6e (Trillium): 1 TensorCore and 32 GB per chip, 918 TFLOPs, 2D up to 256 chips; like v5e, 8 chips or
    # fewer are one VM, larger slices use 4-chip VMs.
    Generation('v6e', r'v6e-(\d+)', 'chips', 1, False, 32, 31.25, 918, 4, (1, 4, 8, 16, 32, 64, 128, 256),
               _SHAPES_2D),
)


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  """A TPU slice as JAX sees it on the real pod."""
  accelerator: str  # gcloud name, e.g. v3-128
  generation: Generation
  chips: int
  devices: int  # JAX devices
  hosts: int  # JAX processes (TPU VM workers)
  shape: tuple[int, ...]  # chip grid

  @property
  def topology(self) -> str:
    """libtpu's topology name, e.g. v3:8x8 or v4:4x4x4."""
    return f'{self.generation.name}:' + 'x'.join(str(n) for n in self.shape)

  @property
  def hbm_bytes_per_device(self) -> int:
    """Google's published HBM of one JAX device (a v3 core gets half its chip's 32 GiB)."""
    per_device_chips = 1 if self.generation.megacore else 1 / self.generation.cores_per_chip
    return int(self.generation.hbm_gib_per_chip * per_device_chips * GIB)

  @property
  def usable_hbm_bytes_per_device(self) -> int:
    """What the TPU compiler lets one device use (a little below the published HBM)."""
    return int(self.generation.usable_hbm_gib_per_device * GIB)

  @property
  def peak_flops_per_device(self) -> float:
    """bf16 peak FLOP/s of one JAX device."""
    return self.generation.peak_tflops_per_chip * 1e12 * self.chips / self.devices


def known_accelerators() -> list[str]:
  """Every accelerator-type name this module maps, in order."""
  prefix = {'v3': 'v3-', 'v4': 'v4-', 'v5e': 'v5litepod-', 'v5p': 'v5p-', 'v6e': 'v6e-'}
  return [prefix[g.name] + str(n) for g in GENERATIONS for n in g.sizes if _chips(g, n) in g.shapes]


def _chips(generation: Generation, n: int) -> int:
  return n // generation.cores_per_chip if generation.counts == 'cores' else n


def parse(accelerator: str) -> TpuSlice:
  """The slice of a gcloud accelerator-type name; a ValueError names the offered sizes otherwise."""
  for generation in GENERATIONS:
    match = re.fullmatch(generation.pattern, accelerator.strip())
    if not match:
      continue
    n = int(match.group(1))
    chips = _chips(generation, n)
    if n not in generation.sizes or chips not in generation.shapes:
      offered = ', '.join(generation.pattern.replace(r'(\d+)', str(s)).replace('\\', '') for s in generation.sizes
                          if _chips(generation, s) in generation.shapes)
      raise ValueError(f'unknown TPU accelerator type {accelerator!r}; {generation.name} slices are: {offered}')
    devices = chips if generation.megacore or generation.cores_per_chip == 1 else chips * generation.cores_per_chip
    hosts = 1 if chips <= 8 and generation.counts == 'chips' else max(1, chips // generation.chips_per_host)
    return TpuSlice(accelerator.strip(), generation, chips, devices, hosts, generation.shapes[chips])
  raise ValueError(f'unknown TPU accelerator type {accelerator!r}: expected a gcloud name such as v3-8, v3-128, '
                   'v4-8, v4-64, v5litepod-16, v5p-8 or v6e-16')


def _chips_per_host_bounds(tpu: TpuSlice) -> tuple[int, int, int]:
  """Chip grid one host drives: 2x2x1 (4 chips) in multi-host slices, the whole slice on a single host."""
  if tpu.hosts == 1:
    return tuple(tpu.shape) + (1,) * (3 - len(tpu.shape))
  return (2, 2, 1)


def compile_only_devices(tpu: TpuSlice) -> list[Any]:
  """libtpu's compile-only devices of the slice (needs the libtpu wheel; works with JAX_PLATFORMS=cpu)."""
  os.environ['TPU_ACCELERATOR_TYPE'] = tpu.accelerator  # libtpu warns without it; compile-only never runs here
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')  # no metadata-server lookup off a TPU VM
  # libtpu lets one process at a time hold /tmp/libtpu_lockfile (the chips); compiling touches no chip, so
  # compile-only checks may run side by side, and next to a real run on a TPU VM.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies
  kwargs = {'chips_per_host_bounds': _chips_per_host_bounds(tpu), 'num_slices': 1}
  if tpu.generation.megacore:
    kwargs['chip_config_name'] = 'megacore'
  try:
    description = topologies.get_topology_desc(topology_name=tpu.topology, platform='tpu', **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    hint = ''
    if 'libtpu' in str(e).lower() or isinstance(e, (ImportError, RuntimeError)):
      hint = " (compiling for TPUs needs the libtpu wheel: pip install 'libtpu==0.0.42.*')"
    raise RuntimeError(f'cannot describe TPU topology {tpu.topology} for {tpu.accelerator}: {e}{hint}') from e
  devices = list(description.devices)
  hosts = len({d.process_index for d in devices})
  if len(devices) != tpu.devices or hosts != tpu.hosts:
    raise RuntimeError(f'libtpu describes {tpu.accelerator} ({tpu.topology}) as {len(devices)} devices on {hosts} '
                       f'hosts; expected {tpu.devices} devices on {tpu.hosts} hosts')
  return devices


def describe(tpu: TpuSlice) -> str:
  """One line: name, topology, chips, devices, hosts and HBM per device."""
  return (f'{tpu.accelerator} (topology {tpu.topology}): {tpu.chips} chips, {tpu.devices} devices on {tpu.hosts} '
          f'host{"s" if tpu.hosts > 1 else ""}, {tpu.hbm_bytes_per_device / GIB:g} GiB HBM per device '
          f'({tpu.usable_hbm_bytes_per_device / GIB:g} GiB usable)')


def devices_per_host(tpu: TpuSlice) -> int:
  """JAX devices on one host."""
  return math.ceil(tpu.devices / tpu.hosts)
