"""XLA:CPU compile options on this CPU: which dot library and settings run flan-t5-small's fp32 work fastest.

  python -m benchmarks.xla_cpu_options dots  --options default,onednn,eigen --rounds 5   # single dots vs torch
  python -m benchmarks.xla_cpu_options model --options default,onednn --rounds 3 [--hf]   # forward, fwd+bwd
  python -m benchmarks.xla_cpu_options decode --options default,onednn --batches 8        # greedy decode call

Every option set is compiled into the same process (`jax.jit(f).lower(...).compile(compiler_options)` sets
XLA DebugOptions per executable, the fields XLA_FLAGS sets for the whole process), so the variants and torch
alternate in one interleaved run (benchmarks/interleave.py) and a ratio never spans two load levels. `dots`
times one fp32 dot at each of the train step's shapes (batch 8, 512/256) against `torch.matmul` on the same
threads with denormals flushed (as XLA:CPU does), and checks every side against a float64 product; `model`
times the jitted forward (model + loss) and forward + backward of flan-t5-small on full synthetic rows (no
padding: the dense work is the same as for packed rows), and compares each option's loss and gradients with
the default's. Both print which library each compiled program's dots went to, so an option that silently did
nothing shows as such. Results: --out (JSON) and stdout (markdown lines).
"""

from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # torch: no spinning OpenMP threads on a shared machine
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import re  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import ab, common, interleave  # pylint: disable=g-import-not-at-top,wrong-import-position

_DOT = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
# Named XLA:CPU option sets (DebugOptions fields, jaxlib 0.10.2; defaults in XLA's debug_options_flags.cc).
OPTIONS = {
    'default': {},  # YNNPACK takes every dot it supports (xla_cpu_experimental_ynn_fusion_type = individual dot)
    'eigen': {'xla_cpu_experimental_ynn_fusion_type': ''},  # no library: XLA's own Eigen dot
    'onednn': {'xla_cpu_use_onednn': True, 'xla_cpu_experimental_onednn_fusion_type': _DOT},  # oneDNN graph API
    'onednn_cc': {'xla_cpu_experimental_onednn_custom_call': True},  # the older __onednn$matmul custom calls
    'xnn': {'xla_cpu_experimental_ynn_fusion_type': '', 'xla_cpu_experimental_xnn_fusion_type': _DOT},
    'vec512': {'xla_cpu_prefer_vector_width': 512},  # XLA's own loops with 512-bit vectors (default 256)
    'no_concurrency': {'xla_cpu_enable_concurrency_optimized_scheduler': False},
    'fast_runtime': {'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_RUNTIME'},
}

# (lhs shape, rhs shape, dot_general dims, torch expression) of the fp32 train step's dots, batch 8, 512/256.
_MM = (((1,), (0,)), ((), ()))
_ATTN_SCORES = (((3,), (3,)), ((0, 1), (0, 1)))
_ATTN_VALUES = (((3,), (2,)), ((0, 1), (0, 1)))
DOTS = {
    'q/k/v [4096,512]x[512,384]': ((4096, 512), (512, 384), _MM, 'mm'),
    'o [4096,384]x[384,512]': ((4096, 384), (384, 512), _MM, 'mm'),
    'wi [4096,512]x[512,1024]': ((4096, 512), (512, 1024), _MM, 'mm'),
    'wo [4096,1024]x[1024,512]': ((4096, 1024), (1024, 512), _MM, 'mm'),
    'wi grad [512,4096]x[4096,1024]': ((512, 4096), (4096, 1024), _MM, 'mm'),
    'head [2048,512]x[512,32128]': ((2048, 512), (512, 32128), _MM, 'mm'),
    'scores [8,6,512,64]x[8,6,512,64]': ((8, 6, 512, 64), (8, 6, 512, 64), _ATTN_SCORES, 'scores'),
    'values [8,6,512,512]x[8,6,512,64]': ((8, 6, 512, 512), (8, 6, 512, 64), _ATTN_VALUES, 'mm'),
}


