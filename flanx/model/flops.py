"""Model FLOPs of an encoder-decoder step, for MFU: matmul FLOPs only (2 per multiply-add).

Counted per sequence from the actual input/target lengths: encoder layers (q, k, v, o, MLP and the two
attention products), decoder layers (self-attention with half the causal scores, cross-attention whose K/V
projections run over encoder tokens) and the output head. Training = 3 x forward (backward is 2 x forward);
rematerialisation is not counted (MFU, not hardware FLOPs utilisation).
"""

from __future__ import annotations

from flanx.model.config import T5Config

# bf16 dense peak TFLOP/s per JAX device, by device_kind substring (lower case). A v3 chip (123) is two devices
# (one per TensorCore); v4 and later run megacore, one device per chip.
PEAK_TFLOPS = {
    'h100': 989.0, 'h200': 989.0, 'a100': 312.0, 'tpu v3': 61.5, 'tpu v4': 275.0, 'tpu v5 lite': 197.0,
    'tpu v5e': 197.0, 'tpu v5p': 459.0, 'tpu v5': 459.0, 'tpu v6 lite': 918.0,
}


def forward_flops(config: T5Config, input_length: int, target_length: int) -> float:
  """Forward matmul FLOPs of one sequence pair."""
  d, inner, f = config.d_model, config.inner_dim, config.d_ff
  mlp = (3 if config.gated else 2) * d * f
  proj = d * inner  # one of q, k, v or o
  enc = config.num_encoder_layers * (input_length * (4 * proj + mlp) + 2 * input_length ** 2 * inner)
  dec_self = target_length * 4 * proj + target_length ** 2 * inner  # causal: half of the 2 products
  dec_cross = target_length * 2 * proj + input_length * 2 * proj + 2 * target_length * input_length * inner
  dec = config.num_decoder_layers * (dec_self + dec_cross + target_length * mlp)
  head = target_length * d * config.vocab_size
  return 2.0 * (enc + dec + head)


def train_flops(config: T5Config, input_length: int, target_length: int) -> float:
  """Training (forward + backward) matmul FLOPs of one sequence pair."""
  return 3.0 * forward_flops(config, input_length, target_length)


def peak_flops_per_device(device_kind: str) -> float | None:
  """bf16 peak FLOP/s of a device kind, when known."""
  kind = device_kind.lower()
  for name, tflops in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
    if name in kind:
      return tflops * 1e12
  return None
