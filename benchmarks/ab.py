"""Interleaved A/B benchmarks: flanx vs transformers' T5 (or flanx vs an older flanx) in one process.

  python -m benchmarks.ab train  --dtype float32 --rounds 3      # full train step, flan-t5-small 512/256 batch 8
  python -m benchmarks.ab parts  --dtype float32 --rounds 3      # forward / backward / optimizer / loss apart
  python -m benchmarks.ab decode --batches 1,8,32 --modes greedy,sample --rounds 2   # vs HF generate
  python -m benchmarks.ab step   --batches 1,8,32                # one decode step (KV cache) vs HF's
  python -m benchmarks.ab lever  --baseline REV [--what parts,step]   # flanx at git REV vs the working tree

Both sides live in this process and alternate (benchmarks/interleave.py): every ratio is the median of
per-round paired ratios, printed with its spread and refused when the spread exceeds --bound. Each
measurement records the load average. Results go to --out (JSON) and stdout (markdown lines).

The command line restarts itself once with glibc malloc keeping freed memory (REUSING_MALLOC), for both sides:
otherwise every call maps fresh pages for its temporaries (1.4M page faults per flanx train step, 5.3 GB), whose
cost in this VM swings a call by up to 1.5x. --system_malloc measures with the default allocator.
"""

from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # torch: no spinning OpenMP threads on a shared machine
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime  # pylint: disable=g-import-not-at-top,wrong-import-position
import hashlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.util  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import common, interleave, sides  # pylint: disable=g-import-not-at-top,wrong-import-position
from flanx.model import flops  # pylint: disable=g-import-not-at-top,wrong-import-position

CACHE = common.REPO / 'runs' / 'ab_cache'
# glibc: one arena, never mmap (freed blocks return to the heap), never trim the heap: freed memory is reused.
REUSING_MALLOC = {'MALLOC_ARENA_MAX': '1', 'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(1 << 40)}


def malloc_mode() -> str:
  """'reusing' when this process runs with REUSING_MALLOC, else 'system'."""
  return 'reusing' if all(os.environ.get(k) == v for k, v in REUSING_MALLOC.items()) else 'system'


def restart_with_reusing_malloc(argv: list[str]) -> None:
  """Re-executes `python -m benchmarks.ab argv` once under REUSING_MALLOC (glibc reads it at start-up only)."""
  if '--system_malloc' in argv or malloc_mode() == 'reusing':
    return
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, '-m', 'benchmarks.ab', *argv], {**os.environ, **REUSING_MALLOC})


