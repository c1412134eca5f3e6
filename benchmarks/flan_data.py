"""The Flan input pipeline at a realistic size (issue 23): cache build, first batch, memory, throughput, resume.

  python -m benchmarks.flan_mirror /tmp/flan --rows 304000           # the folder (Open-Orca layout)
  FLANX_VOCAB=<spm model> python -m benchmarks.flan_data /tmp/flan --work /tmp/flan_bench --resume_steps 100,1000

Reports, for flan2022_submix at 1024/256 packed, batch 16 (this host's share; one process):
- cache build time with seqio's cache script on the DirectRunner (rows/s), unless --skip_cache;
- for the uncached and the cached pipeline: time to the first batch, the process RSS after it and at the end, and
  examples/s (packed rows/s and examples/s per core) over --batches batches, and per window of 100;
- resume after N batches for each N in --resume_steps: time from a new iterator to its first batch (the position
  restored, or the pipeline rebuilt and replayed), and whether the next batches equal the straight run's;
- the input pipeline's own memory: RSS after the first batch minus RSS once tensorflow, seqio, jax and flanx are
  imported (what the process holds before any data is read);
- launch -> first step of a real `python -m flanx.train` (gin/models/tiny.gin, TRAIN_STEPS=1; the process's whole
  wall time, so an upper bound: it includes saving the one checkpoint and exiting), uncached and from the cache.
Run it on a quiet machine (record `uptime` and `lscpu` with the numbers in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

LENGTHS = {'inputs': 1024, 'targets': 256}
WINDOW = 100  # batches per reported window of examples/s
STEADY_AFTER = 2  # windows served from what the task pipelines buffered while the first batch was awaited
# --flag: the gin setting it binds (auto: flanx's default, by the host's core count)
SETTINGS = {'autotune': 'flanx.training.data.tf_data_autotune.enabled',
            'parallel_reads': 'tasks.cached_reads.parallel_file_reads.enabled'}


def rss_gb() -> float:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def first_step(folder: pathlib.Path, work: pathlib.Path, batch_size: int, cached: bool,
               bindings: dict[str, bool]) -> dict:
  """Wall seconds of `python -m flanx.train` for one step of the tiny model (launch to exit), and its goodput parts."""
  model_dir = work / f'first_step_{"cached" if cached else "uncached"}'
  subprocess.run(['rm', '-rf', str(model_dir)], check=True)
  command = [sys.executable, '-m', 'flanx.train', '--gin_file=models/tiny.gin', '--gin_file=runs/finetune.gin',
             f'--gin.MODEL_DIR="{model_dir}"', '--gin.MIXTURE_OR_TASK_NAME="flan2022_submix"',
             '--gin.MIXTURE_OR_TASK_MODULE="tasks.flan"', f'--gin.TASK_FEATURE_LENGTHS={LENGTHS!r}',
             f'--gin.BATCH_SIZE={batch_size}', '--gin.TRAIN_STEPS=1', f'--gin.USE_CACHED_TASKS={cached}',
             '--gin.EVAL_PERIOD=0', '--gin.train.progress_bar=False', '--gin.train.truncation_examples=0']
  command += [f'--gin.{binding}={value}' for binding, value in bindings.items()]
  env = dict(os.environ, FLANX_FLAN_DATA=str(folder))
  start = time.perf_counter()
  subprocess.run(command, env=env, check=True, capture_output=True, cwd=pathlib.Path(__file__).parent.parent)
  seconds = time.perf_counter() - start
  parts = json.loads((model_dir / 'goodput.json').read_text())
  return {'launch_to_exit_s': seconds, 'goodput': parts}


def build_cache(folder: pathlib.Path, cache: pathlib.Path) -> dict:
  env = dict(os.environ, FLANX_FLAN_DATA=str(folder))
  start = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'seqio.scripts.cache_tasks_main', '--module_import=tasks.flan',
                  '--tasks=flan2022_.*', f'--output_cache_dir={cache}',
                  f'--pipeline_options=--runner=DirectRunner,--direct_num_workers={os.cpu_count()},'
                  '--direct_running_mode=multi_processing'], env=env, check=True)
  seconds = time.perf_counter() - start
  rows = sum(json.loads(p.read_text())['examples'] for p in cache.glob('flan2022_*/stats.train.json'))
  size = sum(p.stat().st_size for p in cache.rglob('*') if p.is_file())
  return {'cache_seconds': seconds, 'cache_rows': rows, 'cache_rows_per_s': rows / seconds, 'cache_gb': size / 1e9}


def pipeline(batch_size: int, cached: bool):
  from flanx.training import data  # pylint: disable=g-import-not-at-top
  return lambda: data.get_dataset('flan2022_submix', LENGTHS, 'train', batch_size, shuffle=True, pack=True,
                                  use_cached=cached)


def measure(batch_size: int, batches: int, cached: bool, resume_steps: list[int], work: pathlib.Path) -> dict:
  from flanx.training import data  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.constant(0)  # tensorflow's runtime started: the baseline holds every library, no data
  make = pipeline(batch_size, cached)
  rss_imports = rss_gb()
  start = time.perf_counter()
  iterator = data.CheckpointableIterator(make, log=lambda m: None)
  straight = [next(iterator)]
  first = time.perf_counter() - start
  rss_first = rss_gb()
  start = time.perf_counter()
  examples, windows, window_start, window_examples = 0, [], start, 0
  for i in range(batches):
    batch = next(iterator)
    packed = int(np.sum(batch['decoder_segment_ids'].max(axis=1)))  # packed examples in the batch
    examples, window_examples = examples + packed, window_examples + packed
    if (i + 1) % WINDOW == 0:  # the first windows are served from what was prefetched during the first batch
      now = time.perf_counter()
      windows.append((window_examples, now - window_start))
      window_start, window_examples = now, 0
  steady = windows[STEADY_AFTER:]
  seconds = time.perf_counter() - start
  out = {'first_batch_s': first, 'rss_gb_imports': rss_imports, 'rss_gb_first': rss_first, 'rss_gb_end': rss_gb(),
         'pipeline_gb': rss_first - rss_imports,
         'rows_per_s': batches * batch_size / seconds, 'examples_per_s': examples / seconds,
         'examples_per_s_per_core': examples / seconds / os.cpu_count(),
         'examples_per_s_windows': [n / t for n, t in windows],
         'examples_per_s_steady': sum(n for n, _ in steady) / sum(t for _, t in steady) if steady else None}
  iterator.close()
  for n in resume_steps:
    iterator = data.CheckpointableIterator(make, log=lambda m: None)
    for _ in range(n):
      next(iterator)
    prefix = str(work / f'{"cached" if cached else "uncached"}_{n}' / 'checkpoint' / 'process_0')
    saved = iterator.save(prefix)
    expected = [next(iterator) for _ in range(3)]
    iterator.close()
    start = time.perf_counter()
    resumed = data.CheckpointableIterator(make, log=lambda m: None)
    resumed.restore(prefix, n)
    got = [next(resumed) for _ in range(3)]
    out[f'resume_{n}_s'] = time.perf_counter() - start
    out[f'resume_{n}_position_saved'] = saved
    out[f'resume_{n}_equal'] = all(np.array_equal(a[k], b[k]) for a, b in zip(expected, got) for k in a)
    resumed.close()
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('folder', type=pathlib.Path)
  parser.add_argument('--work', type=pathlib.Path, required=True)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--batches', type=int, default=2000,
                      help='timed batches after the first; the steady rate leaves out the first 2 windows of 100, '
                           'and a window swings 2x with the tasks that come next, so give it thousands')
  parser.add_argument('--resume_steps', default='100,1000')
  parser.add_argument('--skip_cache', action='store_true')
  parser.add_argument('--modes', default='uncached,cached',
                      help='pipelines to measure; one per process gives each its own memory baseline')
  parser.add_argument('--skip_train', action='store_true', help='do not time a real flanx.train launch')
  parser.add_argument('--autotune', choices=['auto', 'on', 'off'], default='auto', help="tf.data's autotuner")
  parser.add_argument('--parallel_reads', choices=['auto', 'on', 'off'], default='auto',
                      help="cached tasks' parallel file interleave (tasks/cached_reads.py)")
  args = parser.parse_args()
  os.environ['FLANX_FLAN_DATA'] = str(args.folder)
  cache = args.work / 'cache'
  os.environ['FLANX_TASK_CACHE_DIRS'] = str(cache)
  steps = [int(s) for s in args.resume_steps.split(',') if s]
  result = {'uptime': os.getloadavg(), 'cpus': os.cpu_count(), 'autotune': args.autotune,
            'parallel_reads': args.parallel_reads}
  bindings = {SETTINGS[flag]: getattr(args, flag) == 'on' for flag in SETTINGS if getattr(args, flag) != 'auto'}
  if bindings:
    import gin  # pylint: disable=g-import-not-at-top
    from flanx.training import data  # pylint: disable=g-import-not-at-top,unused-import  (its configurable)
    from tasks import cached_reads  # pylint: disable=g-import-not-at-top,unused-import  (its configurable)
    for binding, value in bindings.items():
      gin.bind_parameter(binding, value)
  if not args.skip_cache:
    result.update(build_cache(args.folder, cache))
  import tasks.flan  # pylint: disable=g-import-not-at-top,unused-import  (registers flan2022_submix)
  for cached in [mode == 'cached' for mode in args.modes.split(',')]:
    if cached and not (cache / 'flan2022_flan2021_zs_opt' / 'COMPLETED').exists():
      continue
    result['cached' if cached else 'uncached'] = measure(args.batch_size, args.batches, cached, steps, args.work)
    if not args.skip_train:
      result['cached' if cached else 'uncached'].update(first_step(args.folder, args.work, args.batch_size, cached,
                                                                    bindings))
    print(json.dumps(result, indent=1), flush=True)
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
