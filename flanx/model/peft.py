"""Parameter-efficient tuning: LoRA on chosen T5 projections, and which params a PEFT run trains.

LoRA (Hu et al. 2021), as Hugging Face `peft` defines it for T5: a targeted projection y = x·W becomes
y = x·W + dropout(x)·A·B · (alpha / r), with A [in, r] drawn like PEFT's (kaiming-uniform, bound 1/sqrt(in)) and B
[r, out] zero, so step 0 is the base model exactly. The adapter lives next to its kernel (`…/query/lora_a`,
`…/query/lora_b`) and is sharded like it: A on the kernel's input axis, B on its output axis.

Targets use transformers' T5 module names — q, k, v, o (attention), wi, wi_0, wi_1, wo (MLP) — restricted to
the blocks named in `blocks`: 'encoder' (encoder self-attention), 'decoder' (decoder self-attention), 'cross'
(encoder-decoder attention) and 'mlp' (both stacks' MLPs). PEFT's `target_modules` is written from the same
choice, so an exported adapter applies to exactly these modules.

Prompt tuning (Lester et al. 2021), as `peft`'s PROMPT_TUNING for a seq2seq model with one transformer submodule:
`num_virtual_tokens` (n) learned vectors `encoder/prompt_embedding` [n, d_model] stand before the encoder's input
embeddings; the decoder is untouched. flanx realises "prepend" with placeholders so packing keeps working: the
input pipeline (flanx.training.data) and inference (InferenceModel) put n PROMPT_PLACEHOLDER_ID tokens before every
example's inputs (the task is asked for inputs n shorter, so nothing real is cut), seqio packs as usual, and the
encoder replaces the embedding at every in-segment position p < n with prompt_embedding[p]. Each packed segment
thus has its own prompt at its positions 0..n-1, inside its own segment id, exactly as peft's model sees one
unpacked example [prompt, inputs]. The prompt starts as rows of the base's embedding: random vocabulary rows
(init='vocab', peft's SAMPLE_VOCAB) or the tokens of `init_text` plus EOS, repeated to n (init='text', TEXT).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import gin

PyTree = Any

# flanx (t5x) module names → transformers' T5 module names.
HF_PROJECTION_NAMES = {'query': 'q', 'key': 'k', 'value': 'v', 'out': 'o', 'wi': 'wi', 'wi_0': 'wi_0',
                       'wi_1': 'wi_1', 'wo': 'wo'}
_BLOCKS = {'attention': 'encoder', 'self_attention': 'decoder', 'encoder_decoder_attention': 'cross', 'mlp': 'mlp'}
ADAPTER_LEAVES = ('lora_a', 'lora_b')


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """LoRA rank, scale (alpha / rank), dropout on the adapter's input, and where adapters go."""
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  target_modules: tuple[str, ...] = ('q', 'v')  # PEFT's default for T5
  blocks: tuple[str, ...] = ('encoder', 'decoder', 'cross', 'mlp')
  # Frozen base weights stored in this dtype on the device (bfloat16 halves their memory); adapters stay float32.
  base_dtype: str = 'float32'

  def __post_init__(self):
    unknown = set(self.target_modules) - set(HF_PROJECTION_NAMES.values())
    if unknown or not self.target_modules:
      raise ValueError(f'LoraConfig.target_modules={self.target_modules!r}: choose from '
                       f'{sorted(set(HF_PROJECTION_NAMES.values()))}')
    if set(self.blocks) - set(_BLOCKS.values()) or not self.blocks:
      raise ValueError(f'LoraConfig.blocks={self.blocks!r}: choose from {sorted(set(_BLOCKS.values()))}')
    if self.rank < 1:
      raise ValueError(f'LoraConfig.rank must be positive, got {self.rank}')
    object.__setattr__(self, 'target_modules', tuple(self.target_modules))
    object.__setattr__(self, 'blocks', tuple(self.blocks))

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def targets(self, module_path: Sequence[str]) -> bool:
    """Whether the projection at this module path (e.g. encoder/layers_0/attention/query) gets an adapter."""
    return len(module_path) >= 2 and hf_module_name(module_path) in self.target_modules and (
        module_block(module_path) in self.blocks)

  def hf_target_regex(self) -> str:
    """PEFT's `target_modules` as a regex over transformers' module names (fullmatch), for exactly these targets."""
    stacks = {'encoder': r'encoder\.block\.\d+\.layer\.0\.SelfAttention',
              'decoder': r'decoder\.block\.\d+\.layer\.0\.SelfAttention',
              'cross': r'decoder\.block\.\d+\.layer\.1\.EncDecAttention',
              'mlp': r'(?:encoder\.block\.\d+\.layer\.1|decoder\.block\.\d+\.layer\.2)\.DenseReluDense'}
    attention = [m for m in self.target_modules if m in ('q', 'k', 'v', 'o')]
    mlp = [m for m in self.target_modules if m not in ('q', 'k', 'v', 'o')]
    parts = []
    for block in self.blocks:
      names = mlp if block == 'mlp' else attention
      if names:
        parts.append(f"{stacks[block]}\\.(?:{'|'.join(names)})")
    return r'.*(?:' + '|'.join(parts) + ')'


def hf_module_name(module_path: Sequence[str]) -> str | None:
  """transformers' name (q, k, v, o, wi, wi_0, wi_1, wo) of a flanx projection module path, else None."""
  return HF_PROJECTION_NAMES.get(module_path[-1])


def module_block(module_path: Sequence[str]) -> str | None:
  """The LoraConfig block ('encoder', 'decoder', 'cross', 'mlp') a projection module path belongs to, else None."""
  return _BLOCKS.get(module_path[-2]) if len(module_path) >= 2 else None


