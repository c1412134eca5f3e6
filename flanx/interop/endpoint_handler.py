"""Hugging Face Inference Endpoints handler for a flanx export (copied into the folder as `handler.py`).

Request:  {"inputs": "text" or ["text", ...], "parameters": {generation parameters, see PARAMETERS}}
Response: [{"generated_text": "..."}, ...], one per input: the text2text-generation pipeline's shape (with
num_return_sequences > 1: a list of them per input, or one flat list for a single string input).

A request may only ask for the generation parameters in PARAMETERS, each type- and range-checked; anything
else (custom_generate, trust_remote_code, streamer, generation_config, ...) is refused with a ValueError, which
the Inference Toolkit answers with HTTP 400 and {"error": message}. Nothing here trusts remote code: the model
and tokenizer load with trust_remote_code=False and a request can never set it.

Limits bound the work one request can ask for (DEFAULT_LIMITS): inputs per request, characters and tokens per
input, new tokens, beams, returned sequences, no_repeat_ngram_size, and the tokens generated in all
(inputs x max(beams, returned sequences) x max_new_tokens). They apply to the settings generate() runs with,
whether the request or the model's generation_config.json chose them (a default over a limit is refused, naming the
file; settings of that file the handler cannot bound are refused at load), and temperature/repetition_penalty start
at 0.01. Override them with `EndpointHandler(path, max_new_tokens=…)` or environment variables
FLANX_HANDLER_<NAME> (e.g. FLANX_HANDLER_MAX_NEW_TOKENS=512). An input with more tokens than max_input_tokens
(default: the tokenizer's model_max_length, the export's input length, at most 2048) is refused unless the
request sets "truncation": true, which cuts it to that length, EOS kept, as flanx does in training.

Placement (SERVING, FLANX_HANDLER_<NAME> or `EndpointHandler(path, dtype=…)`): the model is spread over the GPUs
it finds with device_map="auto" (accelerate; CPU without GPUs), loaded with low_cpu_mem_usage, in the dtype its
config.json records (the export's --dtype) where the device supports it: a bfloat16 export on a GPU without
bfloat16 (T4, V100) runs in float32, and float16 is refused for gated-activation T5s (v1.1, Flan-T5, UL2), whose
activations overflow in it. load_in_8bit=1 quantizes the linear layers with bitsandbytes (CUDA only). A PEFT
adapter folder (`flanx.export --adapter_only`: adapter_config.json, and its base in base/ or where
base_model_name_or_path points) is served as base + adapter, LoRA and (IA)³ merged into the base at load unless
merge_adapter=0 or the base is 8-bit.

Inputs and outputs follow the newline convention the model was trained with (`flanx_export.json`): 'dolly'
writes newlines/tabs as ` <_LB_> ` / ` <_T_> ` markers on input and maps them back on output; 'lossless' needs
nothing here (the exported tokenizer encodes and decodes newlines, tabs and space runs itself).
Needs torch and transformers (accelerate to place the model, peft for adapter folders, bitsandbytes for 8-bit; no
flanx on the endpoint).
"""

import contextlib
import json
import logging
import math
import os
import re
from typing import Any, Iterator, Mapping
import warnings

EXPORT_INFO_FILE = 'flanx_export.json'
ENV_PREFIX = 'FLANX_HANDLER_'

# The flant5-dolly-xxl convention (tasks/vocab.py in flanx; kept identical, a test checks).
_WHITESPACE = '[ \\t\\n\\r\\f\\v]+'
_LINE_BREAK_OUT = '[ ]*(?:(?:<|\u2047)[ ]*_LB_>?|_LB_>)[ ]*'
_TAB_OUT = '[ ]*(?:(?:<|\u2047)[ ]*_T_>?|_T_>)[ ]*'

