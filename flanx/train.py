"""Train: `python -m flanx.train --gin_file=models/flan_t5_base.gin --gin_file=runs/finetune.gin --gin.X=Y`.

Restarting the same command resumes from the newest checkpoint in MODEL_DIR (params, optimizer state, step,
data position); SIGTERM or Ctrl-C checkpoints and exits 0 (a second Ctrl-C aborts, exit 130); a non-finite loss
exits 1 with the last good checkpoint kept.
"""

import os
import sys
from typing import Sequence

from flanx.training import aot, stop_signal

if __name__ == '__main__':
  # Before the heavy imports: a compile-only check restarts with a larger stack; a SIGTERM while starting up
  # means "stop cleanly".
  aot.restart_with_compiler_stack(sys.argv[1:])
  stop_signal.install()

from flanx import cli_errors, gin_config as gin_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from flanx.training import checkpoints, run_checks, run_lease, runtime, loop as trainer  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (t5x flags; with --topology=TPU --compile_only, the compile-only check)."""
  argv = sys.argv[1:] if argv is None else argv
  if aot.requested(argv):  # compile for a TPU pod here and report its memory; runs nothing
    return aot.main('train', argv, __doc__.splitlines()[0])
  try:
    result = gin_utils.run(trainer.train, __doc__.splitlines()[0], argv, [aot.flag_parser()])
  except (trainer.NonFiniteLossError, checkpoints.CheckpointWriteError) as e:
    print(f'ERROR: {cli_errors.one_line(e)}', file=sys.stderr, flush=True)
    return 1
  except (gin_utils.GinConfigError, run_checks.RunConfigError, run_lease.LeaseHeldError,
          checkpoints.CheckpointRestoreError) as e:  # bad settings or a busy/damaged run folder: one message
    print(f'ERROR: {cli_errors.one_line(e)}', file=sys.stderr, flush=True)
    return 2
  except stop_signal.SecondInterrupt:
    print(stop_signal.ABORT_MESSAGE, file=sys.stderr, flush=True)
    return 130
  if runtime.is_first_host():
    print(f"Training {result['status']} at step {result['step']}.", flush=True)
  return 0


if __name__ == '__main__':
  _code = cli_errors.run(main, run_dir=lambda: gin_utils.gin_value('train.model_dir'))
  if _code == 1:  # a failed write (disk full) leaves storage threads (orbax, tensorstore) failing in the background:
    sys.stdout.flush()  # the run already stopped, released its lease and said why; do not wait for them or let
    sys.stderr.flush()  # them print a traceback each at exit
    os._exit(_code)  # pylint: disable=protected-access
  sys.exit(_code)
