"""Compile-only check: will this run fit its TPU pod? Answered on a CPU machine, before anyone pays for the pod.

`python -m flanx.train <the flags of the real run> --topology=v3-128 --compile_only` (also flanx.eval and
flanx.infer) builds the mesh and shardings the real run builds, on libtpu's compile-only devices of that slice
(hosts included), lowers the real jitted step with abstract inputs (no params allocated, no data read, no
checkpoint or MODEL_DIR touched), compiles it for the TPU and reports the per-device memory XLA plans against
the chip's HBM. Exit status: 0 fits, 3 does not fit, 1 error. `--compile_report=PATH` writes the report as
JSON; `--suggest` recompiles with memory levers (remat, fsdp, a larger model axis, microbatches) and says
which fit; `--step_time=SECONDS` turns the model FLOPs per step into MFU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import resource
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from flanx.training import tpu_topology

EXIT_FITS, EXIT_ERROR, EXIT_DOES_NOT_FIT = 0, 1, 3
GIB = 2 ** 30
_UNITS = {'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


class CompileCheckError(ValueError):
  """A configuration the pod would reject before compiling (batch split across hosts, microbatches...)."""


@dataclasses.dataclass
class StepMemory:
  """XLA's per-device memory plan of one compiled step (bytes), or the compiler's out-of-memory verdict."""
  name: str
  arguments: int
  outputs: int
  aliased: int  # outputs written into donated arguments (counted once)
  temporaries: int | None  # None when the compiler ran out of memory before planning them
  generated_code: int
  compile_seconds: float
  compiled_flops_per_device: float | None = None
  out_of_memory: str | None = None  # the compiler's message
  required: int | None = None  # what the compiler said it needed, when it ran out
  abstract_argument_bytes: int = 0  # the arguments' shard sizes before XLA's layout padding
  compiled: Any = dataclasses.field(default=None, repr=False)  # the TPU executable (never run)
  abstract_args: Any = dataclasses.field(default=None, repr=False)  # what was lowered (sharded ShapeDtypeStructs)

  @property
  def total(self) -> int:
    """Peak bytes one device holds: arguments + outputs not aliased to them + temporaries + program."""
    if self.out_of_memory is not None:
      return self.required if self.required is not None else self.arguments
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code


@dataclasses.dataclass
class Report:
  """What the compile-only check found, printable and JSON-able."""
  mode: str
  tpu: tpu_topology.TpuSlice
  mesh: dict[str, int]
  steps: list[StepMemory]
  batch_size: int
  per_host_batch: int
  model_flops_per_step: float | None = None
  step_time: float | None = None
  levers: dict[str, Any] = dataclasses.field(default_factory=dict)  # what this compile used
  suggestions: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def limit(self) -> int:
    return self.tpu.usable_hbm_bytes_per_device

  @property
  def worst(self) -> StepMemory:
    return max(self.steps, key=lambda s: s.total)

  @property
  def fits(self) -> bool:
    return all(s.out_of_memory is None and s.total <= self.limit for s in self.steps)

  @property
  def mfu(self) -> float | None:
    if not (self.model_flops_per_step and self.step_time):
      return None
    return self.model_flops_per_step / self.step_time / (self.tpu.peak_flops_per_device * self.tpu.devices)

  def to_json(self) -> dict:
    """The JSON of --compile_report (the worst step's figures at the top level, every step under 'steps')."""
    worst = self.worst
    return {
        'topology': self.tpu.topology, 'accelerator': self.tpu.accelerator, 'mode': self.mode,
        'num_devices': self.tpu.devices, 'num_hosts': self.tpu.hosts, 'mesh': self.mesh,
        'per_device_bytes': _bytes_json(worst), 'hbm_bytes_per_device': self.tpu.hbm_bytes_per_device,
        'usable_hbm_bytes_per_device': self.limit, 'fits': self.fits, 'headroom_bytes': self.limit - worst.total,
        'compile_seconds': round(sum(s.compile_seconds for s in self.steps), 2),
        'batch_size': self.batch_size, 'per_host_batch': self.per_host_batch, 'levers': self.levers,
        'model_flops_per_step': self.model_flops_per_step, 'step_time': self.step_time, 'mfu': self.mfu,
        'steps': {s.name: {**_bytes_json(s), 'compile_seconds': round(s.compile_seconds, 2),
                           'compiled_flops_per_device': s.compiled_flops_per_device,
                           'out_of_memory': s.out_of_memory} for s in self.steps},
        'suggestions': self.suggestions,
    }

  def text(self) -> str:
    """The human-readable report."""
    gib = lambda b: f'{b / GIB:.2f} GiB' if b is not None else 'n/a'
    lines = [f'compile-only check of flanx.{self.mode} for {tpu_topology.describe(self.tpu)}',
             f'  mesh: {" x ".join(f"{k}={v}" for k, v in self.mesh.items())}; batch {self.batch_size} '
             f'({self.per_host_batch} per host); {", ".join(f"{k}={v}" for k, v in self.levers.items())}']
    for s in self.steps:
      if s.out_of_memory is not None:
        lines.append(f'  {s.name}: does not fit: {s.out_of_memory} (compiled in {s.compile_seconds:.1f}s)')
        continue
      lines.append(f'  {s.name}: per device arguments {gib(s.arguments)}, outputs {gib(s.outputs)} '
                   f'({gib(s.aliased)} aliased to arguments), temporaries {gib(s.temporaries)}, '
                   f'code {gib(s.generated_code)}, total {gib(s.total)} of {gib(self.limit)} usable '
                   f'({self.tpu.hbm_bytes_per_device / GIB:g} GiB HBM); compiled in {s.compile_seconds:.1f}s')
    worst = self.worst
    verdict = 'fits' if self.fits else 'DOES NOT FIT'
    lines.append(f'  {verdict}: {gib(worst.total)} per device, headroom {gib(self.limit - worst.total)} '
                 f'({100 * (self.limit - worst.total) / self.limit:.0f}%)')
    if self.model_flops_per_step:
      line = f'  model FLOPs per step: {self.model_flops_per_step:.4g}'
      if self.mfu is not None:
        line += f'; at {self.step_time:g} s/step MFU = {100 * self.mfu:.1f}%'
      else:
        line += ' (pass --step_time=SECONDS for the MFU it implies)'
      lines.append(line)
    for s in self.suggestions:
      status = (f'fits, {gib(s["total_bytes"])} per device' if s['fits'] else
                f'does not fit ({gib(s["total_bytes"])})' if s.get('total_bytes') else f'error: {s.get("error")}')
      lines.append(f'  lever {s["lever"]}: {status}  [{" ".join(s["flags"])}]')
    if not self.fits and not self.suggestions:
      lines.append('  levers that lower memory: ' + '; '.join(_lever_hints(self)) + ' (--suggest tries them)')
    return '\n'.join(lines)


def _bytes_json(s: StepMemory) -> dict:
  return {'arguments': s.arguments, 'outputs': s.outputs, 'aliased': s.aliased, 'temporaries': s.temporaries,
          'generated_code': s.generated_code, 'total': s.total}


# ----------------------------------------------------------------------------------------------
# Reading the run's gin configuration


def bound_arguments(fn: Callable) -> dict[str, Any]:
  """The keyword arguments a gin-configurable `fn` would receive now: its defaults, then gin's bindings."""
  import gin
  signature = inspect.signature(fn)
  values = {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
  values.update(gin.get_bindings(fn))
  return values


def _required(values: Mapping[str, Any], name: str, fn_name: str) -> Any:
  import gin
  value = values.get(name, gin.REQUIRED)
  if value is gin.REQUIRED or value is None:
    raise CompileCheckError(f'{fn_name}.{name} is not set (bind it in a gin file or with --gin.)')
  return value


# ----------------------------------------------------------------------------------------------
# Abstract inputs, data layout and compilation


def abstract_batch(batch_size: int, lengths: Mapping[str, int], pack: bool, sharding: Any) -> dict:
  """ShapeDtypeStructs of a training batch as seqio's EncDecFeatureConverter yields it (int32)."""
  import jax
  import jax.numpy as jnp
  inputs, targets = lengths['inputs'], lengths['targets']
  features = {'encoder_input_tokens': inputs, 'decoder_target_tokens': targets, 'decoder_input_tokens': targets,
              'decoder_loss_weights': targets}
  if pack:
    features.update(encoder_segment_ids=inputs, decoder_segment_ids=targets, encoder_positions=inputs,
                    decoder_positions=targets)
  return {k: jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=sharding) for k, n in features.items()}


def check_host_batches(batch_size: int, sharding: Any, hosts: int) -> int:
  """The rows each host loads (as data.get_dataset splits them on the mesh); errors when the mesh cannot take them.

  The hosts' input follows flanx.training.data_layout (t5x's): hosts whose devices hold the same rows of the global
  batch (a model axis spanning hosts) form a replica set and load the same batch_size / replica sets rows; the
  mesh must give every host one contiguous block of rows, of the same size.
  """
  from flanx.training import data_layout  # pylint: disable=g-import-not-at-top
  if batch_size % hosts:
    raise CompileCheckError(f'BATCH_SIZE={batch_size} is not divisible by the {hosts} hosts of the slice')
  try:
    first = min(d.process_index for d in sharding.mesh.devices.flat)
    return data_layout.data_layout(sharding.mesh, batch_size, first).host_batch_size
  except ValueError as e:
    raise CompileCheckError(f'the mesh {dict(sharding.mesh.shape)} cannot be fed: {e}; change make_mesh.model or '
                            'BATCH_SIZE') from e


def per_device_bytes(tree: Any) -> int:
  """Bytes one device holds for a tree of sharded ShapeDtypeStructs (before XLA's layout padding)."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, 'sharding', None) is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def _parse_size(text: str) -> int | None:
  match = re.fullmatch(r'([\d.]+)\s*([KMGT])i?B?', text.strip())
  return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else None


def compile_step(name: str, jitted: Any, *args: Any) -> StepMemory:
  """Lowers and compiles `jitted(*args)` (abstract args) and reads XLA's memory plan."""
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*args).compile()
  except Exception as e:  # pylint: disable=broad-except
    message = str(e)
    if 'RESOURCE_EXHAUSTED' not in message and 'Ran out of memory' not in message:
      raise
    message = message.replace('RESOURCE_EXHAUSTED:', '').strip().splitlines()[0]
    required = re.search(r'required[^(]*\(([\d.]+\s*[KMGT])', message)
    return StepMemory(name, per_device_bytes(args), 0, 0, None, 0, time.perf_counter() - start,
                      out_of_memory=message, required=_parse_size(required.group(1)) if required else None,
                      abstract_argument_bytes=per_device_bytes(args))
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops')) if cost and cost.get('flops') is not None else None
  except Exception:  # pylint: disable=broad-except  # cost analysis is optional information
    flops = None
  return StepMemory(name, memory.argument_size_in_bytes, memory.output_size_in_bytes, memory.alias_size_in_bytes,
                    memory.temp_size_in_bytes, memory.generated_code_size_in_bytes, seconds, flops,
                    abstract_argument_bytes=per_device_bytes(args), compiled=compiled, abstract_args=args)


