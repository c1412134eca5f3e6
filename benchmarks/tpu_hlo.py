"""The TPU side of a CPU speed change: compile the train and decode steps for a TPU slice (libtpu compile-only
devices, no TPU needed) and count what a change could add there: transposes, copies, dots, temporaries.

  python benchmarks/tpu_hlo.py --topology v4-8 [--tree /tmp/old_checkout] --out runs/ab/tpu_new.json

--tree puts another checkout's flanx first on sys.path, so the same script measures the code before a change.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def op_counts(hlo_text: str) -> dict:
  """How many transpose / copy / dot / fusion instructions the optimized HLO holds."""
  counts = collections.Counter(m.group(1) for m in re.finditer(r'= \S+ (transpose|copy|dot|fusion|while)\(',
                                                                hlo_text))
  return dict(counts)


def while_body_counts(hlo_text: str) -> dict:
  """op_counts of the instructions a while loop's body runs (with the fusions it calls): the per-step work."""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r'^(?:ENTRY )?%(\S+) \(', line)
    if m and line.rstrip().endswith('{'):
      current = computations.setdefault(m.group(1), [])
    elif current is not None:
      current.append(line)

  def lines(name, seen):
    out = []
    for line in computations.get(name, []):
      out.append(line)
      for callee in re.findall(r'(?:calls|to_apply)=%([\w.\-]+)', line):
        if callee not in seen:
          seen.add(callee)
          out += lines(callee, seen)
    return out

  body = []
  for name in set(re.findall(r'body=%([\w.\-]+)', hlo_text)):
    body += lines(name, set())
  return op_counts('\n'.join(body))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--topology', default='v4-8')
  parser.add_argument('--model', default='flan_t5_small')
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--inputs', type=int, default=512)
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--decode_batch', type=int, default=32)
  parser.add_argument('--tree', default=None, help='a checkout whose flanx is measured (default: this one)')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, str(REPO))
  if args.tree:
    sys.path.insert(0, args.tree)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from flanx.model import decoding, network  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor, aot, partitioning, steps, tpu_topology  # pylint: disable=g-import-not-at-top
  tpu = tpu_topology.parse(args.topology)
  devices = tpu_topology.compile_only_devices(tpu)
  config = common.load_config(args.model, args.dtype)
  mesh = partitioning.make_mesh(devices=devices)
  tx = adafactor.adafactor(learning_rate=1e-3, param_axes=network.logical_axes(config))
  shardings = steps.make_shardings(config, tx, mesh, partitioning.axis_rules())
  state = steps.abstract_state(config, tx, shardings)
  batch = aot.abstract_batch(args.batch, {'inputs': args.inputs, 'targets': args.targets}, True, shardings.batch)
  out = {'flanx': network.__file__, 'topology': args.topology, 'model': args.model, 'dtype': args.dtype,
         'batch': args.batch, 'lengths': [args.inputs, args.targets]}
  with mesh, steps.activation_rules(shardings):
    step = steps.make_train_step(config, tx, shardings, steps.LossConfig())
    memory = aot.compile_step('train_step', step, state, batch)
    out['train'] = {'temp_bytes': memory.temporaries, 'argument_bytes': memory.arguments,
                    'flops': memory.compiled_flops_per_device, 'ops': op_counts(memory.compiled.as_text())}

    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          network.abstract_params(config), shardings.params)
    b, new_tokens = args.decode_batch, 128
    tokens = jax.ShapeDtypeStruct((b, args.inputs), jnp.int32)
    model = network.Transformer(config)

    def predict(params, tokens):
      encoded = model.apply({'params': params}, tokens, method=network.Transformer.encode)
      cache = network.init_cache(config, params, encoded, tokens, new_tokens)
      return decoding.greedy(network.make_step_fn(config, params), cache, b, new_tokens, eos_id=-1).tokens

    memory = aot.compile_step('decode', jax.jit(predict), params, tokens)
    text = memory.compiled.as_text()
    bodies = re.findall(r'body=%([\w.\-]+)', text)
    out['decode'] = {'temp_bytes': memory.temporaries, 'ops': op_counts(text), 'while_bodies': len(bodies),
                     'loop_body_ops': while_body_counts(text)}
  print(json.dumps(out, indent=1))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + '\n')
  return out


if __name__ == '__main__':
  main()
