"""The trainer reports, at a fresh start, how much of each task its TASK_FEATURE_LENGTHS cut."""

from __future__ import annotations

import fixture_tasks
import numpy as np

from flanx.training import loop


class _Writer:
  def __init__(self):
    self.lines, self.scalars = [], {}

  def log(self, message):
    self.lines.append(message)

  def write(self, step, scalars):
    self.scalars[step] = dict(scalars)


def test_cut_fractions_are_logged_and_written():
  # fixture inputs are 'op: word' (e.g. 'reverse: abc' + EOS): count by hand which exceed 10 bytes.
  lengths = {'inputs': 10, 'targets': 4}
  examples = fixture_tasks._examples('train', 512)  # pylint: disable=protected-access
  expected_inputs = np.mean([len(x.encode()) + 1 > 10 for x in examples['inputs']])
  expected_targets = np.mean([len(x.encode()) + 1 > 4 for x in examples['targets']])
  assert 0 < expected_inputs < 1 and 0 < expected_targets < 1
  settings = loop.DataSettings(fixture_tasks.TASK, lengths, batch_size=8)
  writer = _Writer()
  loop._report_truncation(writer, settings, 0, 512)  # pylint: disable=protected-access
  scalars = writer.scalars[0]
  np.testing.assert_allclose(scalars[f'truncation/{fixture_tasks.TASK}/inputs'], expected_inputs)
  np.testing.assert_allclose(scalars[f'truncation/{fixture_tasks.TASK}/targets'], expected_targets)
  assert any(fixture_tasks.TASK in line and '% of targets' in line for line in writer.lines)


def test_an_unreadable_task_is_reported_not_fatal():
  writer = _Writer()
  loop._report_truncation(writer, loop.DataSettings('no_such_task_xyz', {'inputs': 8}, 8), 0, 10)  # pylint: disable=protected-access
  assert writer.lines and 'skipped' in writer.lines[0] and not writer.scalars