def parse_options(names: str, extra: list[str]) -> dict[str, dict]:
  """The named option sets, plus --set NAME:key=value;key=value ones (values: true/false, ints, strings)."""
  out = {}
  for name in names.split(','):
    if name not in OPTIONS:
      raise SystemExit(f'--options: unknown {name!r} (known: {", ".join(OPTIONS)}; or define one with --set)')
    out[name] = OPTIONS[name]
  for spec in extra:
    name, _, body = spec.partition(':')
    options = {}
    for item in filter(None, body.split(';')):
      key, _, value = item.partition('=')
      options[key] = {'true': True, 'false': False}.get(value.lower(), int(value) if value.isdigit() else value)
    out[name] = options
  return out


_KINDS = {'ynnpack': r'kind="__ynn_fusion"|__ynn_fusion', 'onednn': r'__onednn', 'xnnpack': r'__xnn_fusion'}


def libraries(compiled) -> dict[str, int]:
  """How many dots of a compiled program each library runs (a fusion per dot), and plain (Eigen) dots."""
  text = compiled.as_text()
  counts = {}
  for kind, pattern in _KINDS.items():
    n = len(re.findall(rf'= \S+ (?:fusion|custom-call)\(.*(?:{pattern})', text))
    if n:
      counts[kind] = n
  counts['eigen dot'] = len(re.findall(r'= \S+ dot\(', text)) - sum(
      len(re.findall(r'= \S+ dot\(', body)) for body in _fusion_bodies(text))
  return counts


def _fusion_bodies(text: str) -> list[str]:
  """Bodies of the library fusions' computations (their dots are not Eigen's)."""
  names = set(re.findall(r'calls=%([\w.\-]+).*?(?:__ynn_fusion|__onednn|__xnn_fusion)', text))
  names |= set(re.findall(r'(?:__ynn_fusion|__onednn|__xnn_fusion).*?calls=%([\w.\-]+)', text))
  bodies, current, lines = [], None, []
  for line in text.splitlines():
    m = re.match(r'^(?:ENTRY )?%(\S+) ', line)
    if m and line.rstrip().endswith('{'):
      current, lines = m.group(1), []
    elif line.startswith('}'):
      if current in names:
        bodies.append('\n'.join(lines))
      current = None
    elif current:
      lines.append(line)
  return bodies


def _torch_threads() -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  return {'threads': torch.get_num_threads(), 'flush_denormal': common.torch_flushes_denormals(),
          'float32_matmul_precision': torch.get_float32_matmul_precision(),
          'mkl': torch.backends.mkl.is_available(), 'mkldnn': torch.backends.mkldnn.is_available(),
          'version': torch.__version__}


