"""flanx → Hugging Face export: the CLI on a run folder, reloading with transformers, tokenizers, handler.py.

References nobody here wrote: transformers' T5ForConditionalGeneration and AutoTokenizer, seqio's vocabularies,
safetensors files written by transformers itself.
"""

import importlib.util
import json
import logging
import os
import pathlib
import struct

import gin
import jax
import numpy as np
import pytest
import seqio

from flanx.interop import load_params as checkpoint_import, hf_format as hf, hf_tokenizer, hf_verify
from flanx.training import checkpoints
from flanx import export, gin_config as gin_utils
from flanx.interop import hf_export
from flanx.model.config import T5Config
from tasks import vocab as vocab_lib

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# seqio ships this tiny SentencePiece model (26 pieces, T5's special ids): + 100 sentinels + newline/tab = 128.
SPM = os.path.join(os.path.dirname(seqio.__file__), 'test_data', 'sentencepiece', 'sentencepiece.model')
TASK = 'flanx_export_test'
# Same tiny model as tests/test_t5x_import.py (export verification compiles once per session); 264 rows fit the
# lossless SentencePiece vocabulary (128 ids) and the byte vocabulary (259).
CONFIG = dict(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=3)
LENGTHS = {'inputs': 64, 'targets': 32}


def _register_task() -> seqio.Vocabulary:
  vocabulary = vocab_lib.get_vocabulary(SPM, 'lossless')
  if TASK not in seqio.TaskRegistry.names():
    source = seqio.FunctionDataSource(lambda split, shuffle_files, seed=None: None, splits=('train',))
    seqio.TaskRegistry.add(TASK, source=source, output_features={
        'inputs': seqio.Feature(vocabulary), 'targets': seqio.Feature(vocabulary)})
  return vocabulary