# ----------------------------------------------------------------------------------------------
# The three modes


@dataclasses.dataclass(frozen=True)
class Levers:
  """Memory levers a --suggest run may change; None keeps the run's own (gin) setting."""
  remat: str | None = None
  fsdp: bool | None = None
  model: int | None = None
  num_microbatches: int | None = None


def check_train(tpu: tpu_topology.TpuSlice, devices: Sequence[Any], levers: Levers = Levers()) -> Report:
  """Compiles the real train step of the gin-configured run for the slice.

  The set-up is the trainer's own (flanx.training.run_builder.build_train: the PEFT config, the run's argument
  checks, the task name before any compile, the optimizer over the trained part, the mesh, the batch checks, the
  shardings and the step), on the slice's devices and hosts with `levers` applied.
  """
  from flanx.model import flops
  from flanx.training import loop, run_builder, steps
  values = bound_arguments(loop.train)
  if levers.num_microbatches is not None:
    values['num_microbatches'] = levers.num_microbatches
  setup = run_builder.build_train(values, devices=devices, hosts=tpu.hosts, remat=levers.remat,
                                  model_axis=levers.model, fsdp=levers.fsdp)
  config, shardings, lengths = setup.config, setup.shardings, dict(setup.arguments['task_feature_lengths'])
  batch_size = int(setup.arguments['batch_size'])
  per_host = check_host_batches(batch_size, shardings.batch, tpu.hosts)
  with setup.mesh, steps.activation_rules(shardings):
    memory = compile_step('train_step', setup.train_step(), setup.abstract_state(), setup.abstract_batch())
  used = {'remat': config.remat, 'scan_layers': config.scan_layers, 'fsdp': dict(shardings.rules).get('embed') == 'data',
          'num_microbatches': setup.arguments['num_microbatches'], 'dtype': config.dtype,
          'peft': setup.arguments['peft']}
  return Report('train', tpu, dict(setup.mesh.shape), [memory], batch_size, per_host,
                flops.train_flops(config, lengths['inputs'], lengths['targets']) * batch_size, levers=used)