def cmd_dots(args, options: dict[str, dict]) -> dict:
  """One dot per shape: every option set and torch.matmul, interleaved; GFLOP/s, ratios, error vs float64."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  common.flush_denormals_like_xla()
  out = {'torch': _torch_threads(), 'shapes': {}}
  names = [n for n in DOTS if not args.shapes or any(s in n for s in args.shapes.split(','))]
  for name in names:
    lhs_shape, rhs_shape, dims, kind = DOTS[name]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in (lhs_shape, rhs_shape))
    flop = 2.0 * np.prod(lhs_shape) * (rhs_shape[-1] if kind == 'mm' else rhs_shape[-2])
    calls = max(1, round(args.gflop_per_measurement * 1e9 / flop))
    if args.dtype == 'bfloat16':  # as flanx's CPU dots: bf16 operands, float32 accumulation and result
      a, b = (x.astype(jnp.bfloat16) for x in (a, b))
    ja, jb = jax.device_put(a), jax.device_put(b)
    fn = jax.jit(lambda x, y: jax.lax.dot_general(x, y, dims, preferred_element_type=jnp.float32))
    sides, used, results = {}, {}, {}
    for opt, compiler_options in options.items():
      compiled = fn.lower(ja, jb).compile(compiler_options)
      used[opt] = libraries(compiled)
      results[opt] = np.asarray(compiled(ja, jb))
      sides[opt] = _repeat(lambda c=compiled: c(ja, jb), calls, jax.block_until_ready)
    ta, tb = (torch.from_numpy(x.astype(np.float32)).to(getattr(torch, args.dtype)) for x in (a, b))
    torch_fn = (lambda: torch.matmul(ta, tb)) if kind == 'mm' else (lambda: torch.matmul(ta, tb.transpose(-1, -2)))
    results['torch'] = torch_fn().float().numpy()
    sides['torch'] = _repeat(torch_fn, calls, lambda x: x)
    exact = _float64_dot(a, b, kind)
    error = {k: float(np.max(np.abs(v - exact)) / np.max(np.abs(exact))) for k, v in results.items()}
    run = interleave.interleave(sides, args.rounds, args.warmup)
    gflops = {k: flop * calls / s['wall']['median'] / 1e9 for k, s in run['sides'].items()}
    ratios = {opt: interleave.ratio(run, 'torch', opt, args.bound) for opt in options}
    cpu = {opt: cpu_ratio(run, 'torch', opt, args.bound) for opt in options}
    vs_default = {opt: cpu_ratio(run, 'default', opt, args.bound) for opt in options
                  if 'default' in options and opt != 'default'}
    out['shapes'][name] = {'run': run, 'calls': calls, 'gflop': flop / 1e9, 'gflops': gflops, 'libraries': used,
                           'max_error_vs_float64': error, 'xla_over_torch': ratios, 'xla_over_torch_cpu': cpu,
                           'over_default_cpu': vs_default}
    print(ab._line(name, f"torch {gflops['torch']:.0f} GFLOP/s", *(
        f"{opt} {gflops[opt]:.0f} (vs torch: {_both(run, 'torch', opt, args.bound)}; {_short(used[opt])})"
        for opt in options)), flush=True)
    print(ab._line('', 'max rel. error vs float64', *(f'{k} {v:.1e}' for k, v in error.items())), flush=True)
  return out


def cpu_ratio(run: dict, slow: str, fast: str, bound: float) -> dict:
  """interleave.ratio on process CPU seconds instead of wall seconds. On a machine loaded far beyond its cores a
  call's wall time is mostly waiting for a core, and its CPU time is the work it did (spinning threads included)."""
  sides = {k: {'runs': [{'wall_s': m['cpu_s']} for m in v['runs']]} for k, v in run['sides'].items()}
  for v in sides.values():
    v['wall'] = interleave.summarize([m['wall_s'] for m in v['runs']])
  return interleave.ratio({'sides': sides}, slow, fast, bound)


def _both(run: dict, slow: str, fast: str, bound: float) -> str:
  return (f'wall {interleave.format_ratio(interleave.ratio(run, slow, fast, bound))}, '
          f'CPU {interleave.format_ratio(cpu_ratio(run, slow, fast, bound))}')


def _repeat(call, n: int, block):
  def run():
    for _ in range(n):
      last = call()
    block(last)
  return run


