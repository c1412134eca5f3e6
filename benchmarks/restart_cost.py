"""Restart cost with a cold and a warm persistent compilation cache (BENCHMARKS.md, "Restart cost").

  python -m benchmarks.restart_cost --model demo            # gin/runs/demo.gin (the demo's model and task)
  python -m benchmarks.restart_cost --model flan_t5_small   # flan-t5-small, 512/256, batch 8, on the demo task

Three `python -m flanx.train` processes on one fresh MODEL_DIR: a first start with the cache off (it leaves a
checkpoint at step 1), a restart with an empty cache (cold: it compiles and fills the cache), and a restart with
that cache (warm). Each restart is the same command (TRAIN_STEPS=2) from the same step-1 checkpoint, as a preempted
run's restart replays its command: MODEL_DIR is put back to its step-1 copy before the warm one. The cache holds
the compiled programs (JAX's persistent cache) and the traced train step (flanx.training.step_cache, keyed by the
whole configuration, so a changed TRAIN_STEPS would be a new entry). Per start: the process's wall time, and from
MODEL_DIR/goodput.json the train() wall time, its compile part (trace + lower + XLA compile or cache read) and its
restore part. What matters is the warm/cold ratio of the compile part; absolute seconds depend on the machine's
load (recorded). A restart that finds the step's program stored compiles it in the background during the restore
(step_cache.CachedStep.compile_ahead): its compile part is then the first step's wait for it, and the line that
says how long the background compile took is kept too.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import common

MODELS = {
    'demo': ['--gin_file=runs/demo.gin'],
    'flan_t5_small': ['--gin_file=models/flan_t5_small.gin', '--gin_file=runs/finetune.gin',
                      '--gin_file=hardware/cpu.gin', '--gin.MIXTURE_OR_TASK_NAME="flanx_demo"',
                      '--gin.MIXTURE_OR_TASK_MODULE="tasks.demo"', '--gin.BATCH_SIZE=8',
                      "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 256}", '--gin.EVAL_PERIOD=0'],
}


def start(model: str, model_dir: pathlib.Path, steps: int, cache: str | None) -> dict:
  """One `flanx.train` process to `steps` steps; its wall time and goodput.json's view of this start."""
  flags = MODELS[model] + [f'--gin.MODEL_DIR="{model_dir}"', f'--gin.TRAIN_STEPS={steps}', '--gin.train.log_every=1',
                           '--gin.train.progress_bar=False']
  flags += [f'--compile_cache_dir={cache}'] if cache else ['--gin.compile_cache.enabled=False']
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(common.REPO))
  began = time.perf_counter()
  proc = subprocess.run([sys.executable, '-m', 'flanx.train', *flags], cwd=common.REPO, env=env, capture_output=True,
                        text=True, check=False)
  wall = time.perf_counter() - began
  if proc.returncode:
    raise SystemExit(f'flanx.train failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
  this = json.loads((model_dir / 'goodput.json').read_text())['this_start']
  cache_line = next((line for line in proc.stdout.splitlines() if line.startswith('Compile cache')), '')
  step_line = next((line for line in proc.stdout.splitlines() if line.startswith('Train step: ')), '')
  background = next((line for line in proc.stdout.splitlines()
                     if line.startswith('Train step: compiled in the background')), '')
  return {'process_seconds': wall, 'train_seconds': this['wall_seconds'],
          'compile_seconds': this['parts_seconds']['compile'], 'restore_seconds': this['parts_seconds']['restore'],
          'device_step_seconds': this['parts_seconds']['device_step'], 'cache': cache_line,
          'train_step': step_line, 'compiled_ahead': background}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', choices=sorted(MODELS), default='demo')
  parser.add_argument('--out', default=None, help='JSON result (default runs/restart_cost_<model>.json)')
  args = parser.parse_args(argv)
  work = pathlib.Path(tempfile.mkdtemp(prefix='restart_cost_'))
  model_dir, cache = work / 'model', str(work / 'compile_cache')
  result = {'model': args.model, 'commit': common.git_commit(), 'host': common.host_facts(),
            'load_start': common.load_average()}
  result['first'] = start(args.model, model_dir, 1, None)
  shutil.copytree(model_dir, work / 'at_step_1', symlinks=True)
  result['cold'] = start(args.model, model_dir, 2, cache)
  shutil.rmtree(model_dir)
  shutil.copytree(work / 'at_step_1', model_dir, symlinks=True)  # the same restart again, now with a warm cache
  result['warm'] = start(args.model, model_dir, 2, cache)
  result['load_end'] = common.load_average()
  share = lambda s: s['compile_seconds'] / s['train_seconds']
  result['warm_over_cold_compile'] = result['warm']['compile_seconds'] / result['cold']['compile_seconds']
  result['warm_over_cold_compile_share'] = share(result['warm']) / share(result['cold'])
  for name in ('cold', 'warm'):
    s = result[name]
    print(f"| {args.model} | {name} | {s['process_seconds']:.1f} | {s['train_seconds']:.1f} | "
          f"{s['compile_seconds']:.1f} ({share(s):.0%}) | {s['restore_seconds']:.1f} | {s['cache']} | "
          f"{s['train_step'].split(';')[0].split(' (')[0]} |")
    if s['compiled_ahead']:
      print(f"  {name}: {s['compiled_ahead']}")
  print(f"warm/cold compile seconds {result['warm_over_cold_compile']:.1%}, compile share "
        f"{result['warm_over_cold_compile_share']:.1%}; load {result['load_start']} -> {result['load_end']}")
  out = pathlib.Path(args.out or common.REPO / 'runs' / f'restart_cost_{args.model}.json')
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + '\n')
  return result


if __name__ == '__main__':
  main()