def batches(data: str, batch: int, inputs: int, targets: int, count: int, pack: bool, variants: str) -> list[dict]:
  """`count` seqio batches, built once in a subprocess (TensorFlow stays out of the timed process), cached."""
  key = hashlib.sha1(repr((data, batch, inputs, targets, count, pack, variants)).encode()).hexdigest()[:12]
  path = CACHE / f'batches_{key}.npz'
  if not path.exists():
    CACHE.mkdir(parents=True, exist_ok=True)
    code = ('import numpy as np, sys; from benchmarks import batches as b; '
            f'd = b.make_batches({data!r}, {{"inputs": {inputs}, "targets": {targets}}}, {batch}, {count}, {pack}, '
            f'cot_variants={tuple(variants.split("+"))!r}); np.savez(sys.argv[1], **d)')
    env = dict(os.environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
    subprocess.run([sys.executable, '-c', code, str(path)], cwd=common.REPO, env=env, check=True)
  with np.load(path) as d:
    stacked = {k: d[k] for k in d.files}
  return [{k: v[i] for k, v in stacked.items()} for i in range(count)]


def _real_tokens(bs: list[dict], pack: bool) -> float:
  """Mean real (non-padding) encoder + decoder tokens per batch."""
  if pack:
    n = [(b['encoder_segment_ids'] > 0).sum() + (b['decoder_segment_ids'] > 0).sum() for b in bs]
  else:
    n = [(b['encoder_input_tokens'] != 0).sum() + (b['decoder_loss_weights'] > 0).sum() for b in bs]
  return float(np.mean(n))


def load_module_at(rev: str, path: str, name: str):
  """The module file `path` as it is at git revision `rev` (or the file `rev` itself, when it is one),
  imported under `name`, so two versions of a module can be timed in one process."""
  if os.path.isfile(rev):
    tmp = pathlib.Path(rev)
  else:
    text = subprocess.run(['git', 'show', f'{rev}:{path}'], cwd=common.REPO, capture_output=True, text=True,
                          check=True).stdout
    tmp = pathlib.Path(tempfile.mkdtemp(prefix='ab_')) / f'{name}.py'
    tmp.write_text(text)
  spec = importlib.util.spec_from_file_location(name, tmp)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _header(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return {'command': ' '.join(sys.argv), 'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
          'commit': common.git_commit(), 'host': common.host_facts(), 'jax_device': str(jax.devices()[0]),
          'load_start': common.load_average(), 'malloc': malloc_mode(), 'args': vars(args)}


def _line(*cells) -> str:
  return '| ' + ' | '.join(str(c) for c in cells) + ' |'


def cmd_train(args, config) -> dict:
  """Full train step: flanx packed vs HF padded, slot-token and useful-token ratios."""
  packed = batches(args.data, args.batch, args.inputs, args.targets, args.count, True, args.variants)
  padded = batches(args.data, args.batch, args.inputs, args.targets, args.count, False, args.variants)
  rows = args.rows or args.batch  # --rows: the first rows of each batch (less memory, same cached data)
  packed, padded = ([{k: v[:rows] for k, v in b.items()} for b in bs] for bs in (packed, padded))
  run = interleave.interleave({'flanx': sides.flanx_train(config, packed), 'hf': sides.hf_train(config, padded)},
                              args.rounds, args.warmup)
  slots = rows * (args.inputs + args.targets)
  real = {'flanx': _real_tokens(packed, True), 'hf': _real_tokens(padded, False)}
  out = {'run': run, 'slots_per_step': slots, 'real_tokens_per_step': real,
         'ratio_slot_tokens': interleave.ratio(run, 'hf', 'flanx', args.bound),
         'ratio_useful_tokens': interleave.ratio(run, 'hf', 'flanx', args.bound, real['hf'], real['flanx']),
         **_utilization(run, rows * flops.train_flops(config, args.inputs, args.targets), args.peak_gflops)}
  print(_line('train', config.dtype, interleave.format_side(run, 'flanx'), interleave.format_side(run, 'hf'),
              interleave.format_ratio(out['ratio_slot_tokens']), interleave.format_ratio(out['ratio_useful_tokens'])))
  print(_line('model GFLOP/s (MFU)', *(f"{name} {out['model_gflops_per_s'][name]:.0f}"
                                       + (f" ({out['mfu'][name]:.1%})" if 'mfu' in out else '') for name in run['sides'])))
  return out


def _utilization(run: dict, model_flops: float, peak_gflops: float | None) -> dict:
  """Model GFLOP/s of each side's median call, and its fraction of the peak when one is given (MFU)."""
  rates = {name: model_flops / side['wall']['median'] / 1e9 for name, side in run['sides'].items()}
  out = {'model_gflop_per_step': model_flops / 1e9, 'model_gflops_per_s': rates, 'peak_gflops': peak_gflops}
  if peak_gflops:
    out['mfu'] = {name: rate / peak_gflops for name, rate in rates.items()}
  return out


def _part_sides(args, config, network=None, losses=None, prefix='flanx') -> dict:
  batch = batches(args.data, args.batch, args.inputs, args.targets, 1, True, args.variants)[0]
  batch = {k: v[:args.rows or args.batch] for k, v in batch.items()}
  parts = sides.flanx_parts(config, batch, network=network, losses=losses)
  return {f'{prefix} {k}': v for k, v in parts.items()}


def cmd_parts(args, config) -> dict:
  """forward, forward+backward, optimizer and loss timed apart; HF's parts from its own train step."""
  padded = batches(args.data, args.batch, args.inputs, args.targets, 1, False, args.variants)
  hf_parts: dict = {}
  all_sides = {**_part_sides(args, config), 'hf step': sides.hf_train(config, padded, parts=hf_parts),
               'hf loss': sides.hf_loss(config, padded[0])}
  run = interleave.interleave(all_sides, args.rounds, args.warmup)
  n = args.warmup  # the HF parts list also holds its warm-up calls
  med = lambda name: run['sides'][name]['wall']['median']
  hf = {k: interleave.summarize(v[n:]) for k, v in hf_parts.items()}
  fwd, fwdbwd = med('flanx forward'), med('flanx forward+backward')
  table = {
      'forward': (fwd, hf['forward']['median']),
      'backward': (fwdbwd - fwd, hf['backward']['median']),
      'optimizer': (med('flanx optimizer'), hf['optimizer']['median']),
      'loss (logits -> loss + grad)': (med('flanx loss'), med('hf loss')),
  }
  for k, (a, b) in table.items():
    print(_line(k, config.dtype, f'{a:.3g} s', f'{b:.3g} s', f'{b / a:.2f}x'))
  print(_line('backward / forward', config.dtype, f'{(fwdbwd - fwd) / fwd:.2f}',
              f"{hf['backward']['median'] / hf['forward']['median']:.2f}", ''))
  return {'run': run, 'hf_parts': hf, 'table': table, 'backward_over_forward': (fwdbwd - fwd) / fwd}


def _inputs(batch: int, length: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(3, 32000, (batch, length)).astype(np.int32)


def cmd_decode(args, config) -> dict:
  """flanx decoding vs HF generate, one interleaved pair per (mode, batch)."""
  out = {}
  for mode in args.modes.split(','):
    for b in map(int, args.batches.split(',')):
      tokens = _inputs(b, args.inputs)
      run = interleave.interleave({'flanx': sides.flanx_decode(config, tokens, args.new_tokens, mode),
                                   'hf': sides.hf_generate(config, tokens, args.new_tokens, mode)},
                                  args.rounds, args.warmup)
      r = interleave.ratio(run, 'hf', 'flanx', args.bound)
      out[f'{mode}/{b}'] = {'run': run, 'ratio': r}
      print(_line('decode', mode, b, interleave.format_side(run, 'flanx'), interleave.format_side(run, 'hf'),
                  interleave.format_ratio(r)), flush=True)
  return out


def cmd_step(args, config) -> dict:
  """One KV-cache decode step (after the encoder and cache set-up) vs HF's."""
  out = {}
  for b in map(int, args.batches.split(',')):
    tokens = _inputs(b, args.inputs)
    run = interleave.interleave({'flanx': sides.flanx_decode_steps(config, tokens, args.steps, args.new_tokens),
                                 'hf': sides.hf_decode_steps(config, tokens, args.steps)}, args.rounds, args.warmup)
    r = interleave.ratio(run, 'hf', 'flanx', args.bound)
    out[str(b)] = {'run': run, 'ratio': r}
    print(_line('decode step', b, interleave.format_side(run, 'flanx'), interleave.format_side(run, 'hf'),
                interleave.format_ratio(r)), flush=True)
  return out


def cmd_lever(args, config) -> dict:
  """flanx's network + losses at git `--baseline` vs the working tree, interleaved."""
  old_net = load_module_at(args.baseline_network or args.baseline, 'flanx/model/network.py', 'baseline_network')
  old_loss = load_module_at(args.baseline_losses or args.baseline, 'flanx/training/losses.py', 'baseline_losses')
  new_net = load_module_at(args.new_network, '', 'new_network') if args.new_network else None
  new_loss = load_module_at(args.new_losses, '', 'new_losses') if args.new_losses else None
  out = {}
  if 'parts' in args.what:
    keep = ('forward', 'forward+backward', 'loss')
    new = {k: v for k, v in _part_sides(args, config, new_net, new_loss, 'new').items()
           if k.split(' ', 1)[1] in keep}
    old = {k: v for k, v in _part_sides(args, config, old_net, old_loss, 'old').items()
           if k.split(' ', 1)[1] in keep}
    run = interleave.interleave({**old, **new}, args.rounds, args.warmup)
    out['parts'] = {'run': run}
    for k in keep:
      r = interleave.ratio(run, f'old {k}', f'new {k}', args.bound)
      out['parts'][k] = r
      print(_line('lever', config.dtype, k, interleave.format_side(run, f'old {k}'),
                  interleave.format_side(run, f'new {k}'), interleave.format_ratio(r)), flush=True)
  if 'step' in args.what:
    for b in map(int, args.batches.split(',')):
      tokens = _inputs(b, args.inputs)
      run = interleave.interleave(
          {'old': sides.flanx_decode_steps(config, tokens, args.steps, args.new_tokens, network=old_net),
           'new': sides.flanx_decode_steps(config, tokens, args.steps, args.new_tokens, network=new_net)},
          args.rounds, args.warmup)
      r = interleave.ratio(run, 'old', 'new', args.bound)
      out[f'step/{b}'] = {'run': run, 'ratio': r}
      print(_line('lever', config.dtype, f'decode step b={b}', interleave.format_side(run, 'old'),
                  interleave.format_side(run, 'new'), interleave.format_ratio(r)), flush=True)
  return out


COMMANDS = {'train': cmd_train, 'parts': cmd_parts, 'decode': cmd_decode, 'step': cmd_step, 'lever': cmd_lever}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=sorted(COMMANDS))
  parser.add_argument('--model', default='flan_t5_small')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--rows', type=int, default=None, help='train: use only the first ROWS rows of each batch')
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--data', default='cot', choices=['cot', 'synthetic'])
  parser.add_argument('--variants', default='zs_reasoning', help='CoT templates joined by + (T2: all four)')
  parser.add_argument('--count', type=int, default=2, help='distinct batches the train step cycles through')
  parser.add_argument('--batches', default='1,8,32', help='decode batch sizes')
  parser.add_argument('--modes', default='greedy,sample')
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--steps', type=int, default=16, help='decode steps per measurement (step, lever)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=2, help='untimed calls per side, alternating')
  parser.add_argument('--bound', type=float, default=interleave.DEFAULT_SPREAD_BOUND)
  parser.add_argument('--baseline', default='HEAD', help='lever: git revision of the old network/losses')
  parser.add_argument('--what', default='parts,step', help='lever: parts and/or step')
  parser.add_argument('--baseline_network', default=None, help='lever: old network.py file (default: at --baseline)')
  parser.add_argument('--baseline_losses', default=None, help='lever: old losses.py file (default: at --baseline)')
  parser.add_argument('--new_network', default=None, help='lever: new network.py file (default: the working tree)')
  parser.add_argument('--new_losses', default=None, help='lever: new losses.py file (default: the working tree)')
  parser.add_argument('--out', default=None, help='JSON result (default runs/ab/<command>_<dtype>.json)')
  parser.add_argument('--system_malloc', action='store_true', help='keep glibc malloc defaults (see above)')
  parser.add_argument('--peak_gflops', type=float, default=None,
                      help='train: peak GFLOP/s of this machine for MFU (python -m benchmarks.cpu_peak measures it)')
  args = parser.parse_args(argv)
  if args.data == 'cot':
    from benchmarks import batches as batches_lib  # pylint: disable=g-import-not-at-top
    if not batches_lib.cot_available():
      args.data = 'synthetic'
  config = common.load_config(args.model, args.dtype)
  result = {**_header(args), 'result': COMMANDS[args.command](args, config), 'load_end': common.load_average()}
  if 'torch' in sys.modules:  # the HF side ran: record (measured) that torch flushed denormals, as XLA does
    result['hf_flush_denormal'] = common.torch_flushes_denormals()
  out = pathlib.Path(args.out or common.REPO / 'runs' / 'ab' / f'{args.command}_{args.dtype}.json')
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1, default=str) + '\n')
  print(f'[ab] wrote {out} (malloc: {malloc_mode()})')
  return result


if __name__ == '__main__':
  restart_with_reusing_malloc(sys.argv[1:])
  main()