def _run_gin(run_dir: pathlib.Path) -> str:
  lines = ['import flanx.training.loop', 'import flanx.training.schedules', 'import flanx.model.config',
           f"train.model_dir = '{run_dir}'", f"train.mixture_or_task_name = '{TASK}'",
           f'train.task_feature_lengths = {LENGTHS}', 'train.batch_size = 8', 'train.train_steps = 100',
           "train.initial_checkpoint_path = 'gs://t5-data/pretrained_models/t5x/flan_t5_small/checkpoint_1198000'",
           'train.model_config = @T5Config()', 'train.learning_rate_schedule = @schedules.constant()',
           'schedules.constant.learning_rate = 5e-4', "T5Config.dtype = 'bfloat16'", 'T5Config.dropout_rate = 0.05']
  lines += [f'T5Config.{k} = {v}' for k, v in CONFIG.items()]
  return '\n'.join(lines)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A run folder as the trainer leaves it: config.gin, checkpoints 50 and 100, train metrics, eval results."""
  from conftest import _random_params  # pylint: disable=g-import-not-at-top
  _register_task()
  run_dir = tmp_path_factory.mktemp('run') / 'model_dir'
  gin.clear_config()
  gin.parse_config(_run_gin(run_dir))
  gin_utils.write_config(str(run_dir))
  gin.clear_config()
  config = T5Config(**CONFIG, dtype='bfloat16', dropout_rate=0.05)
  params = {step: _random_params(config, step) for step in (50, 100)}
  ckpts = checkpoints.RunCheckpoints(str(run_dir), keep=None, async_save=False)
  for step, p in params.items():
    ckpts.save(step, p, {'count': np.zeros((), np.int32)}, {'step': step, 'batches_read': step})
  ckpts.close()
  (run_dir / 'train_metrics.jsonl').write_text(''.join(
      json.dumps({'step': s, 'loss': 4.0 - s / 100, 'accuracy': s / 200}) + '\n' for s in (90, 100)))
  (run_dir / 'eval').mkdir()
  (run_dir / 'eval' / 'validation_metrics.json').write_text(json.dumps(
      {'checkpoint': str(run_dir), 'split': 'validation', 'step': 100,
       'metrics': {TASK: {'exact_match': 12.5}, 'teacher_forced': {'accuracy': 0.25}}}))
  return run_dir, config, params


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  """`python -m flanx.export` on the run folder: newest step, verified, sharded at 20 kB, one gin override."""
  run_dir, _, _ = run
  out = tmp_path_factory.mktemp('export') / 'flanx-tiny'
  gin.clear_config()
  assert export.main(['--checkpoint_dir', str(run_dir), '--output_dir', str(out), '--max_shard_size=20KB',
                      '--gin.T5Config.dropout_rate=0.0']) == 0
  gin.clear_config()
  return out


def _header(path) -> dict:
  with open(path, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    return json.loads(f.read(n))


def _encode(vocabulary, texts, eos=1):
  rows = [list(vocabulary.encode(t)) + [eos] for t in texts]
  out = np.zeros((len(rows), max(map(len, rows))), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def test_folder_files_config_and_card(run, exported):
  run_dir, config, _ = run
  names = sorted(p.name for p in exported.iterdir())
  shards = [n for n in names if n.endswith('.safetensors')]
  assert len(shards) > 3 and 'model.safetensors' not in names
  for name in ('config.json', 'generation_config.json', 'model.safetensors.index.json', 'spiece.model',
               'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'README.md', 'handler.py',
               'flanx_export.json'):
    assert name in names, name
  assert sorted(p.name for p in exported.parent.iterdir()) == [exported.name]  # no staging folders left
  cfg = json.loads((exported / 'config.json').read_text())
  assert cfg['architectures'] == ['T5ForConditionalGeneration'] and cfg['tie_word_embeddings'] is False
  assert (cfg['decoder_start_token_id'], cfg['pad_token_id'], cfg['eos_token_id']) == (0, 0, 1)
  assert cfg['dropout_rate'] == 0.0 and cfg['torch_dtype'] == 'float32'  # --gin override applied
  assert (cfg['vocab_size'], cfg['d_ff'], cfg['num_layers'], cfg['num_decoder_layers']) == (264, 64, 2, 3)
  generation = json.loads((exported / 'generation_config.json').read_text())
  assert generation == {'decoder_start_token_id': 0, 'pad_token_id': 0, 'eos_token_id': 1,
                        'max_new_tokens': LENGTHS['targets'], 'do_sample': False, 'num_beams': 1}
  assert all(_header(exported / s)['__metadata__'] == {'format': 'pt'} for s in shards)
  assert (exported / 'spiece.model').read_bytes() == pathlib.Path(SPM).read_bytes()
  tok_config = json.loads((exported / 'tokenizer_config.json').read_text())
  # Lossless: the class that loads tokenizer.json (and its decoder) as written; transformers 5's T5Tokenizer would not.
  assert tok_config['tokenizer_class'] == 'PreTrainedTokenizerFast' and tok_config['extra_ids'] == 100
  assert tok_config['additional_special_tokens'] == [f'<extra_id_{i}>' for i in range(100)]
  assert tok_config['model_max_length'] == LENGTHS['inputs']
  card = (exported / 'README.md').read_text()
  for fact in ('flan_t5_small/checkpoint_1198000', TASK, '| Checkpoint step | 100 |', '| Batch size (sequences) | 8 |',
               'learning_rate=0.0005', '"inputs": 64', '| loss | 3 |', '| accuracy | 0.5 |',
               f'| validation_metrics.json | validation | 100 | {TASK} | exact_match | 12.5 |',
               'max |logit difference|', '"\\n" → 126', 'T5Config.d_model = 32',
               '`tokenizer.decode` gives them back as they were', 'advises tie_word_embeddings=False here'):
    assert fact in card, fact


def _umask() -> int:
  umask = os.umask(0o022)
  os.umask(umask)
  return umask


def test_files_are_readable_like_the_rest(exported):
  # safetensors' save_file writes 0600; an exported folder is shared or uploaded: every file gets what open() gives.
  umask = _umask()
  modes = {p.name: p.stat().st_mode & 0o777 for p in exported.iterdir()}
  assert {n for n in modes if n.endswith('.safetensors')} and set(modes.values()) == {0o666 & ~umask}, modes
  assert exported.stat().st_mode & 0o777 == 0o777 & ~umask


def _logged(load):
  """(load(), the messages transformers logged meanwhile)."""
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logging.getLogger('transformers').addHandler(handler)
  try:
    return load(), messages
  finally:
    logging.getLogger('transformers').removeHandler(handler)


def test_loading_gives_no_tie_word_embeddings_advice(exported):
  config = json.loads((exported / 'config.json').read_text())
  assert config['tie_word_embeddings'] is False and config['scale_decoder_outputs'] is False
  advice = lambda messages: [m for m in messages if 'tie_word_embeddings=False' in m]
  handler, messages = _logged(lambda: _load_handler(exported).EndpointHandler(str(exported)))
  assert not advice(messages)
  verified, messages = _logged(lambda: hf_verify.load_hf_model(str(exported)))
  assert not advice(messages)
  # transformers alone gives the advice although config.json follows it: its T5Config reads the key as
  # scale_decoder_outputs and sets tie_word_embeddings true. The head still loads untied, as the config says.
  plain, messages = _logged(lambda: transformers.AutoModelForSeq2SeqLM.from_pretrained(exported).eval())
  assert advice(messages) and plain.config.tie_word_embeddings is True and not plain.config.scale_decoder_outputs
  ids = torch.tensor([[5, 9, 14, 1]])
  with torch.no_grad():
    logits = [m(input_ids=ids, decoder_input_ids=torch.tensor([[0, 7, 3]])).logits
              for m in (plain, handler.model, verified)]
  for model in (plain, handler.model, verified):
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)
  torch.testing.assert_close(logits[2], logits[0], rtol=0, atol=0)


def test_transformers_reload_matches_flanx(run, exported):
  _, config, params = run
  vocabulary = _register_task()
  tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(exported).eval()
  # The probe batch's shapes: flanx's jitted functions are already compiled for them.
  enc, dec = hf_verify.probe_batch(vocabulary, config)
  prompts = hf_tokenizer.probe_strings(vocabulary)[:len(enc)]
  assert any('\n' in p for p in hf_tokenizer.probe_strings(vocabulary))
  for row, prompt in zip(enc.tolist(), prompts):  # HF's tokenizer gives the ids flanx was fed
    expected = tokenizer(prompt).input_ids[:-1][:hf_verify.MAX_INPUT_TOKENS - 1] + [1]
    assert row == expected + [0] * (len(row) - len(expected))
  # flanx's own model and greedy decoder (float32 compute; the run trained with bf16 activations).
  reference = hf_verify.flanx_reference(params[100], config, enc, dec)
  enc_t = torch.from_numpy(enc).long()
  with torch.no_grad():
    logits = model(input_ids=enc_t, attention_mask=(enc_t != 0).long(),
                   decoder_input_ids=torch.from_numpy(dec).long()).logits.numpy()
    # (transformers 5.x needs its own cache for a decoder deeper than the encoder: generate_cache_kwargs.)
    generated = model.generate(input_ids=enc_t, attention_mask=(enc_t != 0).long(),
                               max_new_tokens=hf_verify.DECODE_TOKENS, do_sample=False,
                               **hf_verify.generate_cache_kwargs(model.config)).numpy()
  np.testing.assert_allclose(logits, reference.logits, atol=1e-4, rtol=0)
  cut = lambda row: row[:row.index(1) + 1] if 1 in row else row
  for flanx_row, hf_row in zip(reference.greedy.tolist(), generated[:, 1:].tolist()):
    assert cut(hf_row) == cut(flanx_row)
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()


def test_tokenizer_newline_ids_and_cleanup(exported):
  vocabulary = _register_task()
  tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  assert vocab_lib.newline_token_map(vocabulary) == {'\n': 126, '\t': 127, **{' ' * k: 126 + k for k in range(2, 17)}}
  assert tokenizer.convert_tokens_to_ids(['\n', '\t']) == [126, 127]
  text = 'line one\nline two\tcell'
  ids = tokenizer(text).input_ids
  assert ids == list(vocabulary.encode(text)) + [1]
  # Plain transformers decoding gives the text back (T5's Metaspace decoder would write 'line one\n line two\t cell').
  assert tokenizer.decode(ids, skip_special_tokens=True) == vocabulary.decode(ids) == text
  # Sentinels keep seqio's ids (the last SentencePiece ids, before the whitespace ones) and stay special.
  assert tokenizer.convert_tokens_to_ids('<extra_id_0>') == 125 and 125 in tokenizer.all_special_ids
  assert hf_tokenizer.compare_tokenization(vocabulary, tokenizer) == []
  # Verification catches a tokenizer that does not match the vocabulary the model was trained with.
  plain = vocab_lib.get_vocabulary(SPM, 'none')
  problems = hf_tokenizer.compare_tokenization(plain, tokenizer)
  assert problems and all(any(w in p for w in ('\n', '\\n', '\t', '\\t', '  ')) for p in problems)


def _load_handler(folder):
  spec = importlib.util.spec_from_file_location('exported_handler', folder / 'handler.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_endpoint_handler(exported):
  module = _load_handler(exported)
  handler = module.EndpointHandler(str(exported))
  prompts = ['first\nprompt', 'second prompt']
  out = handler({'inputs': prompts, 'parameters': {'max_new_tokens': 6}})
  tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  model = transformers.AutoModelForSeq2SeqLM.from_pretrained(exported).eval()
  with torch.no_grad():
    ids = model.generate(**tokenizer(prompts, return_tensors='pt', padding=True), max_new_tokens=6,
                         **hf_verify.generate_cache_kwargs(model.config)).tolist()
  expected = [tokenizer.decode([i for i in row if i < len(tokenizer)], skip_special_tokens=True) for row in ids]
  assert out == [{'generated_text': t} for t in expected]
  assert handler({'inputs': 'second prompt', 'parameters': {'max_new_tokens': 6}}) == out[1:]
  with pytest.raises(ValueError, match='inputs'):
    handler({'inputs': 3})
  # The handler's copies of the text conventions agree with flanx's.
  for text in ('a\n b\t c', 'x\n\ny', ' <_LB_> ', 'a \u2047 _LB_> b _T_ c', 'one\ntwo\tthree  four'):
    for mode in ('lossless', 'dolly', 'none'):
      assert module.clean_decoded(text, mode) == hf_tokenizer.clean_decoded(text, mode)
      assert module.prepare_text(text, mode) == hf_tokenizer.prepare_text(text, mode)


def test_bfloat16_byte_export_of_an_older_step(run, tmp_path):
  run_dir, config, params = run
  out = tmp_path / 'bf16'
  gin.clear_config()
  # The run names a SentencePiece task: --vocab=byte is accepted only for a run without one (test_export_safety).
  export.main(['--checkpoint_dir', str(run_dir / 'checkpoint_50'), '--output_dir', str(out), '--dtype=bfloat16',
               '--vocab=byte', '--handler=false', '--gin.train.mixture_or_task_name=None'])
  gin.clear_config()
  header = _header(out / 'model.safetensors')
  assert {v['dtype'] for k, v in header.items() if k != '__metadata__'} == {'BF16'}
  stored, _ = hf.read_hf_model(out)
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  rounded = jax.tree.map(lambda x: np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32), params[50])
  jax.tree.map(np.testing.assert_array_equal, stored, rounded)
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert type(tokenizer).__name__ == 'ByT5Tokenizer'
  text = 'héllo\n\twörld ✓'
  assert tokenizer(text).input_ids == seqio.ByteVocabulary().encode(text) + [1]
  assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text
  card = (out / 'README.md').read_text()
  assert '| Checkpoint step | 50 |' in card and 'bfloat16 weights vs the float32 model' in card
  assert not (out / 'handler.py').exists()


def test_failed_verification_leaves_nothing(run, tmp_path, monkeypatch):
  run_dir, _, _ = run
  real = hf.hf_config_dict
  # A config.json whose activation disagrees with the weights' training: loads fine, computes differently.
  monkeypatch.setattr(hf, 'hf_config_dict', lambda *a, **k: {**real(*a, **k), 'feed_forward_proj': 'gated-silu',
                                                             'dense_act_fn': 'silu'})
  out = tmp_path / 'bad'
  gin.clear_config()
  with pytest.raises(hf_verify.VerificationError, match='logits differ'):
    export.main(['--checkpoint_dir', str(run_dir), '--output_dir', str(out)])
  gin.clear_config()
  assert list(tmp_path.iterdir()) == []


def test_existing_output_dir(run, tmp_path):
  run_dir, _, _ = run
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  args = ['--checkpoint_dir', str(run_dir), '--output_dir', str(out), '--verify=false']
  gin.clear_config()
  with pytest.raises(FileExistsError, match='--overwrite'):
    export.main(args)
  assert [p.name for p in out.iterdir()] == ['keep.txt']
  gin.clear_config()
  export.main(args + ['--overwrite'])
  gin.clear_config()
  assert not (out / 'keep.txt').exists() and (out / 'model.safetensors').exists()
  assert 'Export verification' not in (out / 'README.md').read_text()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_gin_files_instead_of_the_run_config(run, tmp_path):
  """Model gins + export_checkpoint bindings (no config.gin): the card states only what is known."""
  run_dir, _, params = run
  gin_file = tmp_path / 'export.gin'
  gin_file.write_text('\n'.join(['import flanx.model.config', 'import flanx.export'] +
                                 [f'T5Config.{k} = {v}' for k, v in CONFIG.items()] +
                                 [f"export_checkpoint.checkpoint_dir = '{run_dir / 'checkpoint_50'}'",
                                  "export_checkpoint.vocab = 'byte'", 'export_checkpoint.verify = False']))
  out = tmp_path / 'out'
  gin.clear_config()
  export.main(['--gin_file', str(gin_file), f'--gin.export_checkpoint.output_dir="{out}"', '--handler=false'])
  gin.clear_config()
  jax.tree.map(np.testing.assert_array_equal, hf.read_hf_model(out)[0], params[50])
  card = (out / 'README.md').read_text()
  assert '| Checkpoint step | 50 |' in card and '| loss | 3 |' in card
  assert 'Learning rate' not in card and 'Base model' not in card and 'Optimizer' not in card


def test_hf_import_then_export_is_byte_identical(tiny_config, tmp_path):
  config = tiny_config(**CONFIG)
  torch.manual_seed(0)
  source = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  source.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
  source.save_pretrained(tmp_path / 'hf')  # transformers' own safetensors file
  params = checkpoint_import.load_params(str(tmp_path / 'hf'), config)
  out = hf_export.export_model(lambda: params, config, tmp_path / 'again', seqio.ByteVocabulary(), verify=False,
                            handler=False, log=lambda _: None)
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  original, again = load_file(tmp_path / 'hf' / 'model.safetensors'), load_file(out / 'model.safetensors')
  aliases = {'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'}
  assert set(again) == set(original) - aliases
  for name, tensor in again.items():
    assert tensor.dtype == original[name].dtype and tensor.tobytes() == original[name].tobytes(), name


def test_parse_size():
  assert hf_export.parse_size('5GB') == 5 * 10**9 and hf_export.parse_size('20KB') == 20_000
  assert hf_export.parse_size('2GiB') == 2 * 2**30 and hf_export.parse_size(1e6) == 10**6
  with pytest.raises(ValueError, match='5GB'):
    hf_export.parse_size('five')