def _float64_dot(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
  a, b = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
  return a @ (b if kind == 'mm' else np.swapaxes(b, -1, -2))


def _short(used: dict[str, int]) -> str:
  return ', '.join(f'{k} {v}' for k, v in used.items() if v)


def _model_batch(config, batch: int, inputs: int, targets: int) -> dict:
  """Full rows of seeded random ids (no padding), as the benchmark shape's packed rows compute."""
  rng = np.random.default_rng(0)
  ids = lambda n: rng.integers(3, 32000, (batch, n)).astype(np.int32)
  targets_ids = ids(targets)
  decoder_inputs = np.concatenate([np.zeros((batch, 1), np.int32), targets_ids[:, :-1]], axis=1)
  return {'encoder_input_tokens': ids(inputs), 'decoder_input_tokens': decoder_inputs,
          'decoder_target_tokens': targets_ids, 'decoder_loss_weights': np.ones((batch, targets), np.float32)}


def cmd_model(args, options: dict[str, dict]) -> dict:
  """flan-t5-small forward (model + loss) and forward + backward under each option set (and HF), interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.training import losses  # pylint: disable=g-import-not-at-top
  config = common.load_config(args.model, 'float32')
  model = network.Transformer(config)
  params = jax.jit(network.init_params, static_argnums=0)(config, jax.random.key(0))
  batch = _model_batch(config, args.batch, args.inputs, args.targets)
  device_batch = jax.device_put(batch)

  def loss_fn(params, b):
    logits = model.apply({'params': params}, b['encoder_input_tokens'], b['decoder_input_tokens'])
    return losses.token_loss(logits, b['decoder_target_tokens'], b['decoder_loss_weights'])

  programs = {'forward': jax.jit(loss_fn), 'forward+backward': jax.jit(jax.grad(loss_fn, has_aux=True))}
  sides, used, values = {}, {}, {}
  for opt, compiler_options in options.items():
    for part, fn in programs.items():
      compiled = fn.lower(params, device_batch).compile(compiler_options)
      used[f'{opt} {part}'] = libraries(compiled)
      sides[f'{opt} {part}'] = lambda c=compiled: jax.block_until_ready(c(params, device_batch))
    values[opt] = (float(sides[f'{opt} forward']()[0]), sides[f'{opt} forward+backward']()[0])
    print(f'[xla_cpu_options] {opt}: compiled; dots: ' + '; '.join(
        f'{p} {_short(used[f"{opt} {p}"])}' for p in programs), flush=True)
  out = {'libraries': used, 'numerics': _compare(values)}
  if args.hf:
    sides.update(_hf_parts(config, batch))
    out['torch'] = _torch_threads()
  run = interleave.interleave(sides, args.rounds, args.warmup)
  out['run'] = run
  out['ratios'] = {}
  def compare(part: str, opt: str, base: str, name: str, label: str) -> None:
    a, b = f'{base} {part}', f'{opt} {part}'
    out['ratios'][f'{opt} {part} / {name}'] = interleave.ratio(run, a, b, args.bound)
    out['ratios'][f'{opt} {part} / {name}, CPU'] = cpu_ratio(run, a, b, args.bound)
    print(ab._line(part, f'{opt} vs {label}', interleave.format_side(run, a), interleave.format_side(run, b),
                   _both(run, a, b, args.bound)), flush=True)

  for part in programs:
    for opt in options:
      if opt != 'default' and 'default' in options:
        compare(part, opt, 'default', 'default', 'default')
      if args.hf:
        compare(part, opt, 'hf', 'hf', 'HF eager')
  for opt, diff in out['numerics'].items():
    print(ab._line('numerics vs default', opt, f"loss {diff['loss_rel']:.1e}",
                   f"grads max rel. (per array, vs its max) {diff['grad_rel_max']:.1e}"), flush=True)
  return out


def _compare(values: dict) -> dict:
  """Each option's loss and gradients against the default's (relative to each array's largest value)."""
  import jax  # pylint: disable=g-import-not-at-top
  if 'default' not in values:
    return {}
  loss0, grads0 = values['default']
  out = {}
  for opt, (loss, grads) in values.items():
    if opt == 'default':
      continue
    rel = jax.tree.leaves(jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / (np.max(np.abs(np.asarray(y))) or 1.0)),
        grads, grads0))
    out[opt] = {'loss_rel': abs(loss - loss0) / abs(loss0), 'grad_rel_max': max(rel)}
  return out