# What one request may ask for. max_input_tokens None: the tokenizer's model_max_length, at most
# _DEFAULT_INPUT_TOKENS_CAP. max_generated_tokens: inputs x max(beams, returned sequences) x max_new_tokens, the
# rows generate() decodes times their length (16 inputs x 8 beams x 1024 tokens would be 8x this).
DEFAULT_LIMITS = {
    'max_inputs': 16,
    'max_input_chars': 20_000,
    'max_input_tokens': None,
    'max_new_tokens': 1024,
    'max_beams': 8,
    'max_return_sequences': 8,
    'max_generated_tokens': 16_384,
    'max_no_repeat_ngram_size': 8,
}
_FALLBACK_INPUT_TOKENS = 512  # a tokenizer without a model_max_length
_DEFAULT_INPUT_TOKENS_CAP = 2048  # what tokenizer_config.json may raise max_input_tokens to (Flan 2022's inputs)
_LARGEST_LIMIT = 2**31 - 1  # lengths and counts end up in int32/int64 tensors and Rust usize

# Accepted generation parameters: (kind, lowest, highest, lowest excluded). A str bound names a limit. Temperature
# and repetition penalty divide logits: near zero (1e-300, 5e-324) they overflow to inf/nan, so they start at 0.01.
PARAMETERS = {
    'max_new_tokens': ('int', 1, 'max_new_tokens', False),
    'min_new_tokens': ('int', 0, 'max_new_tokens', False),
    'num_beams': ('int', 1, 'max_beams', False),
    'num_return_sequences': ('int', 1, 'max_return_sequences', False),
    'do_sample': ('bool', None, None, False),
    'early_stopping': ('bool', None, None, False),
    'temperature': ('float', 0.01, 100.0, False),
    'top_k': ('int', 0, 100_000, False),
    'top_p': ('float', 0.0, 1.0, True),
    'typical_p': ('float', 0.0, 1.0, True),
    'repetition_penalty': ('float', 0.01, 100.0, False),
    'length_penalty': ('float', -100.0, 100.0, False),
    'no_repeat_ngram_size': ('int', 0, 'max_no_repeat_ngram_size', False),
    'truncation': ('bool', None, None, False),  # the handler's own: cut over-long inputs instead of refusing
}
# Named in the refusal: generate() would run or load code, or objects, that the caller chooses.
_UNSAFE = ('custom_generate', 'trust_remote_code', 'assistant_model', 'streamer', 'generation_config',
           'logits_processor', 'stopping_criteria', 'prefix_allowed_tokens_fn', 'past_key_values')
# generation_config.json settings besides PARAMETERS that are passed on as they are: token ids, bookkeeping, and
# max_length (the handler always sends max_new_tokens, which wins). Others (num_beam_groups, penalty_alpha,
# constraints, return_dict_in_generate, ...) would change the cost or the output's shape unbounded: refused at load.
_PASSED_ON = ('pad_token_id', 'eos_token_id', 'bos_token_id', 'decoder_start_token_id', 'forced_bos_token_id',
              'forced_eos_token_id', 'max_length', 'transformers_version', '_from_model_config')
_PASSED_ON_VALUES = {'use_cache': True, 'output_attentions': False, 'output_hidden_states': False,
                     'output_scores': False, 'output_logits': False, 'return_dict_in_generate': False}
GENERATION_CONFIG_FILE = 'generation_config.json'
ADAPTER_CONFIG_FILE = 'adapter_config.json'

# How the model is placed: FLANX_HANDLER_<NAME> environment variables, then EndpointHandler(path, <name>=…).
SERVING = {'dtype': 'auto', 'device_map': 'auto', 'load_in_8bit': False, 'merge_adapter': True}
_DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
_FLAGS = {'1': True, 'true': True, 'yes': True, '0': False, 'false': False, 'no': False}


def prepare_text(text: str, mode: str) -> str:
  """Model input text for a request string."""
  if mode == 'dolly':
    text = text.replace('\n', ' <_LB_> ').replace('\t', ' <_T_> ')
    return re.sub(_WHITESPACE, ' ', text).strip(' ')
  return text


def clean_decoded(text: str, mode: str) -> str:
  """Response text for decoded model output."""
  if mode == 'dolly':
    return re.sub(_TAB_OUT, '\t', re.sub(_LINE_BREAK_OUT, '\n', text))
  return text


