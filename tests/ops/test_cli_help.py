"""Every --flag README.md shows for a `python -m flanx.X` command appears in that command's --help.

The commands are read from README.md's bash blocks and inline code (`python -m flanx.train … --topology=…`), and
each command's real `main(['--help'])` prints its help (argparse exits 0 after printing).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CLIS = ('train', 'eval', 'infer', 'export', 'import_t5x', 'from_t5x_gin', 'demo')


def readme_flags() -> dict[str, set[str]]:
  """{'train': {'--gin_file', '--topology', …}, …}: the flags README.md shows with each command."""
  text = (REPO / 'README.md').read_text()
  lines = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    lines += block.replace('\\\n', ' ').splitlines()
  lines += re.findall(r'(?<!`)`(python -m flanx\.[^`]+)`', text)
  found: dict[str, set[str]] = {}
  for line in lines:
    line = line.split('  #')[0].strip()
    if not line.startswith('python -m flanx.'):
      continue
    module = line.split()[2].split('.', 1)[1]
    flags = found.setdefault(module, set())
    for name, dot in re.findall(r'(?<![\w-])(--[A-Za-z]\w*)(\.?)', line):
      flags.add('--gin.KEY=VALUE' if name == '--gin' and dot else name)
  return found


FLAGS = readme_flags()


def help_text(cli: str) -> str:
  module = importlib.import_module(f'flanx.{cli}')
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
    module.main(['--help'])
  assert exit_info.value.code in (0, None)
  return out.getvalue()


def test_the_readme_shows_flags_of_the_main_commands():
  assert {'train', 'eval', 'infer', 'export', 'import_t5x', 'from_t5x_gin', 'demo'} <= set(FLAGS), FLAGS
  assert {'--topology', '--compile_only', '--compile_report', '--suggest', '--gin_file'} <= FLAGS['train']
  assert {'--checkpoint_dir', '--output_dir', '--adapter_only', '--merge'} <= FLAGS['export']


@pytest.mark.parametrize('cli', CLIS)
def test_help_lists_every_flag_the_readme_shows(cli):
  text = help_text(cli)
  missing = sorted(flag for flag in FLAGS.get(cli, ()) if not re.search(re.escape(flag) + r'(?![\w.])', text))
  assert not missing, f'python -m flanx.{cli} --help lacks {missing}:\n{text}'


def test_compile_only_help_lists_all_its_flags():
  from flanx.training import aot
  own = [a for action in aot.flag_parser()._actions for a in action.option_strings]  # pylint: disable=protected-access
  assert {'--topology', '--compile_only', '--compile_report', '--suggest', '--step_time'} <= set(own)
  for cli in ('train', 'eval', 'infer'):
    text = help_text(cli)
    assert all(flag in text for flag in own), (cli, own)