def check_decode(mode: str, tpu: tpu_topology.TpuSlice, devices: Sequence[Any], levers: Levers = Levers()) -> Report:
  """Compiles the decode step (and, for eval, the teacher-forced scoring step) of an eval or infer run, as
  InferenceModel builds them (flanx.training.run_builder.build_inference)."""
  import jax
  import jax.numpy as jnp
  from flanx.inference import predict
  from flanx.training import run_builder, steps
  if mode == 'eval':
    from flanx.inference.evaluate import evaluate as entry
  else:
    from flanx.inference.infer import infer as entry
  name = entry.__name__
  values = bound_arguments(entry)
  config = run_builder.model_config(values.get('model_config'), values.get('peft'), levers.remat)
  batch_size = int(_required(values, 'batch_size', name))
  lengths = dict(_required(values, 'task_feature_lengths', name))
  options = predict.decode_options()
  # As InferenceModel: params only (no optimizer), every host holds the whole padded batch.
  inference = run_builder.build_inference(config, options, devices=devices, model_axis=levers.model, fsdp=levers.fsdp)
  mesh, shardings = inference.mesh, inference.shardings
  if batch_size % mesh.shape['data']:
    raise CompileCheckError(f'{name}.batch_size={batch_size} is not divisible by the mesh data axis '
                            f'({mesh.shape["data"]})')
  from flanx.model import network
  params = steps.with_shardings(network.abstract_params(config), shardings.model_params)
  token_rows = lambda n: jax.ShapeDtypeStruct((batch_size, n), jnp.int32, sharding=shardings.batch)
  memories = []
  with mesh, steps.activation_rules(shardings):
    step_index = jax.ShapeDtypeStruct((), jnp.int32)
    memories.append(compile_step(f'decode_step ({options["mode"]}, {options["max_decode_length"]} tokens)',
                                 inference.predict, params, token_rows(lengths['inputs']), step_index))
    if mode == 'eval':  # InferenceModel.score: the teacher-forced eval step, per example
      batch = {'encoder_input_tokens': token_rows(lengths['inputs']),
               'decoder_input_tokens': token_rows(lengths['targets']),
               'decoder_target_tokens': token_rows(lengths['targets']),
               'decoder_loss_weights': token_rows(lengths['targets'])}
      memories.append(compile_step('score_step', inference.score, params, batch))
  used = {'remat': config.remat, 'scan_layers': config.scan_layers, 'fsdp': dict(shardings.rules).get('embed') == 'data',
          'dtype': config.dtype, 'decode_mode': options['mode'], 'peft': values.get('peft')}
  return Report(mode, tpu, dict(mesh.shape), memories, batch_size, batch_size, levers=used)


