"""Hugging Face Inference Endpoints handler for a flanx export (copied into the folder as `handler.py`).

Request:  {"inputs": "text" or ["text", ...], "parameters": {keyword arguments of model.generate}}
Response: [{"generated_text": "..."}, ...], one per input.

Inputs and outputs follow the newline convention the model was trained with (`flanx_export.json`):
'lossless' removes the space the tokenizer's Metaspace decoder puts after each newline/tab token; 'dolly'
writes newlines/tabs as ` <_LB_> ` / ` <_T_> ` markers on input and maps them back on output.
Needs only torch and transformers (no flanx on the endpoint).
"""

import json
import os
import re
from typing import Any

EXPORT_INFO_FILE = 'flanx_export.json'

# The flant5-dolly-xxl convention (tasks/vocab.py in flanx; kept identical, a test checks).
_WHITESPACE = '[ \\t\\n\\r\\f\\v]+'
_LINE_BREAK_OUT = '[ ]*(?:<|\u2047)?[ ]*_LB_>?[ ]*'
_TAB_OUT = '[ ]*(?:<|\u2047)?[ ]*_T_>?[ ]*'


def prepare_text(text: str, mode: str) -> str:
  """Model input text for a request string."""
  if mode == 'dolly':
    text = text.replace('\n', ' <_LB_> ').replace('\t', ' <_T_> ')
    return re.sub(_WHITESPACE, ' ', text).strip(' ')
  return text


def clean_decoded(text: str, mode: str) -> str:
  """Response text for decoded model output."""
  if mode == 'lossless':
    return re.sub('([\n\t]) ', r'\1', text)
  if mode == 'dolly':
    return re.sub(_TAB_OUT, '\t', re.sub(_LINE_BREAK_OUT, '\n', text))
  return text


class EndpointHandler:
  """Loads the exported model and tokenizer once; each call generates for a string or a list of strings."""

  def __init__(self, path: str = ''):
    import transformers  # pylint: disable=g-import-not-at-top
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    info_path = os.path.join(path, EXPORT_INFO_FILE)
    info = json.load(open(info_path, encoding='utf-8')) if os.path.exists(info_path) else {}
    self.newline_mode = info.get('newline_mode', 'none')

  def __call__(self, data: dict[str, Any]) -> list[dict[str, str]]:
    import torch  # pylint: disable=g-import-not-at-top
    inputs = data.get('inputs') if isinstance(data, dict) else None
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
      raise ValueError('expected {"inputs": str or non-empty list of str, "parameters": {...}}')
    parameters = dict(data.get('parameters') or {})
    config = self.model.config
    if config.num_decoder_layers != config.num_layers and 'past_key_values' not in parameters:
      # transformers 5.x sizes the default cache by the encoder depth; a deeper decoder needs its own cache.
      from transformers.cache_utils import DynamicCache, EncoderDecoderCache  # pylint: disable=g-import-not-at-top
      parameters['past_key_values'] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    batch = self.tokenizer([prepare_text(t, self.newline_mode) for t in texts], return_tensors='pt', padding=True,
                           truncation=True)
    with torch.no_grad():
      output = self.model.generate(**batch, **parameters)
    # Rows past the tokenizer (T5's 32,100..32,127; ByT5 above 258) have no text; ByT5's decoder would fail on them.
    size = len(self.tokenizer)
    decoded = self.tokenizer.batch_decode([[i for i in row if i < size] for row in output.tolist()],
                                          skip_special_tokens=True)
    return [{'generated_text': clean_decoded(t, self.newline_mode)} for t in decoded]
