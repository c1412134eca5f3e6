"""Parameter-efficient tuning on CPU: what full fine-tuning and each PEFT method cost (flan-t5-small shape).

  python -m benchmarks.peft_bench [--batch 8 --inputs 512 --targets 256 --steps 3 --rounds 5 --out runs/peft_bench]

Methods (METHODS below, each built through flanx.model.peft.METHODS, so the benchmark has no per-method code): full
fine-tuning; LoRA r=8 and r=16 on q and v (PEFT's default targets); prompt tuning with 100 tokens; prefix tuning
with 20 positions; (IA)³ with peft's T5 defaults.

1. Every method in ONE process: trainable params, optimizer-state bytes (Adafactor, as the runs use, and Adam),
   bytes of the frozen base, XLA's memory plan of the compiled train step (arguments, outputs, of those aliased to
   donated arguments, temporaries); then the step times (benchmarks/interleave.py): all compiled first, one
   untimed warm-up step each, then rounds that run every method once, the order reversed every round, so a load
   swing hits all methods alike. Medians, per-round times and each method's paired per-round time ratio to full
   fine-tuning.
2. Unless --skip_own_process: each method again in its own process, so the peak RSS (compile included, after a
   few steps) belongs to that method alone.

Random weights and a random unpacked batch; the prompt run's inputs hold its placeholders within the same input
length. Writes results.json (after every stage) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import common, interleave

# Benchmark name → {METHODS registry name: the config's settings} (empty: full fine-tuning).
METHODS = {
    'full': {},
    'lora_r8': {'lora': {'rank': 8, 'alpha': 16.0}},
    'lora_r16': {'lora': {'rank': 16, 'alpha': 32.0}},
    'prompt_100': {'prompt': {'num_virtual_tokens': 100}},
    'prefix_20': {'prefix': {'num_virtual_tokens': 20}},
    'ia3': {'ia3': {}},
}


def _config(method: str, model: str):
  from flanx.model import peft  # pylint: disable=g-import-not-at-top
  config = common.load_config(model, 'float32')
  return config.replace(**{name: peft.METHODS[name](**settings) for name, settings in METHODS[method].items()})


def _nbytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _setup(method: str, args) -> dict:
  """One method's config, mesh, shardings, jitted train step, fresh state and batch on this host's CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.model import network, peft  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor, partitioning, steps  # pylint: disable=g-import-not-at-top
  config = _config(method, args.model)
  axes = steps.trained_part(config, network.logical_axes(config))[0]
  tx = adafactor.adafactor(learning_rate=lambda step: 1e-3, param_axes=axes)
  mesh = partitioning.make_mesh()
  shardings = steps.make_shardings(config, tx, mesh, partitioning.axis_rules())
  with mesh, steps.activation_rules(shardings):
    state = steps.new_state(steps.init_params(config, 0, shardings), tx, shardings)
    step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
  rng = np.random.default_rng(0)
  b, li, lt = args.batch, args.inputs, args.targets
  inputs = rng.integers(3, config.vocab_size, (b, li)).astype(np.int32)
  inputs[:, :peft.prompt_length(config)] = peft.PROMPT_PLACEHOLDER_ID
  targets = rng.integers(3, config.vocab_size, (b, lt)).astype(np.int32)
  batch = {'encoder_input_tokens': inputs, 'decoder_target_tokens': targets,
           'decoder_input_tokens': np.concatenate([np.zeros((b, 1), np.int32), targets[:, :-1]], 1),
           'decoder_loss_weights': np.ones((b, lt), np.float32)}
  return {'config': config, 'mesh': mesh, 'shardings': shardings, 'step': step, 'state': state,
          'batch': jax.device_put(batch, shardings.batch)}


def _compile(side: dict):
  """The side's train step compiled ahead of time for its state and batch (its memory plan is what XLA will use)."""
  from flanx.training import steps  # pylint: disable=g-import-not-at-top
  with side['mesh'], steps.activation_rules(side['shardings']):
    return side['step'].lower(side['state'], side['batch']).compile()