# Any id > 0 (the encoder's padding mask reads tokens > 0); its embedding is replaced, so which one does not matter.
PROMPT_PLACEHOLDER_ID = 2
PROMPT_INITS = {'vocab': 'SAMPLE_VOCAB', 'text': 'TEXT'}  # flanx name -> peft's PromptTuningInit


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """Prompt tuning: how many virtual tokens lead the encoder input, and how they start (see the module doc)."""
  num_virtual_tokens: int = 100
  init: str = 'vocab'  # 'vocab' (random rows of the base's embedding) or 'text' (the embedding of init_text)
  init_text: str | None = None
  base_dtype: str = 'float32'  # storage dtype of the frozen base, as LoraConfig.base_dtype

  def __post_init__(self):
    if self.num_virtual_tokens < 1:
      raise ValueError(f'PromptConfig.num_virtual_tokens must be positive, got {self.num_virtual_tokens}')
    if self.init not in PROMPT_INITS:
      raise ValueError(f'PromptConfig.init={self.init!r}: choose from {sorted(PROMPT_INITS)}')
    if (self.init == 'text') != bool(self.init_text):
      raise ValueError("PromptConfig.init_text is needed with init='text' and only then "
                       f'(init={self.init!r}, init_text={self.init_text!r})')


def configure(config: Any, method: str | None) -> Any:
  """The model config for a run's PEFT setting: None (full fine-tuning), 'lora' (adapters per LoraConfig) or
  'prompt' (prompt tuning per PromptConfig)."""
  if method in (None, '', 'none'):
    return config
  if method == 'lora':
    return config if config.lora is not None else config.replace(lora=LoraConfig())
  if method == 'prompt':
    return config if config.prompt is not None else config.replace(prompt=PromptConfig())
  raise ValueError(f"PEFT={method!r}: expected None, 'lora' or 'prompt'")


def is_peft(config: Any) -> bool:
  """Whether `config` trains adapters (LoRA or a prompt) on a frozen base."""
  return config.lora is not None or getattr(config, 'prompt', None) is not None


def base_config(config: Any) -> Any:
  """The plain model a PEFT config adapts (no adapters, no prompt)."""
  return config.replace(lora=None, prompt=None)


def base_dtype(config: Any) -> str:
  """The storage dtype of a PEFT run's frozen base ('float32' otherwise)."""
  method = config.lora if config.lora is not None else getattr(config, 'prompt', None)
  return method.base_dtype if method is not None else 'float32'


def prompt_length(config: Any) -> int:
  """How many placeholder tokens lead every encoder input (0 without prompt tuning)."""
  prompt = getattr(config, 'prompt', None)
  return prompt.num_virtual_tokens if prompt is not None else 0


def add_prompt_placeholders(tokens: Any, n: int) -> Any:
  """[b, L] int tokens → [b, n + L] with n PROMPT_PLACEHOLDER_IDs in front of each row (unpacked inputs)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  tokens = np.asarray(tokens)
  if n == 0:
    return tokens
  return np.concatenate([np.full(tokens.shape[:-1] + (n,), PROMPT_PLACEHOLDER_ID, tokens.dtype), tokens], axis=-1)


def prompt_init_ids(prompt: PromptConfig, vocab_size: int, seed: int, encode: Any = None) -> Any:
  """The token ids whose base embeddings start the prompt: n random ids (peft's SAMPLE_VOCAB draws from the whole
  vocabulary), or `encode(init_text)` + EOS repeated and cut to n (peft's TEXT, whose tokenizer appends EOS)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  n = prompt.num_virtual_tokens
  if prompt.init == 'vocab':
    return np.random.default_rng(seed).integers(0, vocab_size, n)
  if encode is None:
    raise ValueError("PromptConfig.init='text' needs the task's vocabulary to encode init_text")
  from flanx.model.config import EOS_ID  # pylint: disable=g-import-not-at-top
  ids = list(encode(prompt.init_text)) + [EOS_ID]
  return np.asarray((ids * -(-n // len(ids)))[:n])


def is_adapter_path(path: Sequence[Any]) -> bool:
  """Whether a param (key path) is a PEFT-trained param: a LoRA factor or the prompt embedding."""
  last = getattr(path[-1], 'key', path[-1])
  return last in ADAPTER_LEAVES or last == 'prompt_embedding'


def split_trainable(params: dict) -> tuple[dict, dict]:
  """(adapter params, frozen base params): two nested dicts with disjoint leaves."""
  trainable, frozen = {}, {}
  for key, value in params.items():
    if isinstance(value, dict):
      t, f = split_trainable(value)
      if t:
        trainable[key] = t
      if f:
        frozen[key] = f
    elif is_adapter_path([key]):
      trainable[key] = value
    else:
      frozen[key] = value
  return trainable, frozen


def combine(trainable: dict, frozen: dict) -> dict:
  """The full param tree from its two halves (inverse of split_trainable)."""
  out = dict(frozen)
  for key, value in trainable.items():
    out[key] = combine(value, out.get(key, {})) if isinstance(value, dict) else value
  return out


def merge_lora(params: dict, lora: LoraConfig) -> dict:
  """Folds every adapter into its kernel (kernel + A·B·scale) and drops the adapters: a plain model's params."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for key, value in params.items():
    if isinstance(value, dict) and 'lora_a' in value:
      a, b, kernel = (np.asarray(value[k], np.float32) for k in ('lora_a', 'lora_b', 'kernel'))
      out[key] = {'kernel': kernel + np.matmul(a, b) * lora.scale}
    elif isinstance(value, dict):
      out[key] = merge_lora(value, lora)
    else:
      out[key] = value
  return out
