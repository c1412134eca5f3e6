"""Parameter-efficient tuning on CPU: what full fine-tuning and each PEFT method cost (flan-t5-small shape).

  python -m benchmarks.peft_bench [--batch 8 --inputs 512 --targets 256 --steps 5 --out runs/peft_bench]

Per method (full; LoRA r=8 and r=16 on q and v, PEFT's default targets; prompt tuning with 100 tokens; prefix
tuning with 20 positions; (IA)³ with peft's T5 defaults), each in its
own process so the peak belongs to that method alone: trainable params, optimizer-state bytes (Adafactor, as the
runs use, and Adam), bytes of the frozen base, XLA's memory plan of the compiled train step (arguments, outputs,
temporaries) and the process's peak RSS after a few steps. Then the step time of every method in ONE process,
interleaved step by step (same load for all), as medians and their ratios to full fine-tuning. Random weights and a random unpacked
batch; the prompt run's inputs hold the 100 placeholders within the same input length. Writes results.json and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import common

METHODS = {
    'full': {},
    'lora_r8': {'lora': {'rank': 8, 'alpha': 16.0}},
    'lora_r16': {'lora': {'rank': 16, 'alpha': 32.0}},
    'prompt_100': {'prompt': {'num_virtual_tokens': 100}},
    'prefix_20': {'prefix': {'num_virtual_tokens': 20}},
    'ia3': {'ia3': {}},
}


def _config(method: str):
  from flanx.model import peft  # pylint: disable=g-import-not-at-top
  config = common.load_config('flan_t5_small', 'float32')
  return config.replace(**{name: peft.METHODS[name](**settings) for name, settings in METHODS[method].items()})


def _nbytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _setup(method: str, args):
  """(train step, state, batch) of one method on this host's CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.model import peft  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor, partitioning, steps  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  config = _config(method)
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
  batch = jax.device_put(batch, shardings.batch)
  return config, tx, mesh, shardings, step, state, batch


def worker(method: str, args) -> dict:
  """One method's sizes, XLA memory plan and peak RSS after `args.steps` steps (run in its own process)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flanx.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  config, tx, mesh, shardings, step, state, batch = _setup(method, args)
  adam_state = jax.eval_shape(optax.adamw(1e-3).init, state.params)
  with mesh, steps_lib.activation_rules(shardings):
    compiled = step.lower(state, batch).compile()
    plan = compiled.memory_analysis()
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      state, metrics = step(state, batch)
      float(metrics['loss'])
      times.append(time.perf_counter() - start)
  return {
      'method': method,
      'trainable_params': sum(x.size for x in jax.tree.leaves(state.params)),
      'frozen_params': sum(x.size for x in jax.tree.leaves(state.frozen)) if state.frozen is not None else 0,
      'adafactor_state_bytes': _nbytes(state.opt_state),
      'adam_state_bytes': _nbytes(adam_state),
      'xla_argument_bytes': int(plan.argument_size_in_bytes),
      'xla_output_bytes': int(plan.output_size_in_bytes),
      'xla_temp_bytes': int(plan.temp_size_in_bytes),
      'peak_rss_bytes': common.peak_rss_bytes(),
      'step_seconds_median': statistics.median(times[1:]) if len(times) > 1 else times[0],
  }


def interleaved(args) -> dict:
  """Step time of every method in one process, alternating steps; medians and their ratios to full tuning."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
  sides = {m: list(_setup(m, args)) for m in METHODS}
  times = {m: [] for m in sides}
  for i in range(args.timing_steps + 1):  # the first round compiles
    for m, (_, _, mesh, shardings, step, state, batch) in sides.items():
      with mesh, steps_lib.activation_rules(shardings):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        float(metrics['loss'])
        if i:
          times[m].append(time.perf_counter() - start)
      sides[m][5] = state
  medians = {m: float(np.median(t)) for m, t in times.items()}
  return {'rounds': args.timing_steps, 'median_s': medians, 'over_full': {m: t / medians['full'] for m, t in
                                                                         medians.items()}, 'times': times}


def _mib(n: int) -> str:
  return f'{n / 2**20:,.1f}'


def markdown(rows: list[dict], timing: dict) -> str:
  """The BENCHMARKS.md table of a run."""
  lines = ['| method | trainable params | Adafactor state | Adam state | XLA args + out + temp (MiB) | peak RSS (MiB) |',
           '|---|---|---|---|---|---|']
  for r in rows:
    xla = f"{_mib(r['xla_argument_bytes'])} + {_mib(r['xla_output_bytes'])} + {_mib(r['xla_temp_bytes'])}"
    lines.append(f"| {r['method']} | {r['trainable_params']:,} | {_mib(r['adafactor_state_bytes'])} MiB | "
                 f"{_mib(r['adam_state_bytes'])} MiB | {xla} | {_mib(r['peak_rss_bytes'])} |")
  lines.append('')
  steps_text = ', '.join(f"{m} {t:.2f} s ({timing['over_full'][m]:.2f} x full)" for m, t in timing['median_s'].items())
  lines.append(f"Step time, interleaved ({timing['rounds']} rounds, medians): {steps_text}.")
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--steps', type=int, default=3, help='steps per method in its worker (peak RSS)')
  parser.add_argument('--timing_steps', type=int, default=5, help='interleaved rounds for the step-time ratio')
  parser.add_argument('--out', default='runs/peft_bench')
  parser.add_argument('--worker', choices=sorted(METHODS), help=argparse.SUPPRESS)
  parser.add_argument('--interleaved', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print('RESULT ' + json.dumps(worker(args.worker, args)), flush=True)
    return 0
  if args.interleaved:
    print('RESULT ' + json.dumps(interleaved(args)), flush=True)
    return 0
  common_flags = [f'--batch={args.batch}', f'--inputs={args.inputs}', f'--targets={args.targets}',
                  f'--steps={args.steps}', f'--timing_steps={args.timing_steps}']

  def run(extra: list[str]) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-m', 'benchmarks.peft_bench'] + common_flags + extra, env=env,
                         capture_output=True, text=True, check=False, cwd=common.REPO)
    for line in out.stdout.splitlines():
      if line.startswith('RESULT '):
        return json.loads(line[len('RESULT '):])
    raise RuntimeError(f'{extra} failed:\n{out.stderr[-3000:]}')

  os.makedirs(args.out, exist_ok=True)
  result = {'host': common.host_facts(), 'commit': common.git_commit(), 'date': time.strftime('%Y-%m-%d %H:%M UTC',
            time.gmtime()), 'shape': {'batch': args.batch, 'inputs': args.inputs, 'targets': args.targets},
            'load_average': common.load_average(), 'methods': [], 'step_time': None}

  def save() -> None:  # after every stage: a slow machine still leaves what it measured
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
      json.dump(result, f, indent=2)

  for m in METHODS:
    result['methods'].append(run([f'--worker={m}']))
    print(json.dumps(result['methods'][-1]), flush=True)
    save()
  result['step_time'] = timing = run(['--interleaved'])
  result['load_average_end'] = common.load_average()
  save()
  rows = result['methods']
  print(markdown(rows, timing))
  print(f"\n{result['date']}, commit {result['commit']}, load average {result['load_average']}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
