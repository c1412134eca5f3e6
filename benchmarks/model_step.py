"""Training-step throughput of a flanx model vs transformers' torch T5 of the same config, same machine.

Both sides run forward + backward of a token-level cross-entropy on the same random full-length batch
(no padding) from random init: flanx as one jitted value_and_grad, transformers in eager torch with
torch.set_num_threads(all cores). Reports step time, encoder/decoder/total tokens per second, the flanx/HF
throughput ratio, achieved model TFLOP/s (flanx/flops.py) and MFU when --peak_tflops is given.

  .venv/bin/python benchmarks/model_step.py --model flan_t5_small --batch 8 --inputs 512 --targets 256 \\
      --warmup 2 --steps 3 --out /tmp/model_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gin  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from flanx.model import flops as flops_lib  # pylint: disable=g-import-not-at-top
from flanx.interop import hf_format as hf  # pylint: disable=g-import-not-at-top
from flanx.model import network as flanx_model  # pylint: disable=g-import-not-at-top
from flanx.model.config import T5Config  # pylint: disable=g-import-not-at-top


def load_config(name: str, dtype: str) -> T5Config:
  """The T5Config of gin/models/{name}.gin with the activation dtype overridden."""
  gin.clear_config()
  gin.parse_config_file(str(REPO / 'gin' / 'models' / f'{name}.gin'))
  config = T5Config()
  gin.clear_config()
  return config.replace(dtype=dtype)


def random_batch(config: T5Config, batch: int, inputs: int, targets: int, seed: int) -> dict[str, np.ndarray]:
  """Full-length random token ids (no padding), decoder inputs = targets shifted right."""
  rng = np.random.default_rng(seed)
  enc = rng.integers(2, config.vocab_size, (batch, inputs)).astype(np.int32)
  tgt = rng.integers(2, config.vocab_size, (batch, targets)).astype(np.int32)
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
  return {'encoder_input_tokens': enc, 'decoder_input_tokens': dec, 'decoder_target_tokens': tgt}


def time_steps(step, warmup: int, steps: int) -> tuple[list[float], float]:
  """(timed step durations in s, first-step time incl. compilation) of `step()`, which must block."""
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return times, first


def flanx_step_fn(config: T5Config, batch: dict[str, np.ndarray], seed: int):
  """A blocking flanx forward+backward step (mean token cross-entropy) on `batch`."""
  model = flanx_model.Transformer(config)
  params = jax.jit(flanx_model.init_params, static_argnums=0)(config, jax.random.key(seed))

  def loss_fn(params, batch):
    logits = model.apply({'params': params}, batch['encoder_input_tokens'], batch['decoder_input_tokens'])
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch['decoder_target_tokens'][..., None], axis=-1))

  grad_fn = jax.jit(jax.value_and_grad(loss_fn))
  batch = jax.device_put(batch)
  return lambda: jax.block_until_ready(grad_fn(params, batch))


def hf_step_fn(config: T5Config, batch: dict[str, np.ndarray], seed: int, threads: int):
  """A transformers T5ForConditionalGeneration forward+backward step (mean cross-entropy) on `batch`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[config.dtype]
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  if not config.tie_embeddings:  # transformers 5.x ties the head in memory; untie it to match the param count
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  device = 'cuda' if torch.cuda.is_available() else 'cpu'  # the same machine's accelerator as JAX's, if any
  model = model.to(device=device, dtype=dtype).train()
  tensors = {k: torch.from_numpy(v).long().to(device) for k, v in batch.items()}

  def step():
    model.zero_grad(set_to_none=True)
    out = model(input_ids=tensors['encoder_input_tokens'], decoder_input_ids=tensors['decoder_input_tokens'],
                labels=tensors['decoder_target_tokens'])
    out.loss.backward()
    if device == 'cuda':
      torch.cuda.synchronize()

  return step, sum(p.numel() for p in model.parameters())