def check(mode: str, accelerator: str, levers: Levers = Levers()) -> Report:
  """The compile-only report of the gin-configured `mode` run ('train', 'eval', 'infer') on a TPU slice."""
  tpu = tpu_topology.parse(accelerator)
  devices = tpu_topology.compile_only_devices(tpu)
  if mode == 'train':
    return check_train(tpu, devices, levers)
  return check_decode(mode, tpu, devices, levers)


# ----------------------------------------------------------------------------------------------
# Levers


def lever_flags(levers: Levers) -> list[str]:
  """The --gin flags that apply `levers` to the real run."""
  flags = []
  if levers.remat is not None:
    flags.append(f"--gin.T5Config.remat='{levers.remat}'")
  if levers.fsdp is not None:
    flags.append(f'--gin.axis_rules.fsdp={levers.fsdp}')
  if levers.model is not None:
    flags.append(f'--gin.make_mesh.model={levers.model}')
  if levers.num_microbatches is not None:
    flags.append(f'--gin.train.num_microbatches={levers.num_microbatches}')
  return flags


def candidate_levers(report: Report) -> list[tuple[str, Levers]]:
  """Single levers not yet in use, then all of them together, cheapest first."""
  used, mesh = report.levers, report.mesh
  singles = []
  if report.mode == 'train' and used.get('remat') != 'full':  # decoding keeps no activations for a backward pass
    singles.append(('remat full', Levers(remat='full')))
  if not used.get('fsdp'):
    singles.append(('fsdp', Levers(fsdp=True)))
  model = mesh['model'] * 2
  if report.tpu.devices % model == 0 and report.batch_size % (report.tpu.devices // model) == 0:
    singles.append((f'model axis {model}', Levers(model=model)))
  if report.mode == 'train':
    data = mesh['data']
    for k in (2, 4, 8):
      if report.batch_size % (k * data) == 0 and k > used.get('num_microbatches', 1):
        singles.append((f'{k} microbatches', Levers(num_microbatches=k)))
        break
  if len(singles) > 1:
    merged = Levers(**{f.name: next((getattr(l, f.name) for _, l in singles if getattr(l, f.name) is not None), None)
                       for f in dataclasses.fields(Levers)})
    singles.append(('all of the above', merged))
  return singles


def _lever_hints(report: Report) -> list[str]:
  return [f'{name} ({" ".join(lever_flags(l))})' for name, l in candidate_levers(report)[:4]] or ['none left']


def suggest(report: Report) -> list[dict[str, Any]]:
  """Recompiles with each lever and records which fit and with how much memory."""
  results = []
  for name, levers in candidate_levers(report):
    entry = {'lever': name, 'flags': lever_flags(levers)}
    try:
      trial = check(report.mode, report.tpu.accelerator, levers)
      entry.update(fits=trial.fits, total_bytes=trial.worst.total, mesh=trial.mesh)
    except (CompileCheckError, ValueError) as e:
      entry.update(fits=False, error=str(e))
    print(f'  tried {name}: {"fits" if entry.get("fits") else "does not fit"}', file=sys.stderr, flush=True)
    results.append(entry)
    if entry.get('fits') and name != 'all of the above':
      break  # one working lever is the answer; the cheapest comes first
  return results


# ----------------------------------------------------------------------------------------------
# Command line


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The compile-only flags of flanx.train / flanx.eval / flanx.infer."""
  group = parser.add_argument_group('compile-only check (compiles for a TPU pod on this machine, runs nothing)')
  group.add_argument('--topology', default=None,
                     help='gcloud accelerator type of the pod, e.g. v3-128, v4-64, v5litepod-16, v5p-8, v6e-16')
  group.add_argument('--compile_only', action='store_true', help='compile the step for --topology and report memory')
  group.add_argument('--compile_report', default=None, help='also write the report as JSON to this path')
  group.add_argument('--suggest', action='store_true', help='when it does not fit, try memory levers and report')
  group.add_argument('--step_time', type=float, default=None, help='seconds per step, for the MFU it implies')


def flag_parser() -> argparse.ArgumentParser:
  """The compile-only flags as a parent parser (the commands' --help lists them)."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  add_flags(parser)
  return parser


def requested(argv: Sequence[str]) -> bool:
  """Whether a command line asks for the compile-only check (or passes one of its flags)."""
  names = ('--compile_only', '--topology', '--compile_report', '--suggest', '--step_time')
  return any(a == n or a.startswith(n + '=') for a in argv for n in names)


_STACK_RAISED = 'FLANX_COMPILE_STACK_RAISED'


def restart_with_compiler_stack(argv: Sequence[str]) -> None:
  """For a compile-only command line: restarts the process with the stack limit raised (as `ulimit -s unlimited`).

  libtpu's compiler works in threads whose stacks glibc sizes from the RLIMIT_STACK the process started with; at
  the usual 8 MiB its convolution emitter overflows (SIGSEGV) on the XXL and UL2 train steps of v4 pods. The
  limit must be raised before the process starts, hence the exec. Nothing happens when the limit is already
  unlimited, cannot be raised, or this is the restarted process.
  """
  if not requested(argv) or os.environ.get(_STACK_RAISED):
    return
  soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
  if soft == resource.RLIM_INFINITY or soft == hard:
    return
  resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))
  os.environ[_STACK_RAISED] = '1'
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)


