"""Evaluate: `python -m flanx.eval --gin_file=models/…gin --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH=…`.

Teacher-forced loss/accuracy and the task's seqio metrics on decoded predictions, as JSON and TensorBoard.
"""

import json
import sys
from typing import Sequence

from flanx.inference import evaluate as evaluation
from flanx import gin_config as gin_utils
from flanx.training import aot, runtime


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (t5x flags; with --topology=TPU --compile_only, the compile-only check)."""
  argv = sys.argv[1:] if argv is None else argv
  if aot.requested(argv):  # compile for a TPU pod here and report its memory; runs nothing
    return aot.main('eval', argv, __doc__.splitlines()[0])
  results = gin_utils.run(evaluation.evaluate, __doc__.splitlines()[0], argv)
  if runtime.is_first_host():
    print(json.dumps(results, indent=2), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
