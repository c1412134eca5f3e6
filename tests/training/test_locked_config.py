"""The engine imports flanx's own `tasks` late (gin_config.tasks_module), often after train/eval/infer have locked
the gin config. Importing any of `tasks` registers the whole package's configurables, so a run on the user's own
task module, which never imported `tasks` before, must still reach them: CI's kill -9 resume of such a run failed
with "Attempted to add a new configurable after the config was locked" when tf_data_autotune imported
tasks.cached_reads plainly.

Each site runs in a fresh interpreter, so no earlier import in this test process hides the late one.
"""

import json
import subprocess
import sys

from train_helpers import REPO, subprocess_env

_PROBE = """
import json, sys
import gin
from flanx.inference import eval_report, infer
from flanx.interop import hf_tokenizer
from flanx.training import data
gin.finalize()
assert not [m for m in sys.modules if m == 'tasks' or m.startswith('tasks.')]
out = {}
out['autotune'] = data.tf_data_autotune()
out['prompts'] = [p['inputs'] for p in infer.read_prompts(sys.argv[1])]
out['dolly'] = [p['inputs'] for p in infer.read_prompts(sys.argv[2], infer._prompt_template('dolly', ''))]
out['bbh'] = len(eval_report._suite_tasks('bbh'))
out['mmlu'] = len(eval_report._categories())
print(json.dumps(out))
"""


def test_late_tasks_imports_work_after_the_config_is_locked(tmp_path):
  plain, dolly = tmp_path / 'plain.jsonl', tmp_path / 'dolly.jsonl'
  plain.write_text(json.dumps({'inputs': 'Say hi.'}) + '\n')
  dolly.write_text(json.dumps({'instruction': 'Name a colour.', 'context': '', 'category': 'open_qa'}) + '\n')
  done = subprocess.run([sys.executable, '-c', _PROBE, str(plain), str(dolly)], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  from flanx.inference import infer  # pylint: disable=g-import-not-at-top  (here, with `tasks` imported first)
  from tasks import bbh, cached_reads, mmlu  # pylint: disable=g-import-not-at-top
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out['autotune'] == (not cached_reads.few_cores())
  assert out['prompts'] == ['Say hi.']
  assert out['dolly'] == [p['inputs'] for p in infer.read_prompts(str(dolly), infer._prompt_template('dolly', ''))]
  assert 'Name a colour.' in out['dolly'][0]
  assert out['bbh'] == len(bbh.TASKS) and out['mmlu'] == len(mmlu.CATEGORIES)
