#!/usr/bin/env python3
"""Proves every shipped recipe fits its TPU pod: compiles each recipe's train step for each pod it names.

Every gin/recipes/*.gin names its pod(s) on a line `# tpu: v3-128` (several allowed). For each pair this runs
`python -m flanx.train --gin_file=recipes/NAME.gin --topology=TPU --compile_only` (on this machine's CPU, with
libtpu; nothing runs on a TPU) and writes the table (per-device memory, HBM, fits, compile seconds) into
gin/recipes/README.md between its markers, with the date, commit and versions.

  .venv/bin/python scripts/recipe_table.py            # every recipe; rewrites the table; exit 1 if one does not fit
  .venv/bin/python scripts/recipe_table.py --jobs 3   # three compiles at a time
  .venv/bin/python scripts/recipe_table.py --update NAME ...  # recompile these recipes, keep the other rows
  .venv/bin/python scripts/recipe_table.py NAME ...   # only these recipes (file names); prints, writes nothing
  .venv/bin/python scripts/recipe_table.py NAME --gin make_mesh.model=4 --collectives
      # a variant (gin bindings added to each compile; printed, never recorded), with the collective bytes of each
      # compiled step (scripts/hlo_collectives.py)

The rows are kept in gin/recipes/recipe_table.json (each with its date and commit); the README is made from it.

XXL and UL2 compiles take minutes each on a small machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = REPO_ROOT / 'gin' / 'recipes'
README = RECIPES / 'README.md'
RESULTS = RECIPES / 'recipe_table.json'
START, END = '<!-- recipe-table:start (scripts/recipe_table.py writes this part) -->', '<!-- recipe-table:end -->'
GIB = 2 ** 30
# Compile-only needs the run's required macros; nothing is read from or written to these.
PLACEHOLDERS = ["--gin.MODEL_DIR='/nonexistent/compile-only'"]


def recipe_targets(path: pathlib.Path) -> list[str]:
  """The pods a recipe names on its `# tpu: ACCELERATOR` lines."""
  return re.findall(r'^#\s*tpu:\s*([\w-]+)\s*$', path.read_text(encoding='utf-8'), flags=re.MULTILINE)


def compile_recipe(path: pathlib.Path, accelerator: str, workdir: pathlib.Path, bindings: tuple[str, ...] = (),
                   collectives: bool = False) -> dict:
  """Runs the compile-only check of one recipe on one pod (with extra gin `bindings`; counting the collectives of
  the compiled steps when asked); returns its JSON report (or an error row)."""
  report = workdir / f'{path.stem}.{accelerator}.json'
  command = ['scripts/hlo_collectives.py'] if collectives else ['-m', 'flanx.train']
  argv = [sys.executable, *command, f'--gin_file=recipes/{path.name}', *PLACEHOLDERS,
          *(f'--gin.{b}' for b in bindings), f'--topology={accelerator}', '--compile_only',
          f'--compile_report={report}']
  start = time.perf_counter()
  proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  sys.stdout.write(proc.stdout)
  if proc.returncode not in (0, 3) or not report.exists():
    error = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    if proc.returncode < 0:  # killed by a signal: the TPU compiler itself crashed (or the run was stopped)
      error = f'the compile process died of signal {-proc.returncode}' + (
          ' (the TPU compiler overflowed its stack)' if 'STACK OVERFLOW' in proc.stderr else '')
    print(f'{path.name} on {accelerator}: error (exit {proc.returncode}): {error}', file=sys.stderr)
    return {'recipe': path.name, 'accelerator': accelerator, 'error': error, **stamp()}
  result = json.loads(report.read_text())
  result.update(recipe=path.name, wall_seconds=round(seconds, 1), **stamp())
  if bindings:
    result['bindings'] = list(bindings)
  return result


def stamp() -> dict:
  """When and at which commit a row was compiled."""
  git = lambda *a: subprocess.run(['git', '-C', str(REPO_ROOT), *a], capture_output=True, text=True).stdout.strip()
  commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
  # The table's own files (this script writes them as rows finish) are not changes to what is compiled.
  if git('status', '--porcelain', '--', 'gin', 'flanx', f':(exclude){README.relative_to(REPO_ROOT)}',
         f':(exclude){RESULTS.relative_to(REPO_ROOT)}'):
    commit += '+local changes'
  return {'compiled_at': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
          'commit': commit}


def table(rows: list[dict]) -> str:
  """The markdown table of the compile reports."""
  lines = ['| recipe | TPU | topology | devices (hosts) | mesh | remat / fsdp / scan | per-device GiB | usable HBM GiB '
           '(nominal) | fits | headroom GiB | compile s | compiled at (commit) |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    if 'error' in r:
      when = f'{r["compiled_at"]} ({r["commit"]})' if 'compiled_at' in r else ''
      lines.append(f'| {r["recipe"]} | {r["accelerator"]} | | | | | | | error: {r["error"]} | | | {when} |')
      continue
    levers = r['levers']
    mesh = ' × '.join(f'{k} {v}' for k, v in r['mesh'].items())
    lines.append(
        f'| {r["recipe"]} | {r["accelerator"]} | {r["topology"]} | {r["num_devices"]} ({r["num_hosts"]}) | {mesh} | '
        f'{levers["remat"]} / {"yes" if levers["fsdp"] else "no"} / {"yes" if levers["scan_layers"] else "no"} | '
        f'{r["per_device_bytes"]["total"] / GIB:.2f} | {r["usable_hbm_bytes_per_device"] / GIB:.2f} '
        f'({r["hbm_bytes_per_device"] / GIB:g}) | {"yes" if r["fits"] else "**no**"} | '
        f'{r["headroom_bytes"] / GIB:.2f} | {r["compile_seconds"]:.0f} | {r["compiled_at"]} ({r["commit"]}) |')
  return '\n'.join(lines)


def provenance() -> str:
  """Date, commit and versions the table was made with."""
  from importlib import metadata
  version = lambda name: metadata.version(name) if _installed(name) else 'not installed'
  return (f'Generated by `python scripts/recipe_table.py` (jax {version("jax")}, libtpu {version("libtpu")}), '
          'compiling on a CPU for each pod; each row says when and at which commit (+local changes: with '
          'uncommitted edits in gin/ or flanx/) it was compiled.')


def _installed(name: str) -> bool:
  from importlib import metadata
  try:
    metadata.version(name)
    return True
  except metadata.PackageNotFoundError:
    return False


def write_readme(text: str) -> None:
  """Replaces the part of gin/recipes/README.md between the markers."""
  readme = README.read_text(encoding='utf-8')
  if START not in readme or END not in readme:
    raise SystemExit(f'{README} lacks the markers {START} ... {END}')
  head, rest = readme.split(START, 1)
  _, tail = rest.split(END, 1)
  README.write_text(f'{head}{START}\n{text}\n{END}{tail}', encoding='utf-8')


def main(argv: list[str] | None = None) -> int:
  """Compiles the recipes; returns 0 when every one fits."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('recipes', nargs='*', help='recipe file names (default: all, and the README is rewritten)')
  parser.add_argument('--jobs', type=int, default=1, help='compiles at a time (each takes a few GB of RAM)')
  parser.add_argument('--update', action='store_true', help='record the named recipes\' rows, keep the others')
  parser.add_argument('--gin', action='append', default=[], metavar='BINDING',
                      help='a gin binding added to each compile, e.g. make_mesh.model=4 (printed, never recorded: '
                           'the table shows the recipes as shipped)')
  parser.add_argument('--collectives', action='store_true',
                      help='also count each compiled step\'s collective bytes (scripts/hlo_collectives.py)')
  args = parser.parse_args(argv)
  if args.gin and (args.update or not args.recipes):
    raise SystemExit('--gin compiles a variant of named recipes; it is printed, not recorded (set the value in the '
                     'recipe or its hardware gin, then --update)')
  record = args.update or not args.recipes
  paths = [RECIPES / name for name in args.recipes] or sorted(RECIPES.glob('*.gin'), key=_size_rank)
  for path in paths:
    if not path.is_file():
      raise SystemExit(f'no such recipe: {path}')
  pairs = [(path, accelerator) for path in paths for accelerator in recipe_targets(path) or ['?']]
  results: dict[int, dict] = {}
  lock = threading.Lock()

  def run(index: int, path: pathlib.Path, accelerator: str, tmp: pathlib.Path) -> None:
    if accelerator == '?':
      row = {'recipe': path.name, 'accelerator': '?', 'error': 'no `# tpu: ACCELERATOR` line'}
    else:
      row = compile_recipe(path, accelerator, tmp, tuple(args.gin), args.collectives)
    with lock:
      results[index] = row
      if record:  # the table so far, so a long run leaves its results even if it is stopped
        save(_in_order(results, pairs), replace_all=not args.recipes)

  with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    for future in [pool.submit(run, i, path, accelerator, pathlib.Path(tmp))
                   for i, (path, accelerator) in enumerate(pairs)]:
      future.result()
  rows = _in_order(results, pairs)
  text = f'{provenance()}\n\n{table(rows)}'
  print(text)
  if args.gin or args.collectives:  # the full reports of a variant, for the record of a comparison
    print(json.dumps(rows, indent=1))
  return 0 if all(r.get('fits') for r in rows) else 1