class _UntiedHeadAdvice(logging.Filter):
  """Drops transformers' advice to set `tie_word_embeddings=False` about lm_head.weight and shared.weight."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ('lm_head.weight' in message and 'tie_word_embeddings=False' in message)


@contextlib.contextmanager
def untied_head_advice_silenced(folder: str) -> Iterator[None]:
  """While loading a T5 whose config.json says `"tie_word_embeddings": false`, without transformers' advice to say so.

  transformers 5's T5Config reads that key as `scale_decoder_outputs` and then sets `tie_word_embeddings` to true
  (it also ties the input embeddings), so every T5 v1.1 / Flan-T5 checkpoint with its own lm_head (Google's too)
  loads with a warning to set the flag false, and the head untied: what the config says. Passing
  `tie_word_embeddings=False` to from_pretrained instead would leave the input embeddings untied and random.
  """
  path = os.path.join(folder, 'config.json')
  untied = os.path.exists(path) and _read_json(path).get('tie_word_embeddings') is False
  logger, advice = logging.getLogger('transformers.modeling_utils'), _UntiedHeadAdvice()
  if untied:
    logger.addFilter(advice)
  try:
    yield
  finally:
    logger.removeFilter(advice)


def resolve_serving(overrides: Mapping[str, Any]) -> dict[str, Any]:
  """SERVING, then FLANX_HANDLER_<NAME> environment variables, then `overrides`; checked."""
  settings = {}
  for name, default in SERVING.items():
    env = ENV_PREFIX + name.upper()
    value, source = default, None
    if os.environ.get(env):
      value, source = os.environ[env].strip(), f'environment variable {env}'
    if overrides.get(name) is not None:
      value, source = overrides[name], f'EndpointHandler({name}=…)'
    if isinstance(default, bool) and not isinstance(value, bool):
      if str(value).lower() not in _FLAGS:
        raise ValueError(f'{source}: {name} must be 1 or 0 (true or false), got {_shown(value)}')
      value = _FLAGS[str(value).lower()]
    if name == 'dtype' and value not in _DTYPES:
      raise ValueError(f'{source}: dtype must be one of {", ".join(_DTYPES)}, got {_shown(value)}')
    if name == 'device_map' and not isinstance(value, str):
      raise ValueError(f'{source}: device_map must be "auto", "none" or a device such as "cuda:0", got {_shown(value)}')
    settings[name] = value
  return settings


def choose_dtype(requested: str, recorded: str | None, gated: bool, cuda: bool, cuda_bfloat16: bool) -> str:
  """The dtype to load in: `requested`, or for 'auto' the one config.json records (float32 when the GPU lacks
  bfloat16); ValueError for float16 on a gated-activation T5 and for bfloat16 on a GPU without it."""
  recorded = recorded if recorded in ('float32', 'bfloat16', 'float16') else 'float32'
  dtype = recorded if requested == 'auto' else requested
  if dtype == 'float16' and gated:
    raise ValueError('float16: T5 v1.1 / Flan-T5 / UL2 (gated-activation) models overflow in float16 (inf/nan '
                     'activations); serve them in bfloat16 (a GPU since Ampere), float32, or 8-bit '
                     f'({ENV_PREFIX}LOAD_IN_8BIT=1)')
  if dtype == 'bfloat16' and cuda and not cuda_bfloat16:
    if requested == 'bfloat16':
      raise ValueError(f'{ENV_PREFIX}DTYPE=bfloat16: this GPU has no bfloat16 (before Ampere); use float32 or 8-bit')
    dtype = 'float32'  # not float16: see above
  return dtype


def _read_json(path: str) -> dict[str, Any]:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def load_model(path: str, serving: Mapping[str, Any]) -> Any:
  """The model of an exported folder (or base + adapter of a PEFT folder), placed and typed as `serving` says."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  adapter = _read_json(os.path.join(path, ADAPTER_CONFIG_FILE)) if os.path.exists(
      os.path.join(path, ADAPTER_CONFIG_FILE)) else None
  base = path
  if adapter is not None:
    base = os.path.join(path, 'base')
    if not os.path.isdir(base):  # flanx writes base/ beside the adapter unless the base was a Hugging Face folder
      base = adapter.get('base_model_name_or_path') or ''
      if not base or (os.path.isabs(base) and not os.path.isdir(base)):
        raise ValueError(f'{os.path.join(path, ADAPTER_CONFIG_FILE)}: its base model {base!r} is not here; put the base '
                         f'folder at {os.path.join(path, "base")}')
  config = _read_json(os.path.join(base, 'config.json')) if os.path.isdir(base) else {}
  cuda = torch.cuda.is_available()
  dtype = choose_dtype(serving['dtype'], config.get('dtype') or config.get('torch_dtype'),
                       str(config.get('feed_forward_proj', '')).startswith('gated'), cuda,
                       cuda and torch.cuda.is_bf16_supported())
  options = {'dtype': getattr(torch, dtype), 'low_cpu_mem_usage': True, 'trust_remote_code': False}
  if serving['device_map'] != 'none':
    try:
      import accelerate  # pylint: disable=g-import-not-at-top,unused-import
      options['device_map'] = serving['device_map']
    except ImportError:
      if serving['device_map'] != 'auto':
        raise ValueError(f'device_map={serving["device_map"]!r} needs accelerate (pip install accelerate)') from None
  if serving['load_in_8bit']:
    if not cuda:
      raise ValueError(f'{ENV_PREFIX}LOAD_IN_8BIT=1 needs a CUDA GPU (bitsandbytes); none found')
    try:
      import bitsandbytes  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise ValueError(f'{ENV_PREFIX}LOAD_IN_8BIT=1 needs bitsandbytes (pip install bitsandbytes)') from None
    options['quantization_config'] = transformers.BitsAndBytesConfig(load_in_8bit=True)
  with untied_head_advice_silenced(base):
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(base, **options)
  if 'device_map' not in options and 'quantization_config' not in options and cuda:
    model = model.to('cuda')  # one GPU without accelerate
  if adapter is not None:
    import peft  # pylint: disable=g-import-not-at-top
    model = peft.PeftModel.from_pretrained(model, path, is_trainable=False)
    if serving['merge_adapter'] and adapter.get('peft_type') in ('LORA', 'IA3') and not serving['load_in_8bit']:
      with warnings.catch_warnings():  # peft meets transformers 5's tie_word_embeddings=True (untied_head_advice_silenced)
        warnings.filterwarnings('ignore', message='Input and output embeddings are no longer tied after merging')
        model = model.merge_and_unload()
  return model.eval()


