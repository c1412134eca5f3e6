"""Model configuration: one frozen dataclass, bound from gin/models/*.gin."""

from __future__ import annotations

import dataclasses
from typing import Any

import gin

# T5's special ids, shared by its SentencePiece and byte vocabularies; padding doubles as the decoder start.
PAD_ID = 0
EOS_ID = 1
DECODER_START_ID = PAD_ID


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
  """Dimensions and numerics of a T5 v1.1 / Flan-T5 / UL2 (or T5 1.0) encoder-decoder."""

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  num_heads: int = 6
  d_ff: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  # 'gated-gelu' (v1.1, Flan-T5), 'gated-silu' (UL2), 'relu' / 'gelu' (T5 1.0).
  activation: str = 'gated-gelu'
  # Tied: logits = embedding^T · x · d_model**-0.5 (T5 1.0, Flan-UL2). Untied: decoder/logits_dense.
  tie_embeddings: bool = False
  dropout_rate: float = 0.0
  relpos_buckets: int = 32
  relpos_max_distance: int = 128
  layer_norm_eps: float = 1e-6
  dtype: str = 'float32'  # activation/compute dtype; params are always float32
  # Rematerialisation of each layer in the backward pass: 'none', 'full' or 'dots' (save matmuls).
  remat: str = 'none'
  # nn.scan over layers: one compiled layer body (fast compile at XL/XXL); params gain a leading
  # 'layers' axis under encoder/layers and decoder/layers.
  scan_layers: bool = False
  # Parameter-efficient tuning (flanx.model.peft): at most one method's config, in the field named like it
  # (the PEFT macro fills it): LoRA (LoraConfig), prompt tuning (PromptConfig), prefix tuning (PrefixConfig) or
  # (IA)³ (IA3Config); None = full fine-tuning.
  lora: Any = None
  prompt: Any = None
  prefix: Any = None
  ia3: Any = None

  @property
  def gated(self) -> bool:
    return self.activation.startswith('gated-')

  @property
  def inner_dim(self) -> int:
    return self.num_heads * self.d_kv

  def replace(self, **changes) -> 'T5Config':
    """A copy with some fields changed."""
    return dataclasses.replace(self, **changes)
