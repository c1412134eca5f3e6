"""Which library runs the train step's dots on XLA:CPU: XLA's default (YNNPACK), or oneDNN (opt-in, or 'auto').

Why: on an Intel Xeon (2 cores, KVM, AVX-512 + AMX; `lscpu` "Intel(R) Xeon(R) Processor", family 6 model 167)
YNNPACK did the train step's fp32 GEMMs with 7-22% more CPU than torch/MKL, and oneDNN made flan-t5-small's
forward 1.18-1.22x and forward+backward 1.05-1.21x faster, with the same float32 numerics (loss bit-identical,
gradients within 2.2e-6 of their largest value). Measured 2026-12-07 on a loaded machine as paired CPU-time
ratios: BENCHMARKS.md, "Machine kinds: the Intel Xeon fp32 gap"; `python -m benchmarks.xla_cpu_options model`.
oneDNN made greedy decoding 16% slower there (its small GEMVs), so only the train step's executable asks for it,
through `jax.jit(compiler_options=...)`; XLA_FLAGS would apply to every executable of the process. Not measured
on AMD (the EPYC's decode GEMVs were slower with oneDNN too), so 'auto' leaves other CPUs on XLA's default.

Not the default: XLA cannot store a oneDNN executable in the persistent compilation cache ("ToProto is not
implemented for thunk kind: onednn-fusion", jaxlib 0.10.2), so with it every start compiles the train step again
and warns; the compile cache wins for restarts. Ask for it where steps dominate restarts (a long CPU run):
`--gin.train_step_compiler_options.dot_library="'auto'"` (oneDNN on Intel CPUs) or `"'onednn'"` (any CPU).
"""

from __future__ import annotations

import gin

ONEDNN = {  # XLA DebugOptions fields, as XLA_FLAGS would set them (jaxlib 0.10.2)
    'xla_cpu_use_onednn': True,
    'xla_cpu_experimental_onednn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT',
}
DOT_LIBRARIES = ('auto', 'default', 'onednn')


def cpu_vendor(cpuinfo_path: str = '/proc/cpuinfo') -> str | None:
  """The first `vendor_id` in cpuinfo (e.g. 'GenuineIntel', 'AuthenticAMD'); None where there is none."""
  try:
    with open(cpuinfo_path, encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'vendor_id':
          return value.strip()
  except OSError:  # not Linux
    return None
  return None


@gin.configurable(denylist=['cpuinfo_path'])  # a test hook, not a run setting
def train_step_compiler_options(platform: str, dot_library: str = 'default',
                                cpuinfo_path: str = '/proc/cpuinfo') -> dict | None:
  """The train step's `jax.jit` compiler_options for the devices' platform ('cpu', 'tpu', 'gpu'), or None.

  dot_library: 'auto' (oneDNN on a CPU platform whose vendor is GenuineIntel, else XLA's default), 'default'
  (XLA's own choice, YNNPACK on CPU) or 'onednn' (CPU only).
  """
  if dot_library not in DOT_LIBRARIES:
    raise ValueError(f'train_step_compiler_options.dot_library={dot_library!r}: expected one of {DOT_LIBRARIES}')
  if dot_library == 'default':
    return None
  if platform != 'cpu':
    if dot_library == 'onednn':
      raise ValueError(f"train_step_compiler_options.dot_library='onednn' is an XLA:CPU option; the train step "
                       f'runs on {platform!r}')
    return None
  if dot_library == 'onednn' or cpu_vendor(cpuinfo_path) == 'GenuineIntel':
    return dict(ONEDNN)
  return None


def for_mesh(mesh) -> dict | None:
  """The train step's compiler options for a step on `mesh`'s devices (their platform, not the process's default
  backend: the compile-only TPU check runs on a CPU host)."""
  return train_step_compiler_options(mesh.devices.flat[0].platform)