def resolve_limits(overrides: Mapping[str, Any], model_max_length: int | None) -> dict[str, int]:
  """DEFAULT_LIMITS, then FLANX_HANDLER_<NAME> environment variables, then `overrides` (positive integers).

  max_input_tokens left unset is the tokenizer's model_max_length (the export's input length), at most 2048.
  """
  unknown = sorted(set(overrides) - set(DEFAULT_LIMITS))
  if unknown:
    raise TypeError(f'unknown handler limit(s) {unknown}; known: {sorted(DEFAULT_LIMITS)} (and {sorted(SERVING)})')
  limits = {}
  for name, default in DEFAULT_LIMITS.items():
    env = ENV_PREFIX + name.upper()
    value, source = default, None
    if os.environ.get(env):
      value, source = os.environ[env], f'environment variable {env}'
    if overrides.get(name) is not None:
      value, source = overrides[name], f'EndpointHandler({name}=…)'
    if value is None:  # max_input_tokens: the export's input length, bounded like every other limit
      value = (min(model_max_length, _DEFAULT_INPUT_TOKENS_CAP) if isinstance(model_max_length, int)
               and 0 < model_max_length < 10**6 else _FALLBACK_INPUT_TOKENS)  # 10**30: transformers' "unset"
    if isinstance(value, int):
      number = value
    else:  # a long digit string is out of range, not converted
      text = str(value).strip()
      number = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else 0
    if isinstance(value, bool) or not 1 <= number <= _LARGEST_LIMIT:
      raise ValueError(f'{source}: {name} must be a positive integer up to {_LARGEST_LIMIT}, got {_shown(value)}')
    limits[name] = number
  return limits


def _shown(value: Any) -> str:
  """repr(value), short (repr of a 5,000-digit int would itself fail)."""
  if isinstance(value, int) and value.bit_length() > 64:
    return f'an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits'
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + '...'


def _refuse(name: str, value: Any, kind: str, low: Any, high: Any, low_excluded: bool) -> ValueError:
  if kind == 'bool':
    return ValueError(f'parameter "{name}" must be true or false, got {_shown(value)}')
  article = 'an integer' if kind == 'int' else 'a number'
  return ValueError(f'parameter "{name}" must be {article} {">" if low_excluded else ">="} {low} and <= {high}, '
                    f'got {_shown(value)}')


