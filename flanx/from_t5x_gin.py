"""Convert t5x gins: `python -m flanx.from_t5x_gin OLD_RUN/config.gin [--gin_search_paths=T5X] > run.gin`.

Reads a t5x run's config.gin (or t5x-style gins with includes) without importing t5x and prints the flanx gin
that trains the same model on the same task with the same lengths, batch, steps, learning-rate schedule,
optimizer (Adafactor, or t5x's optax adamw / adam / lion), dropout, loss normalization, checkpointing and
partitioning. Bindings flanx cannot carry over are listed as comments at the end; one that would change what
trains (a decoder-only or MoE model, another optimizer or schedule) exits 2 naming its file and line.
Then: `python -m flanx.train --gin_file=run.gin --gin.MODEL_DIR=...`.
"""

import argparse
import os
import sys
from typing import Sequence

from flanx.interop import t5x_gin


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point: the flanx gin on stdout (or --output), errors on stderr with exit code 2."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('config', nargs='+', help="t5x gin file(s), e.g. a run's MODEL_DIR/config.gin, or a model "
                      'gin then a run gin (read in order, like repeated --gin_file)')
  parser.add_argument('--gin_search_paths', action='append', default=[],
                      help='comma-separated folders where includes are looked up (e.g. a t5x checkout)')
  parser.add_argument('--output', default=None, help='write here instead of stdout')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  paths = [p for value in args.gin_search_paths for p in value.split(',') if p]
  try:
    text = t5x_gin.convert_file(args.config, paths)
  except t5x_gin.T5xGinError as e:
    print(f'ERROR: {e}', file=sys.stderr)
    return 2
  if args.output:
    with open(args.output + '.tmp', 'w') as f:
      f.write(text)
    os.replace(args.output + '.tmp', args.output)
  else:
    sys.stdout.write(text)
  return 0


if __name__ == '__main__':
  from flanx import cli_errors  # pylint: disable=g-import-not-at-top
  sys.exit(cli_errors.run(main))
