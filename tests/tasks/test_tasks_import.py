"""`import tasks` is cheap: < 1 s over seqio, no data or network access, never imports flanx."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

PROBE = r'''
import json, os, sys, time
import seqio
events = []
def hook(event, args):
  if event == 'open' and args and isinstance(args[0], (str, bytes, os.PathLike)):
    events.append(('open', os.fsdecode(args[0])))
  elif event.startswith('socket.') or event in ('urllib.Request', 'http.client.connect'):
    events.append((event, str(args[:1])))
sys.addaudithook(hook)
start = time.perf_counter()
import tasks
elapsed = time.perf_counter() - start
print(json.dumps({
    'elapsed': elapsed, 'events': events,
    'flanx': sorted(m for m in sys.modules if m == 'flanx' or m.startswith('flanx.')),
    'tasks': len(seqio.TaskRegistry.names()), 'mixtures': sorted(seqio.MixtureRegistry.names()),
}))
'''


@pytest.mark.slow
def test_import_is_cheap_and_touches_only_python_modules(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu',
             FLANX_DOLLY_PATH=str(tmp_path / 'absent.jsonl'),
             FLANX_VOCAB=str(tmp_path / 'no.model'))
  out = subprocess.run([sys.executable, '-c', PROBE], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result['elapsed'] < 1.0
  assert result['flanx'] == []
  assert result['mixtures'] == sorted([
      'cot_native', 'dolly_categories', 'flan2021_submix', 't0_submix', 'niv2_submix',
      'cot_submix', 'dialog_submix', 'flan2022_submix', 'dolly_flan', 'bbh_direct', 'bbh_cot', 'mmlu_direct'])
  assert result['tasks'] >= 1 + 8 + 1 + 36 + 14 + 2 * 27 + 57
  network = [e for e in result['events'] if e[0] != 'open']
  assert network == []
  opened = [path for _, path in (e for e in result['events'] if e[0] == 'open')]
  data = [p for p in opened if not (p.endswith(('.py', '.pyc', '.so')) or os.path.isdir(p))]
  assert data == []