def check_parameter(name: str, value: Any, limits: Mapping[str, int]) -> Any:
  """The value of one accepted generation parameter, type- and range-checked; ValueError otherwise."""
  if name not in PARAMETERS:
    why = ' (it would let the request run code or pass objects of its choosing)' if name in _UNSAFE else ''
    raise ValueError(f'parameter "{name}" is not accepted{why}; accepted parameters: {", ".join(PARAMETERS)}')
  kind, low, high, low_excluded = PARAMETERS[name]
  high = limits[high] if isinstance(high, str) else high
  error = _refuse(name, value, kind, low, high, low_excluded)
  if kind == 'bool':
    if not isinstance(value, bool):
      raise error
    return value
  if isinstance(value, bool):
    raise error
  if isinstance(value, int):  # compared as it is: any size, no conversion (float() overflows past 1e308)
    if not low <= value <= high or (low_excluded and value == low):
      raise error
    return value if kind == 'int' else float(value)
  if kind == 'int':
    raise error
  if isinstance(value, str):  # query-string parameters arrive as text; a long digit string becomes inf
    try:
      value = float(value)
    except ValueError:
      raise error from None
  if not isinstance(value, float) or not math.isfinite(value) or not low <= value <= high or (
      low_excluded and value == low):
    raise error
  return value


def check_request(data: Any, limits: Mapping[str, int]) -> tuple[list[str], bool, dict[str, Any]]:
  """(input texts, whether a single string was sent, checked parameters) of a request; ValueError if malformed."""
  if not isinstance(data, dict) or 'inputs' not in data:
    raise ValueError('expected {"inputs": str or non-empty list of str, "parameters": {...}}')
  extra = sorted(set(data) - {'inputs', 'parameters', 'options'})  # options: old Inference API clients send it
  if extra:
    raise ValueError(f'unexpected request key(s) {extra}; expected "inputs" and optional "parameters"')
  inputs = data['inputs']
  texts = [inputs] if isinstance(inputs, str) else inputs
  if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
    raise ValueError('"inputs" must be a string or a non-empty list of strings')
  if len(texts) > limits['max_inputs']:
    raise ValueError(f'{len(texts)} inputs in one request; this endpoint accepts at most {limits["max_inputs"]}')
  for i, text in enumerate(texts):
    if len(text) > limits['max_input_chars']:
      raise ValueError(f'input {i} has {len(text):,} characters; this endpoint accepts at most '
                       f'{limits["max_input_chars"]:,}')
  parameters = data.get('parameters')
  if parameters is None:
    parameters = {}
  if not isinstance(parameters, dict):
    raise ValueError(f'"parameters" must be an object, got {type(parameters).__name__}')
  checked = {name: check_parameter(name, value, limits) for name, value in parameters.items()}
  return texts, isinstance(inputs, str), checked


