"""How well a Flan variant task's stream is shuffled, per shuffle-buffer size and file order (issue 23).

  python -m benchmarks.flan_mirror /tmp/flan_mixed --rows 60000
  python -m benchmarks.flan_mirror /tmp/flan_sorted --rows 60000 --order sorted
  FLANX_VOCAB=<spm model> python -m benchmarks.shuffle_quality /tmp/flan_mixed /tmp/flan_sorted \
      --buffers 1000,5000,20000

For each folder, buffer size and task (`--tasks`), the first `--examples` examples of the task's training stream
(`get_dataset(shuffle=True)`, the seed training uses, caps applied, uncached: from seqio's cache the order does
not depend on the files', as its cache script shuffles every example globally) are cut into windows of `--window`
consecutive examples (about what one packed batch takes from one variant task). Reported, each against a perfect
shuffle of the same examples (a seeded permutation, averaged over 5): the mean number of distinct Flan task names
per window, and the share of neighbouring examples that share a task. `distinct_ratio` 1.0 and
`same_neighbour_ratio` 1.0 are a perfect shuffle; a stream cut into same-task runs has a low first and a high
second. Also the seconds to the task's first example (the buffer fills first).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np

LENGTHS = {'inputs': 1024, 'targets': 256}
DEFAULT_TASKS = 'flan2021_zs_opt,niv2_fs_opt'


def stats(names: np.ndarray, window: int) -> tuple[float, float]:
  """(mean distinct names per window, share of neighbours with the same name)."""
  windows = names[:len(names) // window * window].reshape(-1, window)
  distinct = float(np.mean([len(np.unique(w)) for w in windows]))
  return distinct, float(np.mean(names[1:] == names[:-1]))


def quality(names: list[str], window: int) -> dict:
  codes = np.unique(np.asarray(names), return_inverse=True)[1]
  distinct, same = stats(codes, window)
  rng = np.random.default_rng(0)
  ideal = np.mean([stats(rng.permutation(codes), window) for _ in range(5)], axis=0)
  return {'distinct_per_window': distinct, 'ideal_distinct': float(ideal[0]), 'distinct_ratio': distinct / ideal[0],
          'same_neighbour': same, 'ideal_same_neighbour': float(ideal[1]),
          'same_neighbour_ratio': same / ideal[1] if ideal[1] else float('nan')}


@functools.cache
def _registered(folder: str) -> str:
  """The name prefix of the Flan tasks registered on `folder` (once per folder)."""
  from tasks import flan  # pylint: disable=g-import-not-at-top
  prefix = f'q{_registered.cache_info().currsize}_'
  flan.register_flan2022(pattern=folder, prefix=prefix)
  return prefix


def measure(folder: str, buffer: int, task: str, examples: int, window: int) -> dict:
  import seqio  # pylint: disable=g-import-not-at-top
  from tasks import flan  # pylint: disable=g-import-not-at-top
  name = _registered(folder) + flan.task_name(*task.split('_', 1))
  start = time.perf_counter()
  dataset = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, 'train', shuffle=True, shuffle_buffer_size=buffer,
                                                        seed=42, num_epochs=None)
  names, first = [], None
  for example in dataset.take(examples).as_numpy_iterator():
    first = first or time.perf_counter() - start
    names.append(example['task_name'].decode())
  return {'folder': folder, 'buffer': buffer, 'task': task, 'examples': len(names), 'first_example_s': first,
          **quality(names, window)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('folders', nargs='+')
  parser.add_argument('--buffers', default='1000,5000,20000')
  parser.add_argument('--tasks', default=DEFAULT_TASKS, help='submix_variant,...')
  parser.add_argument('--examples', type=int, default=8192)
  parser.add_argument('--window', type=int, default=64)
  args = parser.parse_args()
  rows = []
  for folder in args.folders:
    for buffer in [int(b) for b in args.buffers.split(',')]:
      for task in args.tasks.split(','):
        rows.append(measure(folder, buffer, task, args.examples, args.window))
        print(json.dumps(rows[-1]), flush=True)
  print(json.dumps({'uptime': os.getloadavg(), 'rows': rows}))


if __name__ == '__main__':
  main()
