"""Train: `python -m flanx.train --gin_file=models/flan_t5_base.gin --gin_file=runs/finetune.gin --gin.X=Y`.

Restarting the same command resumes from the newest checkpoint in MODEL_DIR (params, optimizer state, step,
data position); SIGTERM checkpoints and exits 0; a non-finite loss exits 1 with the last good checkpoint kept.
"""

import sys
from typing import Sequence

from flanx import gin_config as gin_utils
from flanx.training import runtime, loop as trainer


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (t5x flags)."""
  try:
    result = gin_utils.run(trainer.train, __doc__.splitlines()[0], argv)
  except trainer.NonFiniteLossError as e:
    print(f'ERROR: {e}', file=sys.stderr, flush=True)
    return 1
  if runtime.is_first_host():
    print(f"Training {result['status']} at step {result['step']}.", flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
