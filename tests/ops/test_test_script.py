"""scripts/test.sh: test paths narrow the run; without one (options only, as .ci/run passes) it is all of tests/.

The real script runs the real pytest, with FLANX_SKIP_SETUP=1 on this test's own environment (no install); a
probe plugin prints the paths pytest resolved and stops before collecting, so each case takes about
a second or two.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PROBE = '''
import json
import pytest

def pytest_collection(session):
  print('PROBE' + json.dumps({'args': list(session.config.args), 'markexpr': session.config.option.markexpr,
                              'keyword': session.config.option.keyword}))
  pytest.exit('probe done', returncode=0)
'''


def _resolved(tmp_path, *args):
  (tmp_path / 'flanx_args_probe.py').write_text(PROBE)
  env = dict(os.environ, FLANX_SKIP_SETUP='1', FLANX_VENV=sys.prefix,
             PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
  out = subprocess.run(['bash', str(REPO / 'scripts' / 'test.sh'), '-p', 'flanx_args_probe', *args], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
  line = next((l for l in out.stdout.splitlines() if l.startswith('PROBE')), None)
  assert line is not None, out.stdout + out.stderr
  found = json.loads(line[len('PROBE'):])
  found['args'] = [str(pathlib.Path(a).resolve().relative_to(REPO)) if os.path.isabs(a) else a
                   for a in found['args']]
  return found


@pytest.mark.slow  # a subprocess each (about 1.5 s)
@pytest.mark.parametrize('args', [('-q',), ('-m', 'not slow'), ('-x', '-k', 'interop'), ('-m', 'tests/interop')])
def test_options_alone_run_the_whole_tests_folder(tmp_path, args):
  found = _resolved(tmp_path, *args)
  assert found['args'] == ['tests'], found
  for flag, option in (('-m', 'markexpr'), ('-k', 'keyword')):  # the option values reach pytest as options
    if flag in args:
      assert found[option] == args[args.index(flag) + 1]


@pytest.mark.slow  # a subprocess each (about 1.5 s)
@pytest.mark.parametrize('args, paths', [
    (('tests/interop',), ['tests/interop']),
    (('-m', 'not slow', 'tests/interop', 'tests/ops/test_cpu_peak.py'), ['tests/interop', 'tests/ops/test_cpu_peak.py']),
    (('tests/ops/test_cpu_peak.py::test_utilization_is_model_flops_over_median_time_and_peak', '-k', 'x'),
     ['tests/ops/test_cpu_peak.py::test_utilization_is_model_flops_over_median_time_and_peak']),
])
def test_paths_narrow_the_run(tmp_path, args, paths):
  found = _resolved(tmp_path, *args)
  assert found['args'] == paths, found
