"""Infer: `python -m flanx.infer --gin_file=models/…gin --gin_file=runs/infer.gin --gin.CHECKPOINT_PATH=…`.

Greedy, sampled or beam-search predictions for a task split or a JSONL file of prompts, written as JSONL.
"""

import sys
from typing import Sequence

from flanx.training import aot

if __name__ == '__main__':
  aot.restart_with_compiler_stack(sys.argv[1:])  # compile-only: restart with a larger stack, before heavy imports

from flanx import gin_config as gin_utils  # noqa: E402  pylint: disable=g-import-not-at-top
from flanx.inference import infer as inference  # noqa: E402  pylint: disable=g-import-not-at-top
from flanx.inference import run_config  # noqa: E402  pylint: disable=g-import-not-at-top
from flanx.training import compile_cache, runtime  # noqa: E402  pylint: disable=g-import-not-at-top


def _log(line: str) -> None:
  if runtime.is_first_host():
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (t5x flags; with --topology=TPU --compile_only, the compile-only check)."""
  argv = sys.argv[1:] if argv is None else argv
  if aot.requested(argv):  # compile for a TPU pod here and report its memory; runs nothing
    return aot.main('infer', argv, __doc__.splitlines()[0])
  entry = compile_cache.cached(inference.infer, lambda: gin_utils.gin_value('infer.output_dir'))
  path = gin_utils.run(entry, __doc__.splitlines()[0], argv, [aot.flag_parser()],
                       prepare=lambda bindings: run_config.fill_unset('infer', bindings, _log))
  if runtime.is_first_host():
    print(f'Wrote {path}', flush=True)
  return 0


if __name__ == '__main__':
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  sys.exit(cli_errors.run(main, run_dir=lambda: gin_utils.gin_value('infer.output_dir')))
