"""A built wheel, installed (not editable) in a fresh virtualenv, trains and exports from outside the checkout.

The fresh environment reuses the project environment's third-party packages (a path entry, so the editable
install's hook is not loaded) and installs flanx itself only from the wheel: the gin files, the demo data and the
endpoint handler must come from the package, never from the source tree.
"""

from __future__ import annotations

import os
import pathlib
import site
import subprocess
import sys
import sysconfig
import venv

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(args, cwd, env, timeout=900):
  proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{args}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}'
  return proc


def test_wheel_in_fresh_venv_trains_and_exports(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
  wheels = tmp_path / 'wheels'
  _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(wheels),
        str(REPO)], cwd=tmp_path, env=env)
  wheel = next(wheels.glob('flanx-*.whl'))

  fresh = tmp_path / 'venv'
  venv.EnvBuilder(with_pip=False).create(fresh)
  python = fresh / 'bin' / 'python'
  fresh_site = pathlib.Path(subprocess.check_output(
      [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], text=True).strip())
  deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()['purelib']] if os.path.isdir(p)]
  (fresh_site / 'project_deps.pth').write_text('\n'.join(dict.fromkeys(deps)) + '\n')
  _run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '-q', str(wheel)],
       cwd=tmp_path, env=env)

  work = tmp_path / 'elsewhere'
  work.mkdir()
  where = _run([python, '-c', 'import flanx, tasks; print(flanx.__file__); print(tasks.__file__)'], work, env)
  assert all(str(REPO) not in line for line in where.stdout.splitlines()), where.stdout

  run_dir = work / 'run'
  _run([python, '-m', 'flanx.train', '--gin_file=runs/demo.gin', '--gin_file=models/tiny.gin',
        f'--gin.MODEL_DIR="{run_dir}"', '--gin.TRAIN_STEPS=2', '--gin.BATCH_SIZE=2', '--gin.CHECKPOINT_PERIOD=2',
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", '--gin.T5Config.vocab_size=384',
        '--gin.train.progress_bar=False'], work, env)
  assert (run_dir / 'checkpoint_2').is_dir()
  out = work / 'hf'
  _run([python, '-m', 'flanx.export', f'--checkpoint_dir={run_dir}', f'--output_dir={out}'], work, env)
  assert (out / 'handler.py').read_text() == (REPO / 'flanx' / 'interop' / 'endpoint_handler.py').read_text()
  assert (out / 'model.safetensors').is_file() and (out / 'config.json').is_file()