def _stepper(side: dict, compiled):
  """A blocking zero-argument call that runs one train step of `side` and keeps its new state (the old is donated)."""
  import jax  # pylint: disable=g-import-not-at-top

  def call():
    side['state'], metrics = compiled(side['state'], side['batch'])
    jax.block_until_ready((side['state'], metrics))
  return call


def _sizes(method: str, side: dict, compiled) -> dict:
  """Trainable and frozen params, optimizer-state bytes and XLA's memory plan of one method's compiled step."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  state, plan = side['state'], compiled.memory_analysis()
  return {
      'method': method,
      'peft': METHODS[method],
      'trainable_params': sum(x.size for x in jax.tree.leaves(state.params)),
      'frozen_params': sum(x.size for x in jax.tree.leaves(state.frozen)) if state.frozen is not None else 0,
      'frozen_bytes': _nbytes(state.frozen) if state.frozen is not None else 0,
      'adafactor_state_bytes': _nbytes(state.opt_state),
      'adam_state_bytes': _nbytes(jax.eval_shape(optax.adamw(1e-3).init, state.params)),
      'xla_argument_bytes': int(plan.argument_size_in_bytes),
      'xla_output_bytes': int(plan.output_size_in_bytes),
      'xla_alias_bytes': int(plan.alias_size_in_bytes),
      'xla_temp_bytes': int(plan.temp_size_in_bytes),
  }


def worker(method: str, args) -> dict:
  """One method's sizes, memory plan and peak RSS after `args.steps` steps (run in its own process)."""
  side = _setup(method, args)
  compiled = _compile(side)
  step = _stepper(side, compiled)
  timed = common.time_calls(lambda i: step(), warmup=1, steps=max(args.steps - 1, 1))
  return {**_sizes(method, side, compiled), 'peak_rss_bytes': common.peak_rss_bytes(),
          'own_process_step_s': timed['step_times_s']}  # not interleaved: the load of its own moment


def interleaved(args) -> dict:
  """Every method of `args.methods` in one process: sizes and memory plan, then the step times, interleaved
  (benchmarks/interleave.py)."""
  sides, sizes = {}, {}
  for m in args.methods:  # all set up and compiled before any timing, so no round waits on a compile
    side = _setup(m, args)
    compiled = _compile(side)
    sizes[m] = _sizes(m, side, compiled)
    sides[m] = _stepper(side, compiled)
  result = interleave.interleave(sides, rounds=args.rounds)
  result['time_over_full'] = {m: interleave.ratio(result, slow=m, fast='full') for m in args.methods}
  result['sizes'] = sizes
  return result


def _mib(n: int) -> str:
  return f'{n / 2**20:,.1f}'


def _kib(n: int) -> str:
  return f'{n / 2**10:,.1f}'


