"""Runs `python -m flanx.train ARGS` and kills itself with SIGKILL at a chosen point (tests' crash matrix).

Usage: python tests/crash_launcher.py POINT STEP -- TRAIN_ARGS…
POINT: setup (lease taken, nothing restored), mid_step (before step STEP's metrics are written),
after_data_state (STEP's data position written, its checkpoint not yet), mid_save (STEP's arrays written, not yet
committed), after_save (checkpoint STEP committed), during_restore (a checkpoint restored, training not started).
The kill is a real SIGKILL of this process: nothing after it runs (no finally, no atexit, no flush).
"""

import os
import signal
import sys
import time


def die() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def wait_for_commit(model_dir: str, step: int) -> None:
  """Waits (up to 10 minutes) until checkpoint_<step> is committed: a kill between checkpoints must find one."""
  deadline = time.time() + 600
  while not os.path.isdir(os.path.join(model_dir, f'checkpoint_{step}')) and time.time() < deadline:
    time.sleep(0.05)


def arm(point: str, step: int, model_dir: str, period: int) -> None:
  """Patches the one place where the process must die."""
  if point == 'setup':
    from flanx.training import run_lease
    acquire = run_lease.RunLease.acquire

    def acquire_then_die(self, *args, **kwargs):
      acquire(self, *args, **kwargs)
      die()
    run_lease.RunLease.acquire = acquire_then_die
  elif point == 'mid_step':
    from flanx.training import metrics_writer
    write = metrics_writer.MetricsWriter.write

    def write_or_die(self, at_step, scalars):
      if at_step == step:
        if step >= period:  # async saves commit in the background: die after the last one is visible
          wait_for_commit(model_dir, step // period * period)
        die()
      write(self, at_step, scalars)
    metrics_writer.MetricsWriter.write = write_or_die
  elif point == 'after_data_state':
    from flanx.training import data
    save = data.CheckpointableIterator.save

    def save_then_die(self, prefix):
      save(self, prefix)
      if f'checkpoint_{step}' in prefix:
        die()
    data.CheckpointableIterator.save = save_then_die
  elif point in ('mid_save', 'after_save'):
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_around_death(self):
      target = self.get_final().name == f'checkpoint_{step}'
      if target and point == 'mid_save':
        die()
      await finalize(self)
      if target:
        die()
    atomicity.AtomicRenameTemporaryPath.finalize = finalize_around_death
  elif point == 'during_restore':
    from flanx.training import checkpoints
    restore = checkpoints.RunCheckpoints.restore

    def restore_then_die(self, *args, **kwargs):
      restore(self, *args, **kwargs)
      die()
    checkpoints.RunCheckpoints.restore = restore_then_die
  else:
    raise SystemExit(f'unknown kill point {point!r}')


if __name__ == '__main__':
  point, step, separator, *train_args = sys.argv[1:]
  assert separator == '--', sys.argv
  from flanx import train  # installs the SIGTERM handler first, as `python -m flanx.train` does
  values = dict(a[len('--gin.'):].split('=', 1) for a in train_args if a.startswith('--gin.') and '=' in a)
  arm(point, int(step), values['MODEL_DIR'].strip('"\''), int(values.get('CHECKPOINT_PERIOD', 1000)))
  sys.exit(train.main(train_args))