def summarize(times: list[float], first: float, batch: int, inputs: int, targets: int, step_flops: float,
              peak_tflops: float | None) -> dict:
  """Step time, tokens/s and (M)FU figures of one side."""
  step = statistics.median(times)
  out = {
      'step_time_s': step,
      'step_times_s': times,
      'first_step_s': first,
      'encoder_tokens_per_s': batch * inputs / step,
      'decoder_tokens_per_s': batch * targets / step,
      'tokens_per_s': batch * (inputs + targets) / step,
      'model_tflops_per_s': step_flops / step / 1e12,
  }
  if peak_tflops:
    out['mfu'] = out['model_tflops_per_s'] / peak_tflops
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='flan_t5_small', help='gin/models/<MODEL>.gin')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--inputs', type=int, default=512, help='encoder length')
  parser.add_argument('--targets', type=int, default=256, help='decoder length')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  parser.add_argument('--scan_layers', action='store_true', help='flanx side: nn.scan over layers')
  parser.add_argument('--remat', default='none', choices=['none', 'full', 'dots'], help='flanx side')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps (the first one compiles)')
  parser.add_argument('--steps', type=int, default=3, help='timed steps')
  parser.add_argument('--peak_tflops', type=float, default=None, help='device peak, for MFU')
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help='torch threads')
  parser.add_argument('--skip_hf', action='store_true', help='time flanx only')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=None, help='write the results as JSON here')
  args = parser.parse_args(argv)
  if args.warmup < 1 or args.steps < 1:
    parser.error('--warmup and --steps must be >= 1')

  config = load_config(args.model, args.dtype).replace(scan_layers=args.scan_layers, remat=args.remat)
  batch = random_batch(config, args.batch, args.inputs, args.targets, args.seed)
  step_flops = args.batch * flops_lib.train_flops(config, args.inputs, args.targets)
  device = jax.devices()[0]
  result = {
      'model': args.model, 'batch': args.batch, 'inputs': args.inputs, 'targets': args.targets,
      'dtype': args.dtype, 'scan_layers': args.scan_layers, 'remat': args.remat, 'steps': args.steps,
      'warmup': args.warmup, 'params': flanx_model.param_count(config), 'train_flops_per_step': step_flops,
      'peak_tflops': args.peak_tflops,
      'machine': {'platform': device.platform, 'device_kind': device.device_kind, 'devices': jax.device_count(),
                  'cpu_count': os.cpu_count(), 'processor': platform.processor() or platform.machine()},
  }
  times, first = time_steps(flanx_step_fn(config, batch, args.seed), args.warmup, args.steps)
  result['flanx'] = summarize(times, first, args.batch, args.inputs, args.targets, step_flops, args.peak_tflops)
  print(f"flanx: {result['flanx']['step_time_s']:.3f} s/step, {result['flanx']['tokens_per_s']:.0f} tokens/s",
        flush=True)
  if not args.skip_hf:
    step, hf_params = hf_step_fn(config, batch, args.seed, args.threads)
    assert hf_params == result['params'], (hf_params, result['params'])
    times, first = time_steps(step, args.warmup, args.steps)
    result['hf_torch'] = summarize(times, first, args.batch, args.inputs, args.targets, step_flops,
                                   args.peak_tflops)
    result['hf_torch']['threads'] = args.threads
    result['flanx_over_hf_tokens_per_s'] = result['flanx']['tokens_per_s'] / result['hf_torch']['tokens_per_s']
    print(f"hf:    {result['hf_torch']['step_time_s']:.3f} s/step, {result['hf_torch']['tokens_per_s']:.0f} "
          f"tokens/s; flanx/hf = {result['flanx_over_hf_tokens_per_s']:.2f}", flush=True)
  text = json.dumps(result, indent=2)
  if args.out:
    pathlib.Path(args.out).write_text(text + '\n')
  print(text)
  return result


if __name__ == '__main__':
  main()