def force_cpu_backend() -> None:
  """Compile-only never runs on the TPU it compiles for: keep JAX's own backend on the CPU."""
  os.environ['JAX_PLATFORMS'] = 'cpu'
  import jax
  with contextlib.suppress(Exception):  # already initialised (tests): jax keeps what it has
    jax.config.update('jax_platforms', 'cpu')


def main(mode: str, argv: Sequence[str], description: str = '') -> int:
  """`python -m flanx.<mode> ... --topology=T --compile_only`: prints the report; returns the exit status."""
  from flanx import gin_config
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing to save: a SIGTERM ends the check at once
  own = flag_parser()
  try:
    args, rest = own.parse_known_args(list(argv))
    run_args, files, bindings = gin_config.parse_args(rest, description, [own])
    if not (args.compile_only and args.topology):
      raise CompileCheckError('the compile-only check needs both --topology=ACCELERATOR_TYPE and --compile_only')
    tpu_topology.parse(args.topology)  # bad names fail before any import work
    force_cpu_backend()
    gin_config.parse_gin(files, bindings, run_args.gin_search_paths)
    report = check(mode, args.topology)
    report.step_time = args.step_time
    if args.suggest and not report.fits:
      report.suggestions = suggest(report)
  except Exception as e:  # pylint: disable=broad-except  # exit 1 with the error, never a partial report
    print(f'compile-only check failed: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
    return EXIT_ERROR
  if args.compile_report:  # first: the JSON survives a closed stdout
    path = args.compile_report
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      json.dump(report.to_json(), f, indent=2)
    os.replace(path + '.tmp', path)
  print(report.text(), flush=True)
  return EXIT_FITS if report.fits else EXIT_DOES_NOT_FIT