def save(rows: list[dict], replace_all: bool) -> None:
  """Records rows in recipe_table.json (keeping other recipes' rows unless replace_all) and rewrites the README."""
  old = [] if replace_all or not RESULTS.exists() else json.loads(RESULTS.read_text())['rows']
  fresh = {(r['recipe'], r['accelerator']): r for r in rows if r.get('error') != 'not compiled yet'}
  existing = {p.name for p in RECIPES.glob('*.gin')}
  kept = [r for r in old if (r['recipe'], r['accelerator']) not in fresh and r['recipe'] in existing]
  merged = kept + list(fresh.values())
  done = {(r['recipe'], r['accelerator']) for r in merged}
  merged += [{'recipe': p.name, 'accelerator': a, 'error': 'not compiled yet'} for p in RECIPES.glob('*.gin')
             for a in recipe_targets(p) if (p.name, a) not in done]
  merged.sort(key=lambda r: (_size_rank(RECIPES / r['recipe']), r['accelerator']))
  RESULTS.write_text(json.dumps({'rows': [r for r in merged if r.get('error') != 'not compiled yet']}, indent=1)
                     + '\n', encoding='utf-8')
  write_readme(f'{provenance()}\n\n{table(merged)}')


def _in_order(results: dict[int, dict], pairs: list) -> list[dict]:
  """Rows in recipe order; pairs not compiled (yet) say so."""
  return [results.get(i, {'recipe': p.name, 'accelerator': a, 'error': 'not compiled yet'})
          for i, (p, a) in enumerate(pairs)]


def _size_rank(path: pathlib.Path) -> tuple[int, str]:
  """Smaller models first (their compiles are quick)."""
  text = path.read_text(encoding='utf-8')
  sizes = ('small', 'base', 'large', 'xl', 'xxl', 'ul2')
  rank = max((i for i, size in enumerate(sizes) if f'_{size}.gin' in text), default=len(sizes))
  return rank, path.name


if __name__ == '__main__':
  sys.exit(main())