def _hf_parts(config, batch: dict) -> dict:
  """HF eager forward (with the autograd graph, as in training) and forward + backward on the same rows."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import sides  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = sides.hf_model(config).train()  # flushes denormals first
  inputs = sides._hf_batch(batch)  # pylint: disable=protected-access

  def forward():
    return model(**inputs).loss

  def forward_backward():
    forward().backward()
    model.zero_grad(set_to_none=True)

  def forward_only():
    forward().detach()  # returns None: the harness reads a returned float as the call's own timing

  return {'hf forward': forward_only, 'hf forward+backward': forward_backward}


def cmd_decode(args, options: dict[str, dict]) -> dict:
  """The greedy decode call (encode + exactly --new_tokens tokens), as benchmarks.ab decode times flanx's side,
  compiled under each option set."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import decoding, network  # pylint: disable=g-import-not-at-top
  config = common.load_config(args.model, 'float32')
  model = network.Transformer(config)
  params = jax.jit(network.init_params, static_argnums=0)(config, jax.random.key(0))
  out = {'libraries': {}, 'ratios': {}}
  for b in map(int, args.batches.split(',')):
    tokens = jax.device_put(np.random.default_rng(0).integers(3, 32000, (b, args.inputs)).astype(np.int32))

    def predict(params, tokens, b=b):
      encoded = model.apply({'params': params}, tokens, method=network.Transformer.encode)
      cache = network.init_cache(config, params, encoded, tokens, args.new_tokens)
      return decoding.greedy(network.make_step_fn(config, params), cache, b, args.new_tokens, eos_id=-1)

    sides = {}
    for opt, compiler_options in options.items():
      compiled = jax.jit(predict).lower(params, tokens).compile(compiler_options)
      out['libraries'][f'{opt} b={b}'] = libraries(compiled)
      sides[opt] = lambda c=compiled: jax.block_until_ready(c(params, tokens))
    run = interleave.interleave(sides, args.rounds, args.warmup)
    out[f'b={b}'] = run
    for opt in options:
      if opt != 'default' and 'default' in options:
        out['ratios'][f'{opt} b={b} / default, CPU'] = cpu_ratio(run, 'default', opt, args.bound)
        print(ab._line('greedy decode call', f'batch {b}', f'{opt} vs default', interleave.format_side(run, 'default'),
                       interleave.format_side(run, opt), _both(run, 'default', opt, args.bound),
                       _short(out['libraries'][f'{opt} b={b}'])), flush=True)
  return out


COMMANDS = {'dots': cmd_dots, 'model': cmd_model, 'decode': cmd_decode}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=sorted(COMMANDS))
  parser.add_argument('--options', default='default,onednn,eigen', help=f'option sets: {", ".join(OPTIONS)}')
  parser.add_argument('--set', action='append', default=[], metavar='NAME:key=value;key=value',
                      help='an extra option set of XLA DebugOptions fields')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='dots: operand dtype (bf16: float32 accumulation, as flanx on CPU; torch: bf16 matmul)')
  parser.add_argument('--shapes', default='', help='dots: only shapes whose name contains one of these')
  parser.add_argument('--gflop_per_measurement', type=float, default=20.0, help='dots: calls per measurement')
  parser.add_argument('--model', default='flan_t5_small')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--batches', default='8', help='decode: batch sizes')
  parser.add_argument('--new_tokens', type=int, default=128, help='decode: tokens generated per call')
  parser.add_argument('--hf', action='store_true', help='model: time HF eager forward and forward+backward too')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--bound', type=float, default=interleave.DEFAULT_SPREAD_BOUND)
  parser.add_argument('--out', default=None, help='JSON result (default runs/xla_cpu_options/<command>.json)')
  parser.add_argument('--system_malloc', action='store_true', help='keep glibc malloc defaults (see benchmarks.ab)')
  args = parser.parse_args(argv)
  options = parse_options(args.options, args.set)
  result = {**ab._header(args), 'options': options,  # pylint: disable=protected-access
            'result': COMMANDS[args.command](args, options), 'load_end': common.load_average()}
  out = pathlib.Path(args.out or common.REPO / 'runs' / 'xla_cpu_options' / f'{args.command}.json')
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1, default=str) + '\n')
  print(f"[xla_cpu_options] wrote {out} (malloc: {ab.malloc_mode()}; load {result['load_start']} -> "
        f"{result['load_end']}; CPU {result['host']['cpu'].get('Model name')})")
  return result


if __name__ == '__main__':
  if '--system_malloc' not in sys.argv and ab.malloc_mode() != 'reusing':  # as benchmarks.ab: freed memory reused
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, '-m', 'benchmarks.xla_cpu_options', *sys.argv[1:]],
              {**os.environ, **ab.REUSING_MALLOC})
  main()