def generation_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The defaults a model's generation config (its non-default settings) gives the accepted parameters; a
  ValueError naming generation_config.json for any other setting, which the handler could neither bound nor pass on."""
  refused = sorted(k for k, v in settings.items() if k not in PARAMETERS and k not in _PASSED_ON and not (
      k in _PASSED_ON_VALUES and v == _PASSED_ON_VALUES[k]))
  if refused:
    shown = ', '.join(f'{k} = {_shown(settings[k])}' for k in refused)
    raise ValueError(f'{GENERATION_CONFIG_FILE} sets {shown}, which this endpoint cannot bound or pass on: remove it '
                     f'(generation settings it accepts: {", ".join(p for p in PARAMETERS if p != "truncation")})')
  return {k: v for k, v in settings.items() if k in PARAMETERS and k != 'truncation'}


def effective_parameters(requested: Mapping[str, Any], defaults: Mapping[str, Any], limits: Mapping[str, int],
                         inputs: int) -> dict[str, Any]:
  """What generate() runs with for `inputs` texts: the request's parameters, else the model's defaults (checked like
  the request's, naming where they come from; max_new_tokens capped by its limit), within the work budget."""
  settings = {}
  for name, value in defaults.items():
    if name in requested:
      continue
    if name == 'max_new_tokens' and isinstance(value, int) and not isinstance(value, bool):
      value = min(value, limits['max_new_tokens'])  # the export's target length, or the limit
    try:
      settings[name] = check_parameter(name, value, limits)
    except ValueError as e:
      raise ValueError(f'{e} (the model\'s default, from {GENERATION_CONFIG_FILE}): send "{name}" to override it, '
                       'or raise the limit') from None
  settings.update(requested)
  settings.setdefault('max_new_tokens', limits['max_new_tokens'])
  if settings.get('min_new_tokens', 0) > settings['max_new_tokens']:
    raise ValueError(f'min_new_tokens {settings["min_new_tokens"]} is more than max_new_tokens '
                     f'{settings["max_new_tokens"]}')
  rows = max(settings.get('num_beams', 1), settings.get('num_return_sequences', 1))  # what generate() decodes
  work = inputs * rows * settings['max_new_tokens']
  if work > limits['max_generated_tokens']:
    raise ValueError(f'this request may generate {inputs} input(s) x {rows} beams or sequences x '
                     f'{settings["max_new_tokens"]} new tokens = {work:,} tokens; this endpoint generates at most '
                     f'{limits["max_generated_tokens"]:,} per request (max_generated_tokens): send fewer inputs, beams '
                     'or sequences, or a smaller max_new_tokens')
  return settings


class EndpointHandler:
  """Loads the exported model and tokenizer once; each call generates for a string or a list of strings."""

  def __init__(self, path: str = '', **options: Any):
    import transformers  # pylint: disable=g-import-not-at-top
    serving = {k: options.pop(k) for k in list(options) if k in SERVING}
    limits = options
    self.serving = resolve_serving(serving)
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    self.limits = resolve_limits(limits, getattr(self.tokenizer, 'model_max_length', None))  # before the model loads
    self.model = load_model(path, self.serving)
    self.defaults = generation_defaults(self.model.generation_config.to_diff_dict())
    info_path = os.path.join(path, EXPORT_INFO_FILE)
    info = json.load(open(info_path, encoding='utf-8')) if os.path.exists(info_path) else {}
    self.newline_mode = info.get('newline_mode', 'none')

  def _tokenize(self, texts: list[str], truncation: bool) -> Any:
    limit = self.limits['max_input_tokens']
    texts = [prepare_text(t, self.newline_mode) for t in texts]
    if not truncation:
      for i, ids in enumerate(self.tokenizer(texts).input_ids):
        if len(ids) > limit:
          raise ValueError(f'input {i} has {len(ids)} tokens; this endpoint accepts at most {limit} (the model\'s '
                           'input length): shorten it, or send "truncation": true to cut it to that length')
    return self.tokenizer(texts, return_tensors='pt', padding=True, truncation=True, max_length=limit)

  def __call__(self, data: dict[str, Any]) -> list[Any]:
    import torch  # pylint: disable=g-import-not-at-top
    texts, single, requested = check_request(data, self.limits)
    truncation = requested.pop('truncation', False)
    parameters = effective_parameters(requested, self.defaults, self.limits, len(texts))
    batch = self._tokenize(texts, truncation).to(self.model.device)  # device_map puts the embedding there
    config = self.model.config
    if config.num_decoder_layers != config.num_layers:
      # transformers 5.x sizes the default cache by the encoder depth; a deeper decoder needs its own cache.
      from transformers.cache_utils import DynamicCache, EncoderDecoderCache  # pylint: disable=g-import-not-at-top
      parameters['past_key_values'] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
      output = self.model.generate(**batch, **parameters)
    # Rows past the tokenizer (T5's 32,100..32,127; ByT5 above 258) have no text; ByT5's decoder would fail on them.
    size = len(self.tokenizer)
    decoded = self.tokenizer.batch_decode([[i for i in row if i < size] for row in output.tolist()],
                                          skip_special_tokens=True)
    results = [{'generated_text': clean_decoded(t, self.newline_mode)} for t in decoded]
    per_input = parameters.get('num_return_sequences', 1)
    if per_input == 1 or single:
      return results
    return [results[i:i + per_input] for i in range(0, len(results), per_input)]