def markdown(rows: list[dict], timing: dict | None) -> str:
  """The BENCHMARKS.md tables of a run: sizes and memory per method, then the interleaved step times."""
  full = next((r for r in rows if r['method'] == 'full'), None)
  lines = ['| method | trainable params | Adafactor state (KiB) | Adam state (MiB) | XLA plan: args + out + temp, '
           'aliased (MiB) | XLA peak (MiB) | peak RSS, own process (MiB) |', '|---|---|---|---|---|---|---|']
  for r in rows:
    share = f" ({100 * r['trainable_params'] / full['trainable_params']:.2f}%)" if full and r is not full else ''
    xla = (f"{_mib(r['xla_argument_bytes'])} + {_mib(r['xla_output_bytes'])} + {_mib(r['xla_temp_bytes'])}, "
           f"{_mib(r['xla_alias_bytes'])}")
    peak = r['xla_argument_bytes'] + r['xla_output_bytes'] - r['xla_alias_bytes'] + r['xla_temp_bytes']
    rss = _mib(r['peak_rss_bytes']) if 'peak_rss_bytes' in r else 'not run'
    lines.append(f"| {r['method']} | {r['trainable_params']:,}{share} | {_kib(r['adafactor_state_bytes'])} | "
                 f"{_mib(r['adam_state_bytes'])} | {xla} | {_mib(peak)} | {rss} |")
  if timing is None:
    return '\n'.join(lines)
  lines += ['', f"Step time, interleaved in one process ({timing['rounds']} rounds, order reversed every round; load "
            f"{timing['load']['start']} → {timing['load']['end']}):", '',
            '| method | median (s) | per round (s) | time / full: paired median (spread) | process CPU s, median | '
            'CPU / full: paired median |', '|---|---|---|---|---|---|']
  full_cpu = [run['cpu_s'] for run in timing['sides']['full']['runs']]
  for m, side in timing['sides'].items():
    per_round = ', '.join(f"{run['wall_s']:.2f}" for run in side['runs'])
    cpu = [run['cpu_s'] for run in side['runs']]
    cpu_ratio = statistics.median(c / f for c, f in zip(cpu, full_cpu))
    lines.append(f"| {m} | {side['wall']['median']:.2f} | {per_round} | "
                 f"{interleave.format_ratio(timing['time_over_full'][m])} | {statistics.median(cpu):.2f} | "
                 f"{cpu_ratio:.2f}x |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='flan_t5_small', help='gin/models/<model>.gin (random weights, fp32)')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--steps', type=int, default=3, help='steps per method in its own process (peak RSS)')
  parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds of every method (step time)')
  parser.add_argument('--methods', default=','.join(METHODS), help=f'comma-separated, of {",".join(METHODS)}')
  parser.add_argument('--skip_own_process', action='store_true',
                      help='no per-method processes (peak RSS): sizes and memory plans come from the interleaved one')
  parser.add_argument('--out', default='runs/peft_bench')
  parser.add_argument('--worker', choices=sorted(METHODS), help=argparse.SUPPRESS)
  parser.add_argument('--interleaved', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.methods = args.methods.split(',')
  unknown = [m for m in args.methods if m not in METHODS]
  if unknown or 'full' not in args.methods:
    parser.error(f'--methods={",".join(args.methods)}: needs full (the ratios divide by it) and names from '
                 f'{",".join(METHODS)}; unknown: {unknown}')
  if args.worker:
    print('RESULT ' + json.dumps(worker(args.worker, args)), flush=True)
    return 0
  if args.interleaved:
    print('RESULT ' + json.dumps(interleaved(args)), flush=True)
    return 0
  flags = [f'--model={args.model}', f'--batch={args.batch}', f'--inputs={args.inputs}', f'--targets={args.targets}',
           f'--steps={args.steps}', f'--rounds={args.rounds}', f'--methods={",".join(args.methods)}']

  def run(extra: list[str]) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-m', 'benchmarks.peft_bench'] + flags + extra, env=env,
                         capture_output=True, text=True, check=False, cwd=common.REPO)
    for line in out.stdout.splitlines():
      if line.startswith('RESULT '):
        return json.loads(line[len('RESULT '):])
    raise RuntimeError(f'benchmarks.peft_bench {" ".join(extra)} failed (exit {out.returncode}):\n'
                       f'{out.stderr[-3000:]}')

  os.makedirs(args.out, exist_ok=True)
  result = {'host': common.host_facts(), 'commit': common.git_commit(),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'model': args.model,
            'shape': {'batch': args.batch, 'inputs': args.inputs, 'targets': args.targets},
            'load_average': common.load_average(), 'methods': [], 'step_time': None}

  def save() -> None:  # after every stage: a slow machine still leaves what it measured
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump(result, f, indent=2)

  # The interleaved process first: it alone gives every column but peak RSS, so a slow machine still has the table.
  result['step_time'] = run(['--interleaved'])
  result['methods'] = [result['step_time']['sizes'][m] for m in args.methods]
  save()
  for i, m in enumerate([] if args.skip_own_process else args.methods):
    result['methods'][i] = run([f'--worker={m}'])
    save()
  result['load_average_end'] = common.load_average()
  save()
  print(markdown(result['methods'], result['step_time']))
  print(f"\n{result['date']}, commit {result['commit']}, {result['host']['cpu'].get('Model name', '?')}, "
        f"load average {result['load_average']} → {result['load_average_end']}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
