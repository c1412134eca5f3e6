"""The shuffle-quality measure (benchmarks/shuffle_quality.py) and the sorted mirror it is measured on."""

import numpy as np
import pyarrow.parquet as pq

from benchmarks import flan_mirror, shuffle_quality


def test_quality_tells_a_sorted_stream_from_a_shuffled_one():
  rng = np.random.default_rng(1)
  names = [f'task{t}' for t in rng.choice(50, size=4096, p=np.arange(50, 0, -1) / 1275)]
  shuffled = shuffle_quality.quality(names, window=64)
  assert 0.95 < shuffled['distinct_ratio'] < 1.05 and 0.8 < shuffled['same_neighbour_ratio'] < 1.2
  ordered = shuffle_quality.quality(sorted(names), window=64)
  assert ordered['distinct_ratio'] < 0.2 and ordered['same_neighbour_ratio'] > 5
  assert abs(ordered['ideal_distinct'] / shuffled['ideal_distinct'] - 1) < 0.02  # the same examples: the same ideal


def test_sorted_mirror_holds_the_mixed_mirrors_records_in_task_order(tmp_path):
  written = flan_mirror.write(tmp_path / 'mixed', rows=400, parts=2, seed=3)
  assert flan_mirror.write(tmp_path / 'sorted', rows=400, parts=2, seed=3, order='sorted') == written
  for folder in ('flan_zsopt_data', 'niv2_fsopt_data'):
    read = {order: [pq.read_table(str(tmp_path / order / folder / f'part.{k}.parquet')).to_pylist() for k in (0, 1)]
            for order in ('mixed', 'sorted')}
    names = [r['_task_name'] for part in read['sorted'] for r in part]
    assert names == sorted(names)  # consecutive parts, each sorted
    key = lambda r: (r['_task_name'], r['inputs'])
    assert sorted(sum(read['sorted'], []), key=key) == sorted(sum(read['mixed'], []), key=key)
