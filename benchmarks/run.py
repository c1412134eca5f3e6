"""The benchmark suite: flanx vs transformers' torch T5 on this machine; writes results.json and results.md.

  python -m benchmarks                          # CPU rows: T1, T2 (small), D1 (small), P1
  python -m benchmarks --suite T1,D1 --quick    # tiny-model smoke run (seconds)
  python -m benchmarks --device gpu --out runs/bench_h100   # on a GPU VM: bf16 rows, HF eager + torch.compile

Each side of each row runs in its own process (benchmarks/worker.py), so peak memory and threads are its own.
Random-init weights; nothing is downloaded. See BENCHMARKS.md for the method and recorded numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import common
from benchmarks import report
from benchmarks import suite as suite_lib

NOTES = [
    'Training: flanx runs flanx.training.steps.make_train_step (jitted forward + backward + t5x Adafactor, '
    'lr 1e-3, z-loss 1e-4, summed loss) on seqio-packed rows; HF runs T5ForConditionalGeneration forward + '
    'backward + transformers Adafactor (relative_step=False, scale_parameter=True, decay_rate=-0.8, '
    'clip_threshold=1.0, beta1=None, eps=(1e-30, 1e-3)) on padded unpacked rows of the same shape (HF T5 cannot '
    'pack), with attention_mask and -100 labels on padding. tokens/s counts every slot (same compute on both '
    'sides); non-padding tokens/s counts real tokens, so its ratio includes the gain from packing.',
    'Both sides start from random init with the same config and parameter count (HF head untied as in Flan-T5). '
    'Batches are prepared before timing; the median of the timed steps is reported after untimed warm-up '
    'steps (the first compiles).',
    'Decoding: flanx = encode + init_cache + make_step_fn + flanx.model.decoding greedy/sample (as '
    'flanx.inference.predict.make_predict_fn) with eos_id=-1 so exactly new_tokens tokens are generated; HF = '
    'model.generate with eos_token_id=None and min_new_tokens = max_new_tokens; temperature-1 sampling without '
    'top-k/top-p on both; inputs are full-length random ids. Each call includes encoding.',
    'Peak memory: process peak RSS on CPU (includes the libraries); device peak_bytes_in_use (JAX) and '
    'torch.cuda.max_memory_allocated on GPU.',
    'On CPU, torch workers run with OMP_WAIT_POLICY=PASSIVE: on a shared, loaded 2-core machine spinning '
    'OpenMP threads otherwise slow small torch ops by up to ~50x (measured), which would flatter flanx.',
]


def _probe_device(env: dict) -> dict:
  """Platform, device kind and count that JAX sees in a fresh process (keeps this process off the GPU)."""
  code = ('import jax, json; d = jax.devices(); '
          'print(json.dumps({"platform": d[0].platform, "device_kind": d[0].device_kind, "device_count": len(d)}))')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _worker_env(device: str, impl: str) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(common.REPO), env.get('PYTHONPATH')]))
  if device == 'cpu':
    env.update(JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
    if impl.startswith('hf'):
      env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  elif device == 'gpu':
    env.setdefault('CUDA_VISIBLE_DEVICES', '0')  # one GPU: the same device for flanx and torch
  return env


def _run_worker(spec: dict, device: str, workdir: pathlib.Path, timeout: float) -> dict:
  """Runs one side in a subprocess; returns its result or {'error': ...}."""
  name = f"{spec['id']}_{spec['model']}_{spec['impl']}_{len(list(workdir.iterdir()))}"
  spec_path, result_path = workdir / f'{name}.spec.json', workdir / f'{name}.result.json'
  spec_path.write_text(json.dumps(spec))
  print(f"[bench] {spec['id']} {spec['model']} {spec['impl']} ...", flush=True)
  try:
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.worker', str(spec_path), str(result_path)],
                          env=_worker_env(device, spec['impl']), cwd=common.REPO, capture_output=True, text=True,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout:.0f} s'}
  if proc.returncode != 0 or not result_path.exists():
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {'error': f'worker exit {proc.returncode}: ' + ' / '.join(tail)}
  return json.loads(result_path.read_text())


def _base_row(row: dict, impl: str) -> dict:
  keep = ('id', 'kind', 'title', 'model', 'dtype')
  return {**{k: row[k] for k in keep}, 'impl': impl}


def run_train(row: dict, device: str, data: str, workdir: pathlib.Path, args, peak: float | None) -> list[dict]:
  """Both sides of one training row: packed batches for flanx, unpacked for HF, same data and shape."""
  from benchmarks import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from flanx.model import flops  # pylint: disable=g-import-not-at-top
  config = common.load_config(row['model'], row['dtype'])
  flops_per_seq = flops.train_flops(config, row['inputs'], row['targets'])
  lengths = {'inputs': row['inputs'], 'targets': row['targets']}
  count = min(row['warmup'] + row['steps'], 4)
  group = f"{row['id']}:{row['model']}:{row['batch']}:{row['inputs']}/{row['targets']}"
  out = []
  for impl in ['flanx'] + row['hf_impls']:
    pack = impl == 'flanx'
    base = {**_base_row(row, impl), 'group': group, 'batch': row['batch'], 'inputs': row['inputs'],
            'targets': row['targets'], 'packed': pack, 'warmup': row['warmup'], 'steps': row['steps'],
            'remat': row.get('remat', 'none'), 'scan_layers': row.get('scan_layers', False),
            'data': f"{data} ({'+'.join(row['cot_variants'])})" if data == 'cot' else data}
    try:
      stacked = batches_lib.make_batches(data, lengths, row['batch'], count, pack, seed=args.seed,
                                         cot_variants=tuple(row['cot_variants']))
    except Exception as e:  # pylint: disable=broad-except
      out.append({**base, 'error': f'batches: {type(e).__name__}: {e}'})
      continue
    stats = {**batches_lib.padding_stats(stacked, pack), 'steps': count}
    path = workdir / f"batches_{row['id']}_{row['model']}_{impl}.npz"
    np.savez(path, **stacked)
    spec = {**row, 'impl': impl, 'batches_path': str(path), 'seed': args.seed}
    raw = _run_worker(spec, device, workdir, args.worker_timeout)
    if 'error' in raw:
      out.append({**base, **raw})
      continue
    out.append({**base, **report.train_metrics(row, raw, stats, flops_per_seq, peak),
                'step_times_s': raw['step_times_s'], 'first_step_s': raw['first_step_s'],
                'peak_memory_bytes': raw['peak_memory_bytes'], 'memory_kind': raw['memory_kind'],
                'params': raw['params'], 'worker_device': raw['device'], 'load_average': raw['load_average']})
    print(f"[bench]   {out[-1]['tokens_per_s']:,.0f} tokens/s, {out[-1]['nonpad_tokens_per_s']:,.0f} "
          f"non-padding tokens/s", flush=True)
  return out


def run_decode(row: dict, device: str, workdir: pathlib.Path, args, peak: float | None, hf: bool) -> list[dict]:
  """flanx and HF `generate` over every (mode, batch) of the row."""
  from flanx.model import flops  # pylint: disable=g-import-not-at-top
  config = common.load_config(row['model'], row['dtype'])
  flops_per_seq = flops.forward_flops(config, row['inputs'], row['new_tokens'])
  out = []
  for impl in ['flanx'] + (['hf_generate'] if hf else []):
    raw = _run_worker({**row, 'impl': impl, 'seed': args.seed}, device, workdir, args.worker_timeout)
    for mode in row['modes']:
      for batch in row['batches']:
        base = {**_base_row(row, impl), 'group': f"D1:{row['model']}:{mode}:{batch}", 'mode': mode,
                'batch': batch, 'inputs': row['inputs'], 'new_tokens': row['new_tokens'],
                'warmup': row['warmup'], 'steps': row['steps']}
        if 'error' in raw:
          out.append({**base, **raw})
          continue
        case = next(c for c in raw['cases'] if c['mode'] == mode and c['batch'] == batch)
        out.append({**base, **report.decode_metrics(case, row, raw, flops_per_seq, peak),
                    'step_times_s': case['step_times_s'], 'first_step_s': case['first_step_s'],
                    'peak_memory_bytes': raw['peak_memory_bytes'], 'memory_kind': raw['memory_kind'],
                    'params': raw['params'], 'worker_device': raw['device'], 'load_average': raw['load_average']})
  return out


def run_pipeline(row: dict, args) -> list[dict]:
  """P1 via benchmarks/pipeline.py, in this process (host CPU work): packed and unpacked per length pair."""
  from benchmarks import batches as batches_lib  # pylint: disable=g-import-not-at-top
  batches_lib.hide_gpus_from_tensorflow()
  from benchmarks import pipeline  # pylint: disable=g-import-not-at-top
  print('[bench] P1 pipeline ...', flush=True)
  name = pipeline.register_mixture(str(batches_lib.COT_DIR), str(batches_lib.VOCAB), ['zs_reasoning'])
  out = []
  for inputs, targets in row['lengths']:
    pair = []
    for pack in (True, False):
      start = common.load_average()
      r = pipeline.measure(name, {'inputs': inputs, 'targets': targets}, pack, row['batch_size'], row['batches'],
                           row['warmup'], args.seed)
      slots = r['batches'] * r['batch_size'] * (inputs + targets)
      pair.append({'id': 'P1', 'kind': 'pipeline', 'title': row['title'], 'impl': 'seqio', 'inputs': inputs,
                   'targets': targets, 'pack': pack, 'batch': row['batch_size'], 'batches': r['batches'],
                   'seconds': r['seconds'], 'startup_seconds': r['startup_seconds'],
                   'examples_per_s': r['examples_per_second'], 'tokens_per_s': slots / r['seconds'],
                   'nonpad_tokens_per_s': r['tokens_per_second'], 'examples_per_row': r['examples_per_row'],
                   'non_padding_fraction_inputs': r['non_padding_fraction_inputs'],
                   'non_padding_fraction_targets': r['non_padding_fraction_targets'],
                   'data': 'cot (zs_reasoning), dev_8k vocabulary',
                   'load_average': {'start': start, 'end': common.load_average()}})
    pair[0]['packed_over_unpacked'] = pair[0]['examples_per_s'] / pair[1]['examples_per_s']
    out += pair
  return out


def _versions() -> dict:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'torch', 'transformers', 'seqio', 'tensorflow'):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def _write_atomically(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)


def main(argv: list[str] | None = None) -> dict:
  """Runs the selected rows and writes results.json and results.md; exits 1 if any row failed."""
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--suite', default=','.join(suite_lib.ALL), help='comma-separated rows: T1,T2,T3,D1,P1')
  parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'gpu', 'tpu'])
  parser.add_argument('--quick', action='store_true', help='tiny model, short lengths, one timed step')
  parser.add_argument('--data', default='auto', choices=['auto', 'cot', 'synthetic'],
                      help='training batches: real CoT data (shared data dir) or seeded synthetic examples; '
                           'auto = cot when present, synthetic in --quick mode')
  parser.add_argument('--out', default='runs/benchmarks', help='directory for results.json and results.md')
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help='per-device peak for MFU (default: flanx.model.flops table by device kind; none on CPU)')
  parser.add_argument('--worker_timeout', type=float, default=3600.0, help='seconds per measured side')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  wanted = tuple(s.strip() for s in args.suite.split(',') if s.strip())

  from benchmarks import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from flanx.model import flops  # pylint: disable=g-import-not-at-top
  probe_env = _worker_env('cpu' if args.device == 'cpu' else 'auto', 'flanx')
  device_info = _probe_device(probe_env)
  platform = device_info['platform'] if args.device == 'auto' else args.device
  if args.device not in ('auto', device_info['platform']):
    raise SystemExit(f'--device {args.device}: JAX sees {device_info["platform"]} ({device_info["device_kind"]})')
  try:
    rows, skipped = suite_lib.plan(platform, args.quick, wanted)
  except ValueError as e:
    raise SystemExit(str(e)) from e
  if not batches_lib.cot_available() and any(r['kind'] == 'pipeline' for r in rows):
    rows = [r for r in rows if r['kind'] != 'pipeline']
    skipped.append({'id': 'P1', 'reason': f'needs the real CoT data and dev vocabulary ({batches_lib.COT_DIR}, '
                                          f'{batches_lib.VOCAB}); not on this machine'})
  data = args.data
  if data == 'auto':
    data = 'synthetic' if args.quick or not batches_lib.cot_available() else 'cot'
  peak_tflops = args.peak_tflops or (flops.peak_flops_per_device(device_info['device_kind']) or 0) / 1e12 or None
  peak = peak_tflops * 1e12 if peak_tflops else None

  out_dir = pathlib.Path(args.out)
  result = {
      'quick': args.quick, 'suite': list(wanted), 'device': device_info, 'platform': platform,
      'host': common.host_facts(), 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'commit': common.git_commit(), 'command': ' '.join(['python -m benchmarks'] + [shlex.quote(a) for a in
                                                                                     (argv or sys.argv[1:])]),
      'load_average': {'start': common.load_average()}, 'peak_tflops': peak_tflops, 'data': data,
      'versions': _versions(), 'flops_formula': report.FLOPS_FORMULA, 'notes': NOTES,
      'rows': [], 'skipped': skipped,
  }
  with tempfile.TemporaryDirectory(prefix='flanx_bench_') as tmp:
    workdir = pathlib.Path(tmp)
    for row in rows:
      if row['kind'] == 'train':
        result['rows'] += run_train(row, platform, data, workdir, args, peak)
      elif row['kind'] == 'decode':
        result['rows'] += run_decode(row, platform, workdir, args, peak, hf=platform != 'tpu')
      else:
        result['rows'] += run_pipeline(row, args)
  result['load_average']['end'] = common.load_average()
  report.add_ratios(result['rows'])
  out_dir.mkdir(parents=True, exist_ok=True)  # only now: an interrupted run leaves nothing behind
  _write_atomically(out_dir / 'results.json', json.dumps(result, indent=1) + '\n')
  _write_atomically(out_dir / 'results.md', report.markdown(result))
  print(report.markdown(result))
  failed = [r for r in result['rows'] if r.get('error')]
  if failed:
    print(f'[bench] {len(failed)} row(s) failed: ' + '; '.join(f"{r['id']} {r.get('impl', '')}: {r['error']}"
                                                               for r in failed), file=sys.stderr)
    sys.exit(1)
  return result


if __name__ == '__main__':
  main()
