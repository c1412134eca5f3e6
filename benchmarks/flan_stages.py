"""Where a cached Flan example's CPU time goes: the pipeline cut after each stage, CPU microseconds per example.

  FLANX_VOCAB=<spm model> FLANX_FLAN_DATA=/tmp/flan304 python -m benchmarks.flan_stages --cache W/cache

Stages, each a fresh process reading `--examples` examples after the first (1024/256, shuffle on, seed 42):
  read     one variant task's cached TFRecords, parsed (seqio's cached source)
  task     + seqio's post-cache steps (append EOS, trim, the task's shuffle buffer), no caps
  capped   + the per-epoch caps (tasks.flan.cap_per_epoch): the task as a mixture reads it
  mixture  flan2022_submix: the 14 capped variant tasks sampled by their rates
  packed   + the encoder-decoder converter, packing (flanx.training.packing) and batches of 16: what training reads
Reports examples/s, CPU seconds (user + system, all threads) per example and cores used; the difference between
two stages is what the later one adds. `--autotune on|off` sets tf.data's autotuner for every stage,
`--parallel_reads on|off` the cached tasks' file interleave (tasks.cached_reads; auto: by core count). Run it on a
quiet machine and record `lscpu` and `uptime` with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

LENGTHS = {'inputs': 1024, 'targets': 256}
STAGES = ('read', 'task', 'capped', 'mixture', 'packed')


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _dataset(stage: str, task: str):
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if stage == 'packed':
    from flanx.training import packing  # pylint: disable=g-import-not-at-top
    return seqio.get_dataset('flan2022_submix', task_feature_lengths=LENGTHS, dataset_split='train', shuffle=True,
                             use_cached=True, seed=42, feature_converter=packing.EncDecFeatureConverter(pack=True)
                             ).batch(16)
  if stage == 'mixture':
    ds = seqio.get_mixture_or_task('flan2022_submix').get_dataset(LENGTHS, split='train', use_cached=True,
                                                                  shuffle=True, seed=42)
  else:
    source = seqio.get_mixture_or_task(task)
    if stage == 'read':
      ds = source._get_cached_source('train').get_dataset(split='train', shuffle=False)  # pylint: disable=protected-access
    elif stage == 'task':
      ds = seqio.Task.get_dataset(source, LENGTHS, split='train', use_cached=True, shuffle=True, seed=42,
                                  num_epochs=None)
    else:
      ds = source.get_dataset(LENGTHS, split='train', use_cached=True, shuffle=True, seed=42, num_epochs=None)
  return ds.map(lambda ex: tf.size(ex['targets'])).batch(256)  # the examples, reduced to one number each


def measure(stage: str, task: str, examples: int, autotune: bool, parallel_reads: str = 'auto') -> dict:
  """One stage in this process: examples/s and CPU per example after the first element."""
  import gin  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tasks.flan  # pylint: disable=g-import-not-at-top,unused-import  (registers the Flan tasks)
  from benchmarks import flan_data  # pylint: disable=g-import-not-at-top  (its gin settings)
  from flanx.training import data  # pylint: disable=g-import-not-at-top
  seqio.add_global_cache_dirs(data.task_cache_dirs())
  if parallel_reads != 'auto':
    gin.bind_parameter(flan_data.SETTINGS['parallel_reads'], parallel_reads == 'on')
  options = tf.data.Options()
  options.autotune.enabled = autotune
  iterator = _dataset(stage, task).with_options(options).as_numpy_iterator()
  next(iterator)
  count, cpu, start = 0, _cpu_seconds(), time.perf_counter()
  while count < examples:
    batch = next(iterator)
    count += int(np.sum(batch['decoder_segment_ids'].max(axis=1))) if stage == 'packed' else len(batch)
  seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  return {'stage': stage, 'examples': count, 'examples_per_s': count / seconds, 'cpu_us_per_example': cpu / count * 1e6,
          'cores_used': cpu / seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cache', required=True, help='the seqio cache folder of the Flan tasks')
  parser.add_argument('--task', default='flan2022_niv2_fs_opt', help='the variant task of the per-task stages')
  parser.add_argument('--examples', type=int, default=15_000, help='per stage (a task stage stays in its epoch)')
  parser.add_argument('--autotune', choices=['on', 'off'], default='off')
  parser.add_argument('--parallel_reads', choices=['auto', 'on', 'off'], default='auto')
  parser.add_argument('--stage', choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
  args = parser.parse_args()
  os.environ['FLANX_TASK_CACHE_DIRS'] = args.cache
  if args.stage:
    print(json.dumps(measure(args.stage, args.task, args.examples, args.autotune == 'on', args.parallel_reads)))
    return
  rows = []
  for stage in STAGES:
    examples = args.examples * (4 if stage in ('mixture', 'packed') else 1)
    out = subprocess.run([sys.executable, '-m', 'benchmarks.flan_stages', f'--cache={args.cache}',
                          f'--task={args.task}', f'--examples={examples}', f'--autotune={args.autotune}',
                          f'--parallel_reads={args.parallel_reads}',
                          f'--stage={stage}'], capture_output=True, text=True, check=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    row = rows[-1]
    print(f"| {stage} | {row['examples_per_s']:,.0f} | {row['cpu_us_per_example']:.0f} | {row['cores_used']:.2f} |",
          flush=True)
  print(json.dumps({'task': args.task, 'autotune': args.autotune, 'parallel_reads': args.parallel_reads,
                    'load': os.getloadavg(), 'rows': rows}))


if __name__ == '__main__':
  main()
