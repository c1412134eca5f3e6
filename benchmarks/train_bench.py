"""One side of a training-throughput row: the full flanx train step, or transformers' torch T5 + Adafactor.

flanx: `flanx.training.steps.make_train_step` (jitted forward, backward, t5x Adafactor update; z-loss 1e-4,
summed loss) on seqio-packed rows, state sharded by `make_shardings` on a `make_mesh()` mesh over every
local device. Hugging Face: `T5ForConditionalGeneration` (random init, untied head, same param count) with
`transformers.optimization.Adafactor` set as close to t5x as it goes (lr 1e-3, relative_step=False,
scale_parameter=True ~ multiply_by_parameter_scale, decay_rate=-0.8, clip_threshold=1.0, beta1=None,
eps=(1e-30, 1e-3), no weight decay; it factors every 2-D param, t5x only when both dims >= 128) on padded
unpacked rows of the same shape (it has no packing), `attention_mask` and -100 labels on padding; bf16 via
autocast over fp32 params (flanx: fp32 params, bf16 activations). Both time only the step: batches are
already on the device.
"""

from __future__ import annotations

import numpy as np

from benchmarks import common

LEARNING_RATE = 1e-3


def _load_batches(path: str) -> list[dict[str, np.ndarray]]:
  with np.load(path) as data:
    stacked = {k: data[k] for k in data.files}
  count = next(iter(stacked.values())).shape[0]
  return [{k: v[i] for k, v in stacked.items()} for i in range(count)]


def run_flanx(spec: dict) -> dict:
  """Times the full jitted flanx train step; returns timing, memory and device facts."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.training import adafactor, partitioning  # pylint: disable=g-import-not-at-top
  from flanx.model import network as model_lib
  from flanx.training import steps as ts  # pylint: disable=g-import-not-at-top
  config = common.load_config(spec['model'], spec['dtype'], remat=spec.get('remat', 'none'),
                              scan_layers=spec.get('scan_layers', False))
  mesh = partitioning.make_mesh()
  rules = partitioning.axis_rules()
  # param_axes: factoring follows logical names, so scanned params are factored per layer.
  tx = adafactor.adafactor(learning_rate=LEARNING_RATE, param_axes=model_lib.logical_axes(config))
  shardings = ts.make_shardings(config, tx, mesh, rules)
  params = ts.init_params(config, spec.get('seed', 0), shardings)
  state = ts.new_state(params, tx, shardings)
  batches = [jax.device_put(b, shardings.batch) for b in _load_batches(spec['batches_path'])]
  with mesh, ts.activation_rules(shardings):
    step = ts.make_train_step(config, tx, shardings, ts.LossConfig(), spec.get('num_microbatches', 1))

    def call(i):
      nonlocal state
      state, metrics = step(state, batches[i % len(batches)])
      loss = float(metrics['loss'])  # blocks until the step is done
      if not np.isfinite(loss):
        raise FloatingPointError(f'flanx train step {i}: loss {loss}')

    timing = common.time_calls(call, spec['warmup'], spec['steps'])
  return {**timing, **jax_memory(), 'params': model_lib.param_count(config), 'device': jax_device()}


def jax_device() -> dict:
  """Platform, kind and count of the devices JAX uses."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {'platform': device.platform, 'device_kind': device.device_kind, 'device_count': jax.device_count()}


def jax_memory() -> dict:
  """Peak device memory (accelerators) or peak RSS (CPU) of this process."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    return {'peak_memory_bytes': int(stats['peak_bytes_in_use']), 'memory_kind': 'device peak_bytes_in_use'}
  return {'peak_memory_bytes': common.peak_rss_bytes(), 'memory_kind': 'process peak RSS'}


def hf_model(config, device: str, dtype=None):
  """Random-init transformers T5 of `config` (untied head when flanx's is), on `device`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_format as hf  # pylint: disable=g-import-not-at-top
  common.flush_denormals_like_xla()  # as XLA does (before torch's first op starts its threads)
  model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  if not config.tie_embeddings:  # transformers 5.x ties lm_head to shared in memory; give it its own weight
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
  return model.to(device=device, dtype=dtype)


def torch_device() -> str:
  """'cuda' when torch sees a GPU, else 'cpu'."""
  import torch  # pylint: disable=g-import-not-at-top
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def torch_memory(device: str) -> dict:
  """Peak torch allocation (GPU) or peak RSS (CPU) of this process."""
  import torch  # pylint: disable=g-import-not-at-top
  if device == 'cuda':
    return {'peak_memory_bytes': int(torch.cuda.max_memory_allocated()), 'memory_kind': 'torch max_memory_allocated'}
  return {'peak_memory_bytes': common.peak_rss_bytes(), 'memory_kind': 'process peak RSS'}


def torch_device_facts(device: str) -> dict:
  """Platform and kind of torch's device (and its thread count on CPU)."""
  import torch  # pylint: disable=g-import-not-at-top
  if device == 'cuda':
    return {'platform': 'gpu', 'device_kind': torch.cuda.get_device_name(), 'device_count': 1}
  return {'platform': 'cpu', 'device_kind': 'cpu', 'device_count': 1, 'threads': torch.get_num_threads(),
          'flush_denormal': common.torch_flushes_denormals()}


def run_hf(spec: dict) -> dict:
  """Times forward + backward + Adafactor of transformers' T5 (eager, or torch.compile'd model)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top
  torch.manual_seed(spec.get('seed', 0))
  config = common.load_config(spec['model'], spec['dtype'])
  device = torch_device()
  model = hf_model(config, device).train()
  if spec.get('remat', 'none') != 'none':
    model.gradient_checkpointing_enable()
  params = sum(p.numel() for p in model.parameters())
  optimizer = Adafactor(model.parameters(), lr=LEARNING_RATE, eps=(1e-30, 1e-3), clip_threshold=1.0,
                        decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True,
                        relative_step=False, warmup_init=False)
  forward = torch.compile(model) if spec['impl'] == 'hf_compile' else model
  autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if config.dtype == 'bfloat16'
              else contextlib.nullcontext())

  def to_torch(b):
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=torch.long)
    labels = t(b['decoder_target_tokens'])
    labels[t(b['decoder_loss_weights']) == 0] = -100
    return {'input_ids': t(b['encoder_input_tokens']), 'attention_mask': t(b['encoder_input_tokens'] != 0),
            'decoder_input_ids': t(b['decoder_input_tokens']), 'labels': labels}

  batches = [to_torch(b) for b in _load_batches(spec['batches_path'])]

  def call(i):
    with autocast:
      loss = forward(**batches[i % len(batches)]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    value = float(loss.detach())  # synchronizes
    if not np.isfinite(value):
      raise FloatingPointError(f'HF train step {i}: loss {value}')

  timing = common.time_calls(call, spec['warmup'], spec['steps'])
  return {**timing, **torch_memory(device), 'params': params, 'device': torch_device_facts(device)}
