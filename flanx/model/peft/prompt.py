"""Prompt tuning (Lester et al. 2021), as `peft`'s PROMPT_TUNING for a seq2seq model with one transformer submodule.

`num_virtual_tokens` (n) learned vectors `encoder/prompt_embedding` [n, d_model] stand before the encoder's input
embeddings; the decoder is untouched. flanx realises "prepend" with placeholders so packing keeps working: the
input pipeline (flanx.training.data) and inference (InferenceModel) put n PROMPT_PLACEHOLDER_ID tokens before every
example's inputs (the task is asked for inputs n shorter, so nothing real is cut), seqio packs as usual, and the
encoder replaces the embedding at every in-segment position p < n with prompt_embedding[p]. Each packed segment
thus has its own prompt at its positions 0..n-1, inside its own segment id, exactly as peft's model sees one
unpacked example [prompt, inputs]. The prompt starts as rows of the base's embedding: random vocabulary rows
(init='vocab', peft's SAMPLE_VOCAB) or the tokens of `init_text` plus EOS, repeated to n (init='text', TEXT).

peft folder: adapter_config.json (peft_type PROMPT_TUNING, num_transformer_submodules 1 so only the encoder input
gets the prompt, num_virtual_tokens, token_dim) and one tensor, `prompt_embeddings` [n, d_model].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import gin

from flanx.model.peft.method import Method

PyTree = Any

# Any id > 0 (the encoder's padding mask reads tokens > 0); its embedding is replaced, so which one does not matter.
PROMPT_PLACEHOLDER_ID = 2
PROMPT_INITS = {'vocab': 'SAMPLE_VOCAB', 'text': 'TEXT'}  # flanx name -> peft's PromptTuningInit


@gin.configurable(module='flanx.model.peft')
@dataclasses.dataclass(frozen=True)
class PromptConfig(Method):
  """Prompt tuning: how many virtual tokens lead the encoder input, and how they start (see the module doc)."""
  num_virtual_tokens: int = 100
  init: str = 'vocab'  # 'vocab' (random rows of the base's embedding) or 'text' (the embedding of init_text)
  init_text: str | None = None
  base_dtype: str = 'float32'  # storage dtype of the frozen base, as LoraConfig.base_dtype

  name = 'prompt'
  peft_type = 'PROMPT_TUNING'
  trained_leaves = ('prompt_embedding',)

  def __post_init__(self):
    if self.num_virtual_tokens < 1:
      raise ValueError(f'PromptConfig.num_virtual_tokens must be positive, got {self.num_virtual_tokens}')
    if self.init not in PROMPT_INITS:
      raise ValueError(f'PromptConfig.init={self.init!r}: choose from {sorted(PROMPT_INITS)}')
    if (self.init == 'text') != bool(self.init_text):
      raise ValueError("PromptConfig.init_text is needed with init='text' and only then "
                       f'(init={self.init!r}, init_text={self.init_text!r})')

  def describe(self) -> str:
    return f'a {self.num_virtual_tokens}-token prompt'

  def prompt_length(self) -> int:
    return self.num_virtual_tokens

  def needs_vocabulary(self) -> bool:
    return self.init == 'text'

  def embed_inputs(self, module: Any, x: Any, positions: Any) -> Any:
    """Embeddings at in-segment positions < n replaced by the prompt (they hold placeholders)."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    n, d = self.num_virtual_tokens, x.shape[-1]
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, 'embed'))
    prompt = module.param('prompt_embedding', init, (n, d), jnp.float32)
    at_prompt = (positions < n)[..., None]
    return jnp.where(at_prompt, jnp.take(prompt, jnp.clip(positions, 0, n - 1), axis=0).astype(x.dtype), x)

  def init_from_base(self, params: PyTree, seed: int, encode: Callable[[str], Any] | None) -> PyTree:
    """The prompt set to rows of the base's token embedding (init, see the module doc)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    embedding = params['token_embedder']['embedding']
    ids = prompt_init_ids(self, embedding.shape[0], seed, encode)
    prompt = embedding[np.asarray(ids)].astype(np.float32)
    return {**params, 'encoder': {**params['encoder'], 'prompt_embedding': prompt}}

  def adapter_config(self, config: Any, base_model: str) -> dict[str, Any]:
    text = self.init == 'text'
    return {'peft_type': 'PROMPT_TUNING', 'task_type': 'SEQ_2_SEQ_LM', 'num_virtual_tokens': self.num_virtual_tokens,
            'token_dim': config.d_model, 'num_transformer_submodules': 1, 'num_attention_heads': config.num_heads,
            'num_layers': config.num_encoder_layers, 'prompt_tuning_init': PROMPT_INITS[self.init],
            'prompt_tuning_init_text': self.init_text if text else None,
            'tokenizer_name_or_path': base_model if text else None, 'tokenizer_kwargs': None, 'inference_mode': True,
            'modules_to_save': None, 'base_model_name_or_path': base_model}

  def adapter_tensors(self, params: PyTree, config: Any) -> dict[str, Any]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    return {'prompt_embeddings': np.ascontiguousarray(np.asarray(params['encoder']['prompt_embedding'], np.float32))}

  @classmethod
  def from_adapter(cls, settings: Mapping[str, Any], tensors: Mapping[str, Any], config: Any, folder: str
                   ) -> tuple[PyTree, 'PromptConfig']:
    import numpy as np  # pylint: disable=g-import-not-at-top
    if settings.get('num_transformer_submodules', 1) != 1:
      raise ValueError(f'{folder}: a prompt for {settings["num_transformer_submodules"]} submodules (flanx prompts '
                       'the encoder only)')
    prompt = np.asarray(tensors['prompt_embeddings'], np.float32)
    return {'encoder': {'prompt_embedding': prompt}}, cls(num_virtual_tokens=int(settings['num_virtual_tokens']))

  def check_same_as(self, read: 'PromptConfig', folder: str) -> None:
    if read.num_virtual_tokens != self.num_virtual_tokens:
      raise ValueError(f'{folder}: its prompt has {read.num_virtual_tokens} virtual tokens, this run trains '
                       f'{self.num_virtual_tokens}; set PromptConfig.num_virtual_tokens = {read.num_virtual_tokens}')


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
