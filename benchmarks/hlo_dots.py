"""Which library runs each dot of a compiled XLA:CPU program: YNNPACK fusions, or Eigen (plain `dot`).

XLA:CPU hands a dot to YNNPACK (a `__ynn_fusion` custom fusion; oneDNN's `__onednn_fusion` where flanx asks for
oneDNN, flanx/_xla_cpu_flags.py) when its operands suit it; the others run as
plain `dot` instructions through Eigen, several times slower on this machine. A weight-gradient dot Xᵀ·dY whose
lhs contracts its leading (token) dims is the usual Eigen case.

  python -m benchmarks.hlo_dots --batch 8 --inputs 512 --targets 256 [--dtype bfloat16]   # the train step
"""

from __future__ import annotations

import argparse
import collections
import math
import re

_COMPUTATION = re.compile(r'^(?:ENTRY )?%(\S+) \((.*)\) -> .* \{$')
_PARAM = re.compile(r'(\S+): (\w+)\[([\d,]*)\]')
_INSTR = re.compile(r'^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\w[\w-]*)\((.*?)\)(.*)$')
_CALLS = re.compile(r'calls=%([\w.\-]+)')
LIBRARIES = ('ynnpack', 'onednn')  # the dot libraries; 'eigen' and 'fused-loop' dots run in XLA's own code


def _dims(text: str) -> tuple[int, ...]:
  return tuple(int(d) for d in text.split(',') if d)


def dots(hlo_text: str) -> list[dict]:
  """Every dot of compiled HLO text: backend ('ynnpack' | 'onednn' | 'eigen' | 'fused-loop'), shapes, operand
  dtypes, dims, GFLOP, op."""
  shapes: dict[str, dict[str, tuple[int, ...]]] = {}
  dtypes: dict[str, dict[str, str]] = {}
  caller_kind: dict[str, str] = {}
  found = []
  current = None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      current = m.group(1)
      params = _PARAM.findall(m.group(2))
      shapes[current] = {p: _dims(d) for p, _, d in params}
      dtypes[current] = {p: t for p, t, _ in params}
      continue
    m = _INSTR.match(line)
    if not m or current is None:
      continue
    name, dtype, dims, op, operands, rest = m.groups()
    shapes[current][name] = _dims(dims)
    dtypes[current][name] = dtype
    if op == 'fusion':
      callee = _CALLS.search(rest)
      if callee:
        caller_kind[callee.group(1)] = ('ynnpack' if '__ynn_fusion' in rest else 'onednn' if '__onednn' in rest
                                        else 'fused-loop')
    if op == 'dot':
      args = [a.strip().lstrip('%') for a in operands.split(',')]
      lhs_c = _dims(re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest).group(1))
      rhs_c = _dims(re.search(r'rhs_contracting_dims=\{([\d,]*)\}', rest).group(1))
      op_name = re.search(r'op_name="([^"]*)"', rest)
      found.append({'computation': current, 'name': name, 'dtype': dtype, 'out': _dims(dims), 'lhs': args[0],
                    'rhs': args[1], 'lhs_contracting': lhs_c, 'rhs_contracting': rhs_c,
                    'op_name': op_name.group(1) if op_name else ''})
  for d in found:
    lhs_shape = shapes[d['computation']].get(d['lhs'], ())
    d['lhs_shape'], d['rhs_shape'] = lhs_shape, shapes[d['computation']].get(d['rhs'], ())
    d['lhs_dtype'], d['rhs_dtype'] = (dtypes[d['computation']].get(d[k], '?') for k in ('lhs', 'rhs'))
    contracted = math.prod(lhs_shape[i] for i in d['lhs_contracting']) if lhs_shape else 0
    d['gflop'] = 2 * math.prod(d['out']) * contracted / 1e9
    d['backend'] = caller_kind.get(d['computation'], 'eigen')
  return found


def summary(found: list[dict]) -> dict:
  """Count and GFLOP per backend."""
  out = collections.defaultdict(lambda: {'count': 0, 'gflop': 0.0})
  for d in found:
    out[d['backend']]['count'] += 1
    out[d['backend']]['gflop'] += d['gflop']
  return dict(out)


def _train_step_hlo(args) -> str:
  """Compiled HLO text of flanx's full train step on a packed batch of the given shape."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import common, sides  # pylint: disable=g-import-not-at-top
  from flanx.training import steps  # pylint: disable=g-import-not-at-top
  config = common.load_config(args.model, args.dtype)
  tx, shardings, state = sides.flanx_train_state(config)
  b, li, lt = args.batch, args.inputs, args.targets
  ones = lambda l: np.ones((b, l), np.int32)
  batch = {'encoder_input_tokens': ones(li), 'decoder_input_tokens': ones(lt), 'decoder_target_tokens': ones(lt),
           'decoder_loss_weights': ones(lt), 'encoder_segment_ids': ones(li), 'decoder_segment_ids': ones(lt),
           'encoder_positions': ones(li), 'decoder_positions': ones(lt)}
  with shardings.mesh, steps.activation_rules(shardings):
    step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
    compiled = step.lower(state, jax.device_put(batch, shardings.batch)).compile()
  memory = compiled.memory_analysis()
  print(f'temporaries {memory.temp_size_in_bytes / 2**30:.2f} GiB, arguments {memory.argument_size_in_bytes / 2**30:.2f} '
        f'GiB (XLA:CPU memory plan of the step)')
  return compiled.as_text()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='flan_t5_small')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--hlo', default=None, help='read this compiled HLO text instead of compiling the step')
  parser.add_argument('--save', default=None, help='write the compiled HLO text here')
  parser.add_argument('--tree', default=None, help="compile another checkout's flanx (put first on sys.path)")
  args = parser.parse_args(argv)
  if args.tree:
    import sys  # pylint: disable=g-import-not-at-top
    sys.path.insert(0, args.tree)
  if args.hlo:
    with open(args.hlo) as f:
      text = f.read()
  else:
    text = _train_step_hlo(args)
  if args.save:
    with open(args.save, 'w') as f:
      f.write(text)
  found = dots(text)
  for backend, s in sorted(summary(found).items()):
    print(f"{backend:10s} {s['count']:4d} dots {s['gflop']:9.1f} GFLOP")
  eigen = collections.Counter((d['lhs_shape'], d['rhs_shape'], d['lhs_contracting'], d['rhs_contracting'],
                               d['op_name'].split('/')[-2] if '/' in d['op_name'] else d['op_name'])
                              for d in found if d['backend'] not in LIBRARIES)
  for (lhs, rhs, lc, rc, op), n in eigen.most_common():
    print(f'  not in a library x{n}: lhs {lhs} c{lc} · rhs {rhs} c{rc}  [{op}]')


if __name__ == '__main__':
  main()
