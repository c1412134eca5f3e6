"""The exported Inference Endpoints handler: only bounded generation parameters, no caller-chosen code, capped input.

References nobody here wrote: transformers' T5ForConditionalGeneration.generate and AutoTokenizer on the same
folder; transformers' own custom_generate loader (the control shows the crafted request really runs code).
"""

import importlib.util
import json
import os
import pathlib
import warnings

import pytest
import seqio

from conftest import REPO_ROOT
from tasks import vocab as vocab_lib

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

TEMPLATE = REPO_ROOT / 'flanx' / 'interop' / 'endpoint_handler.py'
SPM = os.path.join(os.path.dirname(seqio.__file__), 'test_data', 'sentencepiece', 'sentencepiece.model')
INPUT_LENGTH = 64


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """A tiny exported folder: random T5 weights (transformers), flanx's lossless tokenizer files, handler.py."""
  from flanx.interop import hf_tokenizer  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('export') / 'tiny'
  torch.manual_seed(0)
  config = transformers.T5Config(vocab_size=256, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                                 num_decoder_layers=2, feed_forward_proj='gated-gelu', tie_word_embeddings=False,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  transformers.T5ForConditionalGeneration(config).save_pretrained(out)
  hf_tokenizer.write_tokenizer(out, vocab_lib.get_vocabulary(SPM, 'lossless'), INPUT_LENGTH)
  (out / 'generation_config.json').write_text(json.dumps(
      {'decoder_start_token_id': 0, 'pad_token_id': 0, 'eos_token_id': 1, 'max_new_tokens': 8, 'do_sample': False,
       'num_beams': 1}))
  (out / 'handler.py').write_bytes(TEMPLATE.read_bytes())
  return out


def _load(folder):
  spec = importlib.util.spec_from_file_location('exported_handler', folder / 'handler.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def module(folder):
  return _load(folder)


@pytest.fixture(scope='module')
def handler(module, folder):
  return module.EndpointHandler(str(folder))


@pytest.fixture(scope='module')
def reference(folder, module):
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()

  def generate(prompts, truncate=False, **kwargs):
    cut = {'truncation': True, 'max_length': INPUT_LENGTH} if truncate else {}
    batch = tokenizer(prompts, return_tensors='pt', padding=True, **cut)
    with torch.no_grad():
      ids = model.generate(**batch, **kwargs).tolist()
    size = len(tokenizer)  # as the handler: rows past the tokenizer have no text
    return [tokenizer.decode([i for i in row if i < size], skip_special_tokens=True) for row in ids]

  return tokenizer, generate


def _crafted_generate(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """A folder whose custom_generate/generate.py leaves a marker file when transformers executes it."""
  marker = tmp_path / 'executed.txt'
  code = tmp_path / 'evil' / 'custom_generate'
  code.mkdir(parents=True)
  (code / 'generate.py').write_text(
      f'import pathlib\npathlib.Path({str(marker)!r}).write_text("module ran")\n\n'
      'def generate(model, *args, **kwargs):\n'
      f'  pathlib.Path({str(marker)!r}).write_text("generate ran")\n'
      '  return model.generate(*args, **kwargs)\n')
  return code.parent, marker


@pytest.mark.slow
def test_valid_requests_generate(handler, reference):
  _, generate = reference
  prompts = ['first\nprompt', 'second prompt']
  out = handler({'inputs': prompts, 'parameters': {'max_new_tokens': 6}})
  assert out == [{'generated_text': t} for t in generate(prompts, max_new_tokens=6)]
  assert handler({'inputs': 'second prompt', 'parameters': {'max_new_tokens': 6}}) == out[1:]
  # No parameters: the folder's generation_config (max_new_tokens 8, greedy).
  assert handler({'inputs': 'second prompt'}) == [{'generated_text': generate(['second prompt'])[0]}]
  # Every accepted parameter at once; beams with two sequences per input come back as the pipeline shapes them.
  parameters = {'max_new_tokens': 5, 'min_new_tokens': 2, 'num_beams': 3, 'num_return_sequences': 2,
                'early_stopping': True, 'length_penalty': 0.5, 'repetition_penalty': 1.3, 'no_repeat_ngram_size': 2,
                'do_sample': False}
  beams = generate(prompts, **parameters)
  out = handler({'inputs': prompts, 'parameters': parameters})
  assert out == [[{'generated_text': t} for t in beams[:2]], [{'generated_text': t} for t in beams[2:]]]
  single = handler({'inputs': 'first\nprompt', 'parameters': parameters})
  assert single == [{'generated_text': t} for t in generate(['first\nprompt'], **parameters)]
  torch.manual_seed(3)
  sampled = handler({'inputs': prompts, 'parameters': {'do_sample': True, 'temperature': '0.7', 'top_k': 20,
                                                       'top_p': 0.9, 'typical_p': 0.95, 'max_new_tokens': 4}})
  torch.manual_seed(3)
  assert sampled == [{'generated_text': t} for t in generate(prompts, do_sample=True, temperature=0.7, top_k=20,
                                                             top_p=0.9, typical_p=0.95, max_new_tokens=4)]


def test_code_execution_request_is_refused(handler, tmp_path):
  folder, marker = _crafted_generate(tmp_path)
  request = {'inputs': 'hi', 'parameters': {'custom_generate': str(folder), 'trust_remote_code': True,
                                            'max_new_tokens': 2}}
  with pytest.raises(ValueError, match='"custom_generate" is not accepted .*run code'):
    handler(request)
  with pytest.raises(ValueError, match='"trust_remote_code" is not accepted'):
    handler({'inputs': 'hi', 'parameters': {'trust_remote_code': True}})
  assert not marker.exists()
  # Control: the same parameters passed to generate() do run the crafted file (what the old handler did).
  with torch.no_grad():
    handler.model.generate(**handler.tokenizer(['hi'], return_tensors='pt'), **request['parameters'])
  assert marker.read_text() == 'generate ran'


def test_custom_generate_in_the_model_folder_is_never_loaded(module, folder, tmp_path):
  copy = tmp_path / 'copy'
  copy.mkdir()
  for path in folder.iterdir():
    (copy / path.name).write_bytes(path.read_bytes())
  crafted, marker = _crafted_generate(tmp_path)
  (copy / 'custom_generate').mkdir()
  (copy / 'custom_generate' / 'generate.py').write_bytes((crafted / 'custom_generate' / 'generate.py').read_bytes())
  out = module.EndpointHandler(str(copy))({'inputs': 'hi', 'parameters': {'max_new_tokens': 2}})
  assert len(out) == 1 and not marker.exists()


@pytest.mark.parametrize('parameters, message', [
    ({'max_new_tokens': 10**6}, '"max_new_tokens" must be an integer >= 1 and <= 1024'),
    ({'max_new_tokens': 10**400}, '"max_new_tokens" must be an integer >= 1 and <= 1024, got an integer of about 401'),
    ({'num_beams': -10**400}, '"num_beams" must be an integer >= 1 and <= 8'),
    ({'max_new_tokens': 0}, '"max_new_tokens" must be an integer >= 1'),
    ({'max_new_tokens': 5.0}, '"max_new_tokens" must be an integer'),
    ({'max_new_tokens': True}, '"max_new_tokens" must be an integer'),
    ({'max_new_tokens': '5'}, '"max_new_tokens" must be an integer'),
    ({'min_new_tokens': 5000}, '"min_new_tokens" must be an integer >= 0 and <= 1024'),
    ({'num_beams': 64}, '"num_beams" must be an integer >= 1 and <= 8'),
    ({'num_return_sequences': 9}, '"num_return_sequences" must be an integer >= 1 and <= 8'),
    ({'do_sample': 'yes'}, '"do_sample" must be true or false'),
    ({'do_sample': 1}, '"do_sample" must be true or false'),
    ({'early_stopping': 'never'}, '"early_stopping" must be true or false'),
    ({'temperature': 0}, '"temperature" must be a number >= 0.01 and <= 100.0'),
    ({'temperature': -1.0}, '"temperature" must be a number >= 0.01'),
    ({'temperature': 1e-300}, '"temperature" must be a number >= 0.01'),
    ({'temperature': 5e-324}, '"temperature" must be a number >= 0.01'),
    ({'temperature': '1e-320'}, '"temperature" must be a number >= 0.01'),
    ({'temperature': 10**401}, '"temperature" must be a number >= 0.01 and <= 100.0, got an integer of about 402'),
    ({'temperature': '9' * 401}, '"temperature" must be a number'),
    ({'temperature': 'nan'}, '"temperature" must be a number'),
    ({'temperature': float('inf')}, '"temperature" must be a number'),
    ({'temperature': [1]}, '"temperature" must be a number'),
    ({'top_k': -1}, '"top_k" must be an integer >= 0'),
    ({'top_p': 1.5}, '"top_p" must be a number > 0.0 and <= 1.0'),
    ({'typical_p': 0.0}, '"typical_p" must be a number > 0.0'),
    ({'repetition_penalty': 0}, '"repetition_penalty" must be a number >= 0.01'),
    ({'repetition_penalty': 1e-300}, '"repetition_penalty" must be a number >= 0.01'),
    ({'repetition_penalty': 5e-324}, '"repetition_penalty" must be a number >= 0.01'),
    ({'repetition_penalty': '1e-320'}, '"repetition_penalty" must be a number >= 0.01'),
    ({'length_penalty': 1e9}, '"length_penalty" must be a number >= -100.0 and <= 100.0'),
    ({'no_repeat_ngram_size': -2}, '"no_repeat_ngram_size" must be an integer >= 0'),
    ({'no_repeat_ngram_size': 9}, '"no_repeat_ngram_size" must be an integer >= 0 and <= 8'),
    ({'min_new_tokens': 9, 'max_new_tokens': 8}, 'min_new_tokens 9 is more than max_new_tokens 8'),
    ({'min_new_tokens': 9}, 'min_new_tokens 9 is more than max_new_tokens 8'),  # the folder's default 8
    ({'truncation': 'true'}, '"truncation" must be true or false'),
    ({'max_length': 10**6}, '"max_length" is not accepted; accepted parameters: max_new_tokens'),
    ({'streamer': 'x'}, '"streamer" is not accepted .*run code'),
    ({'generation_config': {'max_new_tokens': 10**6}}, '"generation_config" is not accepted'),
    ({'assistant_model': 'gpt2'}, '"assistant_model" is not accepted'),
    ({'past_key_values': None}, '"past_key_values" is not accepted'),
    ({'num_beam_groups': 2, 'diversity_penalty': 1.0}, '"num_beam_groups" is not accepted'),
    ({'use_cache': False}, '"use_cache" is not accepted'),
])
def test_each_bad_parameter_is_refused(handler, parameters, message):
  with pytest.raises(ValueError, match=message):
    handler({'inputs': ['hello'], 'parameters': parameters})


@pytest.mark.parametrize('request_body, message', [
    ({'inputs': 3}, '"inputs" must be a string or a non-empty list of strings'),
    ({'inputs': []}, '"inputs" must be a string or a non-empty list'),
    ({'inputs': ['a', None]}, '"inputs" must be a string or a non-empty list'),
    ({'parameters': {}}, 'expected {"inputs"'),
    ('just text', 'expected {"inputs"'),
    ({'inputs': 'a', 'parameters': 'max_new_tokens=5'}, '"parameters" must be an object'),
    ({'inputs': 'a', 'trust_remote_code': True}, r"unexpected request key\(s\) \['trust_remote_code'\]"),
    ({'inputs': ['a'] * 17}, '17 inputs in one request; this endpoint accepts at most 16'),
    ({'inputs': ['a', 'b' * 20_001]}, 'input 1 has 20,001 characters; this endpoint accepts at most 20,000'),
])
def test_malformed_requests_are_refused(handler, request_body, message):
  with pytest.raises(ValueError, match=message):
    handler(request_body)


def test_input_token_cap_and_truncation(handler, reference):
  tokenizer, generate = reference
  long = 'the quick brown fox jumps over the lazy dog ' * 10
  assert len(tokenizer(long).input_ids) > INPUT_LENGTH
  with pytest.raises(ValueError, match=f'input 1 has {len(tokenizer(long).input_ids)} tokens; this endpoint accepts '
                                       f'at most {INPUT_LENGTH}.*"truncation": true'):
    handler({'inputs': ['short', long], 'parameters': {'max_new_tokens': 3}})
  out = handler({'inputs': ['short', long], 'parameters': {'max_new_tokens': 3, 'truncation': True}})
  assert out == [{'generated_text': t} for t in generate(['short', long], truncate=True, max_new_tokens=3)]
  cut = tokenizer([long], truncation=True, max_length=INPUT_LENGTH).input_ids[0]
  assert len(cut) == INPUT_LENGTH and cut[-1] == 1  # cut to the input length, EOS kept (as flanx trains)
  assert cut[:-1] == tokenizer(long).input_ids[:INPUT_LENGTH - 1]


def test_limits_from_environment_and_constructor(module, folder, monkeypatch):
  monkeypatch.setenv('FLANX_HANDLER_MAX_NEW_TOKENS', '4')
  monkeypatch.setenv('FLANX_HANDLER_MAX_INPUTS', '2')
  handler = module.EndpointHandler(str(folder))
  assert handler.limits == {'max_inputs': 2, 'max_input_chars': 20_000, 'max_input_tokens': INPUT_LENGTH,
                            'max_new_tokens': 4, 'max_beams': 8, 'max_return_sequences': 8,
                            'max_generated_tokens': 16_384, 'max_no_repeat_ngram_size': 8}
  with pytest.raises(ValueError, match='"max_new_tokens" must be an integer >= 1 and <= 4'):
    handler({'inputs': 'a', 'parameters': {'max_new_tokens': 5}})
  with pytest.raises(ValueError, match='3 inputs in one request; this endpoint accepts at most 2'):
    handler({'inputs': ['a', 'b', 'c']})
  # Without max_new_tokens the folder's 8 is capped by the limit.
  assert handler({'inputs': 'a'}) == handler({'inputs': 'a', 'parameters': {'max_new_tokens': 4}})
  handler = module.EndpointHandler(str(folder), max_new_tokens=16, max_input_tokens=8, max_beams=2)
  assert (handler.limits['max_new_tokens'], handler.limits['max_input_tokens']) == (16, 8)
  with pytest.raises(ValueError, match='"num_beams" must be an integer >= 1 and <= 2'):
    handler({'inputs': 'a', 'parameters': {'num_beams': 3}})
  with pytest.raises(ValueError, match='at most 8'):
    handler({'inputs': 'a b c d e f g h i j k l m n o p'})
  monkeypatch.setenv('FLANX_HANDLER_MAX_BEAMS', 'lots')
  with pytest.raises(ValueError, match='environment variable FLANX_HANDLER_MAX_BEAMS: max_beams must be a positive '
                                       "integer up to 2147483647, got 'lots'"):
    module.EndpointHandler(str(folder))
  with pytest.raises(TypeError, match='unknown handler limit'):
    module.EndpointHandler(str(folder), max_tokens=5)


def test_work_budget(module, handler):
  limits = handler.limits
  assert limits['max_generated_tokens'] == 16_384
  # The request: 16 inputs x 8 beams x 8 returns x 1,024 forced tokens (196 s on a 2-layer model).
  request = {'inputs': ['hello'] * 16, 'parameters': {'num_beams': 8, 'num_return_sequences': 8, 'max_new_tokens': 1024,
                                                       'min_new_tokens': 1024}}
  with pytest.raises(ValueError, match=r'16 input\(s\) x 8 beams or sequences x 1024 new tokens = 131,072 tokens; '
                                       r'this endpoint generates at most 16,384 per request \(max_generated_tokens\)'):
    handler(request)
  # At the budget the settings pass (checked without generating): every single limit can still be reached.
  for inputs, parameters in ((16, {'max_new_tokens': 1024}), (2, {'num_beams': 8, 'max_new_tokens': 1024}),
                             (16, {'num_return_sequences': 8, 'do_sample': True, 'max_new_tokens': 128})):
    settings = module.effective_parameters(parameters, handler.defaults, limits, inputs)
    assert settings['max_new_tokens'] * inputs * max(settings['num_beams'], settings.get('num_return_sequences', 1)) \
        == 16_384
  with pytest.raises(ValueError, match='= 16,400 tokens'):
    module.effective_parameters({'max_new_tokens': 1025}, handler.defaults, {**limits, 'max_new_tokens': 1025}, 16)
  assert module.resolve_limits({'max_generated_tokens': 100}, 64)['max_generated_tokens'] == 100


def test_near_zero_divisors_would_crash_generation(handler):
  """The control for the 0.01 floor: transformers itself fails on the refused temperatures (HTTP 500 before)."""
  batch = handler.tokenizer(['hello'], return_tensors='pt')
  for temperature in (1e-300, 5e-324, float('1e-320')):
    with pytest.raises(RuntimeError, match='inf'), torch.no_grad():
      handler.model.generate(**batch, do_sample=True, temperature=temperature, max_new_tokens=2)
  with pytest.raises(ValueError, match='"temperature" must be a number >= 0.01'):
    handler({'inputs': 'hello', 'parameters': {'do_sample': True, 'temperature': 1e-300}})
  out = handler({'inputs': 'hello', 'parameters': {'do_sample': True, 'temperature': 0.01, 'repetition_penalty': 0.01,
                                                   'max_new_tokens': 3}})
  assert len(out) == 1


def _edited_copy(folder, tmp_path, file, **changes):
  copy = tmp_path / 'copy'
  copy.mkdir()
  for path in folder.iterdir():
    (copy / path.name).write_bytes(path.read_bytes())
  settings = json.loads((copy / file).read_text())
  (copy / file).write_text(json.dumps({**settings, **changes}))
  return copy


def test_generation_config_defaults_meet_the_limits(module, folder, tmp_path):
  copy = _edited_copy(folder, tmp_path, 'generation_config.json', num_beams=32, num_return_sequences=32)
  handler = module.EndpointHandler(str(copy))
  with pytest.raises(ValueError, match=r'"num_beams" must be an integer >= 1 and <= 8, got 32 \(the model\'s default, '
                                       r'from generation_config.json\): send "num_beams" to override it'):
    handler({'inputs': 'hello'})
  with pytest.raises(ValueError, match='"num_return_sequences" must be an integer >= 1 and <= 8, got 32'):
    handler({'inputs': 'hello', 'parameters': {'num_beams': 2}})
  out = handler({'inputs': 'hello', 'parameters': {'num_beams': 2, 'num_return_sequences': 2, 'max_new_tokens': 3}})
  assert len(out) == 2  # a request inside the limits overrides both defaults
  # The budget counts the defaults too: 16 inputs x the folder's 8 returned sequences x 1024 tokens.
  handler = module.EndpointHandler(str(copy), max_return_sequences=32, max_beams=32)
  with pytest.raises(ValueError, match=r'1 input\(s\) x 32 beams or sequences x 8 new tokens = 256'):
    module.effective_parameters({}, handler.defaults, {**handler.limits, 'max_generated_tokens': 255}, 1)


@pytest.mark.parametrize('changes, message', [
    ({'penalty_alpha': 0.6, 'top_k': 4}, r'generation_config.json sets penalty_alpha = 0.6, which this endpoint cannot '
                                         r'bound or pass on: remove it'),
    ({'num_beam_groups': 4, 'diversity_penalty': 1.0}, 'sets diversity_penalty = 1.0, num_beam_groups = 4'),
    ({'return_dict_in_generate': True}, 'sets return_dict_in_generate = True'),
    ({'use_cache': False}, 'sets use_cache = False'),
])
def test_generation_config_settings_the_handler_cannot_bound(module, folder, tmp_path, changes, message):
  copy = _edited_copy(folder, tmp_path, 'generation_config.json', **changes)
  with pytest.raises(ValueError, match=message):
    module.EndpointHandler(str(copy))


def test_tokenizer_model_max_length_is_bounded(module, folder, tmp_path):
  copy = _edited_copy(folder, tmp_path, 'tokenizer_config.json', model_max_length=100_000)
  handler = module.EndpointHandler(str(copy))
  assert handler.limits['max_input_tokens'] == 2048
  tokens = len(handler.tokenizer('a b ' * 1250).input_ids)
  assert 2048 < tokens < 100_000
  with pytest.raises(ValueError, match=f'input 0 has {tokens} tokens; this endpoint accepts at most 2048'):
    handler({'inputs': 'a b ' * 1250})
  assert module.EndpointHandler(str(copy), max_input_tokens=4096).limits['max_input_tokens'] == 4096  # explicit


@pytest.mark.parametrize('value', ['9' * 401, str(2**31), '0', '-3', '1e3', ' ', '٣'])
def test_limits_are_range_checked_before_conversion(module, folder, monkeypatch, value):
  monkeypatch.setenv('FLANX_HANDLER_MAX_NEW_TOKENS', value)
  with pytest.raises(ValueError, match='FLANX_HANDLER_MAX_NEW_TOKENS: max_new_tokens must be a positive integer up to '
                                       '2147483647'):
    module.resolve_limits({}, 512)
  monkeypatch.delenv('FLANX_HANDLER_MAX_NEW_TOKENS')
  with pytest.raises(ValueError, match=r'EndpointHandler\(max_beams=…\): max_beams must be a positive integer'):
    module.resolve_limits({'max_beams': 10**5000}, 512)


# Serving (issue 24, item 5). No GPU here: CPU placement, dtypes and adapters; the GPU choices as a pure function.

def test_placed_with_device_map_on_cpu(module, folder, monkeypatch):
  accelerate = pytest.importorskip('accelerate')
  calls = []
  load = transformers.AutoModelForSeq2SeqLM.from_pretrained

  def spy(*args, **kwargs):  # records the placement options, then loads for real
    calls.append(kwargs)
    return load(*args, **kwargs)

  monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, 'from_pretrained', spy)
  handler = module.EndpointHandler(str(folder))
  assert handler.serving == {'dtype': 'auto', 'device_map': 'auto', 'load_in_8bit': False, 'merge_adapter': True}
  assert calls[-1] == {'dtype': torch.float32, 'low_cpu_mem_usage': True, 'trust_remote_code': False,
                       'device_map': 'auto'}
  # accelerate's own plan for this machine: all on the CPU (transformers then dispatches nothing).
  assert accelerate.infer_auto_device_map(handler.model) == {'': 'cpu'}
  assert {p.device.type for p in handler.model.parameters()} == {'cpu'} and handler.model.dtype == torch.float32
  plain = module.EndpointHandler(str(folder), device_map='none')
  assert 'device_map' not in calls[-1]
  request = {'inputs': ['first\nprompt', 'second'], 'parameters': {'max_new_tokens': 5, 'num_beams': 2}}
  assert plain(request) == handler(request)


def test_a_bfloat16_export_loads_as_bfloat16(module, folder, tmp_path, monkeypatch):
  from safetensors.torch import load_file, save_file  # pylint: disable=g-import-not-at-top
  copy = _edited_copy(folder, tmp_path, 'config.json', dtype='bfloat16', torch_dtype='bfloat16')  # as hf_format writes
  weights = {k: v.to(torch.bfloat16) for k, v in load_file(copy / 'model.safetensors').items()}
  save_file(weights, copy / 'model.safetensors', metadata={'format': 'pt'})
  handler = module.EndpointHandler(str(copy))
  assert handler.model.dtype == torch.bfloat16 and handler.model.lm_head.weight.dtype == torch.bfloat16
  tokenizer = transformers.AutoTokenizer.from_pretrained(copy)
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(copy, dtype=torch.bfloat16).eval()
  with torch.no_grad():
    ids = model.generate(**tokenizer(['a b c'], return_tensors='pt'), max_new_tokens=4).tolist()[0]
  expected = tokenizer.decode([i for i in ids if i < len(tokenizer)], skip_special_tokens=True)
  assert handler({'inputs': 'a b c', 'parameters': {'max_new_tokens': 4}}) == [{'generated_text': expected}]
  monkeypatch.setenv('FLANX_HANDLER_DTYPE', 'float32')
  assert module.EndpointHandler(str(copy)).model.dtype == torch.float32
  with pytest.raises(ValueError, match='float16: T5 v1.1 / Flan-T5 / UL2 .* overflow in float16'):
    module.EndpointHandler(str(copy), dtype='float16')  # the fixture is gated-gelu


@pytest.mark.parametrize('requested, recorded, gated, cuda, bf16, expected', [
    ('auto', 'bfloat16', True, False, False, 'bfloat16'),  # CPU: as recorded
    ('auto', 'bfloat16', True, True, True, 'bfloat16'),  # A100/H100
    ('auto', 'bfloat16', True, True, False, 'float32'),  # T4/V100: not float16
    ('auto', 'float32', True, True, True, 'float32'),
    ('auto', None, True, True, True, 'float32'),
    ('float16', 'float32', False, True, False, 'float16'),  # T5 1.0 (relu), asked for
    ('bfloat16', 'float32', True, True, True, 'bfloat16'),
    ('float16', 'bfloat16', True, True, True, 'float16: T5 v1.1'),
    ('bfloat16', 'float32', True, True, False, 'this GPU has no bfloat16'),
])
def test_dtype_choice(module, requested, recorded, gated, cuda, bf16, expected):
  if expected in module._DTYPES:  # pylint: disable=protected-access
    assert module.choose_dtype(requested, recorded, gated, cuda, bf16) == expected
  else:
    with pytest.raises(ValueError, match=expected):
      module.choose_dtype(requested, recorded, gated, cuda, bf16)


def test_serving_settings_are_checked(module, folder, monkeypatch):
  monkeypatch.setenv('FLANX_HANDLER_LOAD_IN_8BIT', 'maybe')
  with pytest.raises(ValueError, match='environment variable FLANX_HANDLER_LOAD_IN_8BIT: load_in_8bit must be 1 or 0'):
    module.resolve_serving({})
  monkeypatch.setenv('FLANX_HANDLER_LOAD_IN_8BIT', '1')
  assert module.resolve_serving({})['load_in_8bit'] is True
  if not torch.cuda.is_available():
    with pytest.raises(ValueError, match='FLANX_HANDLER_LOAD_IN_8BIT=1 needs a CUDA GPU'):
      module.EndpointHandler(str(folder))
  monkeypatch.delenv('FLANX_HANDLER_LOAD_IN_8BIT')
  with pytest.raises(ValueError, match=r'EndpointHandler\(dtype=…\): dtype must be one of auto, float32, bfloat16, '
                                       'float16'):
    module.EndpointHandler(str(folder), dtype='fp8')
  with pytest.raises(TypeError, match='unknown handler limit'):
    module.EndpointHandler(str(folder), device='cuda')


def _adapter_folder(tmp_path, tiny_config, random_params):
  """A LoRA folder as `flanx.export --adapter_only` writes it (flanx's writers), then moved: the absolute base path it
  records no longer exists, its base/ does."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx.interop import hf_format, hf_tokenizer, peft_adapter  # pylint: disable=g-import-not-at-top
  from flanx.model import network, peft  # pylint: disable=g-import-not-at-top
  base_config = tiny_config(vocab_size=256)
  config = base_config.replace(lora=peft.LoraConfig(rank=4, alpha=8.0, target_modules=('q', 'v', 'wo')))
  rng = np.random.default_rng(4)
  adapters, _ = peft.split_trainable(network.abstract_params(config))
  adapters = jax.tree.map(lambda x: 0.3 * rng.standard_normal(x.shape).astype(np.float32), adapters)
  params = peft.combine(adapters, network.to_model_layout(config, random_params(base_config)))
  written = tmp_path / 'written'
  written.mkdir()
  hf_format.write_hf_model(written / 'base', peft.split_trainable(params)[1], base_config,
                           generation={'max_new_tokens': 8, 'do_sample': False, 'num_beams': 1})
  peft_adapter.write_adapter(written, params, config, str(written / 'base'))
  hf_tokenizer.write_tokenizer(written, vocab_lib.get_vocabulary(SPM, 'lossless'), INPUT_LENGTH)
  (written / 'handler.py').write_bytes(TEMPLATE.read_bytes())
  return written.rename(tmp_path / 'served')


def _generated(model, tokenizer, prompts):
  with torch.no_grad():
    ids = model.generate(**tokenizer(prompts, return_tensors='pt', padding=True), max_new_tokens=6,
                         do_sample=False).tolist()
  return [{'generated_text': tokenizer.decode([i for i in row if i < len(tokenizer)], skip_special_tokens=True)}
          for row in ids]


@pytest.mark.slow
def test_an_adapter_folder_is_served(module, tmp_path, tiny_config, random_params):
  peft = pytest.importorskip('peft')
  from flanx.interop import peft_adapter  # pylint: disable=g-import-not-at-top
  folder = _adapter_folder(tmp_path, tiny_config, random_params)
  settings = json.loads((folder / 'adapter_config.json').read_text())
  assert not os.path.exists(settings['base_model_name_or_path'])  # moved: base/ is found beside the adapter
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  prompts = ['first\nprompt', 'a b c d']
  expected = _generated(peft_adapter.load_peft_model(str(folder), str(folder / 'base')), tokenizer, prompts)
  assert expected != _generated(transformers.AutoModelForSeq2SeqLM.from_pretrained(folder / 'base').eval(), tokenizer,
                                prompts)  # the adapter matters
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    merged = module.EndpointHandler(str(folder))
  assert not [w for w in caught if 'tied' in str(w.message)]
  assert type(merged.model).__name__ == 'T5ForConditionalGeneration'  # LoRA folded in at load
  assert merged({'inputs': prompts, 'parameters': {'max_new_tokens': 6}}) == expected
  separate = module.EndpointHandler(str(folder), merge_adapter=False)
  assert isinstance(separate.model, peft.PeftModel)
  assert separate({'inputs': prompts, 'parameters': {'max_new_tokens': 6}}) == expected
  (folder / 'base').rename(tmp_path / 'elsewhere')
  with pytest.raises(ValueError, match=r'adapter_config.json: its base model .* is not here; put the base folder at'):
    module.EndpointHandler(str(folder))
