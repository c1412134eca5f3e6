"""Every `python -m flanx.…` command line in README.md, verbatim, parses: flags, gin files and every binding.

The commands name gs:// buckets and public checkpoints that cannot be reached here, so each is taken up to the
point where the real entry point would start working: its flags and its whole gin configuration (files found,
task modules imported first, every configurable and macro known, config finalized).
"""

from __future__ import annotations

import pathlib
import re
import shlex

import gin
import pytest

from flanx import demo, export, gin_config, import_t5x

REPO = pathlib.Path(__file__).resolve().parents[2]
_ENTRY_MODULES = {'flanx.train': 'flanx.training.loop', 'flanx.eval': 'flanx.inference.evaluate',
                  'flanx.infer': 'flanx.inference.infer'}


def readme_commands() -> list[list[str]]:
  """The `python -m flanx.X …` commands of README.md's bash blocks, line continuations joined, shell-split."""
  text = (REPO / 'README.md').read_text()
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      line = line.split('  #')[0].strip()
      if line.startswith('python -m flanx.'):
        commands.append(shlex.split(line)[2:])
  return commands


COMMANDS = readme_commands()


def test_the_readme_shows_every_entry_point():
  shown = {argv[0] for argv in COMMANDS}
  assert {'flanx.train', 'flanx.eval', 'flanx.infer', 'flanx.export', 'flanx.import_t5x'} <= shown, shown


@pytest.mark.parametrize('argv', COMMANDS, ids=[' '.join(a)[:60] for a in COMMANDS])
def test_readme_command_parses_verbatim(argv, monkeypatch):
  monkeypatch.chdir(REPO)
  module, args = argv[0], argv[1:]
  if module == 'flanx.export':
    flags, rest = export._flag_parser().parse_known_args(args)  # pylint: disable=protected-access
    assert flags.checkpoint_dir and flags.output_dir and not rest
    return
  if module == 'flanx.demo':  # its flags here; the whole demo runs in tests/e2e/test_demo.py
    demo.flag_parser().parse_args(args)
    return
  if module == 'flanx.import_t5x':
    flags, rest = import_t5x._flag_parser().parse_known_args(args)  # pylint: disable=protected-access
    assert flags.t5x_checkpoint and flags.output_dir and not rest
    return
  __import__(_ENTRY_MODULES[module])
  gin.clear_config()
  try:
    parsed, files, bindings = gin_config.parse_args(args, module)
    gin_config.parse_gin(files, bindings, parsed.gin_search_paths)
    for binding in bindings:  # each override is bound to what it names (macros included)
      key = binding.split('=', 1)[0].strip()
      assert gin.query_parameter(key if '.' in key else f'{key}/macro.value') is not None, key
  finally:
    gin.clear_config()
