"""Matmul FLOPs of one encoder-decoder training step, for tokens/s → MFU in the benchmarks.

Counts multiply-adds of every matmul once (2 FLOPs each) per sequence pair: per encoder layer the q/k/v/o
projections, the MLP and the two attention products (scores, weighted values); per decoder layer the causal
self-attention (its two products counted on the lower triangle only), cross-attention (K/V projected from the
encoder tokens) and the MLP; then the output head. Training = forward + backward = 3 × forward. Embedding
gathers, norms, softmax and rematerialised recomputation are not counted (model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Dims:
  """The dimensions FLOPs depend on (a T5Config has them all)."""
  d_model: int
  d_ff: int
  d_kv: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  vocab_size: int
  gated: bool

  @classmethod
  def of(cls, config) -> 'Dims':
    """Dims of a flanx T5Config."""
    return cls(config.d_model, config.d_ff, config.d_kv, config.num_heads, config.num_encoder_layers,
               config.num_decoder_layers, config.vocab_size, config.gated)


def forward_macs(dims: Dims, input_length: int, target_length: int, causal_half: bool = True) -> float:
  """Multiply-adds of one forward pass over a sequence pair."""
  heads_dim = dims.num_heads * dims.d_kv
  projection = dims.d_model * heads_dim
  mlp = (3 if dims.gated else 2) * dims.d_model * dims.d_ff
  li, lt = input_length, target_length

  encoder_layer = li * (4 * projection + mlp) + 2 * li * li * heads_dim
  self_products = 2 * lt * lt * heads_dim * (0.5 if causal_half else 1.0)
  cross_products = 2 * lt * li * heads_dim
  decoder_layer = (lt * (4 * projection + mlp)  # self-attention q/k/v/o and MLP
                   + lt * 2 * projection + li * 2 * projection  # cross q/o on targets, k/v on inputs
                   + self_products + cross_products)
  head = lt * dims.d_model * dims.vocab_size
  return dims.num_encoder_layers * encoder_layer + dims.num_decoder_layers * decoder_layer + head


def train_flops(dims: Dims, input_length: int, target_length: int, causal_half: bool = True) -> float:
  """FLOPs of forward + backward for one sequence pair (3 × forward, 2 FLOPs per multiply-add)."""
  return 3 * 2 * forward_macs(dims, input_length, target_length, causal_half)


if __name__ == '__main__':
  small = Dims(512, 1024, 64, 6, 8, 8, 32128, True)
  for lengths in ((512, 114), (512, 256), (2048, 512)):
    print(f'flan-t5-small {lengths}: {train_flops(small, *lengths):.4e} train FLOPs per sequence')
