"""flanx.infer on bad prompt files: empty → a clear error; non-UTF-8 → file and line; over-long prompts → counted.

The truncation count is checked against seqio's ByteVocabulary (one id per UTF-8 byte) on a tiny random
checkpoint: which prompts exceed the input length is plain arithmetic on their byte lengths.
"""

import json

import gin
import pytest
import seqio

from flanx import infer as infer_cli
from flanx.inference import infer
from flanx.model.config import T5Config
from flanx.training import checkpoints
from tasks import records

CONFIG = dict(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2, num_decoder_layers=2)
INPUT_LENGTH = 16


@pytest.mark.parametrize('content', [b'', b'\n\n  \n'])
def test_empty_prompt_file_is_an_error(tmp_path, content):
  path = tmp_path / 'prompts.jsonl'
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f'{path}: no prompts \\(the file is empty or has only blank lines\\)'):
    infer.read_prompts(str(path))
  # The command line: a non-zero exit with that message, nothing written.
  out = tmp_path / 'out'
  gin.clear_config()
  try:
    with pytest.raises(ValueError, match='no prompts'):
      infer_cli.main(['--gin.infer.checkpoint_path="unused"', f'--gin.infer.output_dir="{out}"',
                      '--gin.infer.batch_size=2', "--gin.infer.task_feature_lengths={'inputs': 8, 'targets': 4}",
                      f'--gin.infer.input_file="{path}"'])
  finally:
    gin.clear_config()
  assert not out.exists()


def test_non_utf8_bytes_name_file_line_and_column(tmp_path):
  path = tmp_path / 'prompts.jsonl'
  path.write_bytes('{"inputs": "fine ✓"}\n\n'.encode() + b'{"inputs": "caf\xe9"}\n')
  with pytest.raises(records.RecordError, match=f'{path}:3: not UTF-8 text \\(byte 0xe9 at column 16\\)'):
    infer.read_prompts(str(path))
  # A byte-order mark at the start is not an error; line numbers are the file's.
  path.write_bytes(b'\xef\xbb\xbf{"inputs": "a"}\n\n{"prompt": "b", "target": "c"}\n')
  assert infer.read_prompts(str(path)) == [{'inputs': 'a', 'line': 1}, {'inputs': 'b', 'line': 3, 'targets': 'c'}]


@pytest.mark.slow
def test_long_prompts_are_counted_and_reported(tmp_path, random_params, capsys):
  config = T5Config(**CONFIG)
  run = tmp_path / 'run'
  checkpoints.write_params_checkpoint(str(run), 1, random_params(config, 0), {'step': 1})
  # Byte vocabulary: a prompt of n ASCII characters is n ids + EOS; it fits while n <= INPUT_LENGTH - 1.
  prompts = ['x' * 15, 'y' * 16, 'short', 'é' * 8, 'z' * 40]  # 'é' is two bytes: 16 ids
  path = tmp_path / 'prompts.jsonl'
  path.write_text('\n'.join(json.dumps({'inputs': p}) for p in prompts[:2]) + '\n\n' +
                  '\n'.join(json.dumps({'inputs': p}) for p in prompts[2:]) + '\n')
  cut = [i for i, p in enumerate(prompts) if len(p.encode()) > INPUT_LENGTH - 1]
  assert cut == [1, 3, 4]
  gin.clear_config()
  try:
    gin.parse_config('import flanx.inference.predict\ndecode_options.max_decode_length = 2')
    out = infer.infer(checkpoint_path=str(run), output_dir=str(tmp_path / 'out'), batch_size=2,
                      task_feature_lengths={'inputs': INPUT_LENGTH, 'targets': 2}, model_config=config,
                      input_file=str(path), vocabulary=seqio.ByteVocabulary())
  finally:
    gin.clear_config()
  printed = capsys.readouterr().out
  assert (f'Warning: {path}: 3 of 5 inputs are longer than the input length ({INPUT_LENGTH} tokens with EOS) and '
          'were truncated (line 2, line 5, line 6).') in printed
  assert 'prompts: 5 predictions, 3 of 5 inputs truncated to 16 tokens.' in printed
  lines = [json.loads(line) for line in open(out, encoding='utf-8')]
  assert [line['input'] for line in lines] == prompts  # the full prompt is kept in the output


@pytest.mark.slow
def test_infer_command_profiles_chosen_batches_and_uses_a_compile_cache(tmp_path, random_params, capsys):
  import gzip  # pylint: disable=g-import-not-at-top
  config = T5Config(**CONFIG)
  run = tmp_path / 'run'
  checkpoints.write_params_checkpoint(str(run), 1, random_params(config, 0), {'step': 1})
  path = tmp_path / 'prompts.jsonl'
  path.write_text(''.join(json.dumps({'inputs': f'prompt {i}'}) + '\n' for i in range(6)))
  out = tmp_path / 'out'
  model = [f'--gin.T5Config.{k}={v}' for k, v in CONFIG.items()]
  gin.clear_config()
  try:
    assert infer_cli.main(['--gin_file=runs/infer.gin', '--gin.infer.model_config=@T5Config()', *model,
                           f'--gin.CHECKPOINT_PATH="{run}"', f'--gin.INFER_OUTPUT_DIR="{out}"',
                           f'--gin.INPUT_FILE="{path}"', '--gin.BATCH_SIZE=2', '--gin.MAX_DECODE_LENGTH=3',
                           "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 3}",
                           '--gin.infer.vocabulary=@get_vocabulary()', '--gin.get_vocabulary.path="byte"',
                           '--gin.infer.profile_batches=(1, 1)', '--gin.compile_cache.min_compile_seconds=0']) == 0
  finally:
    gin.clear_config()
  printed = capsys.readouterr().out
  assert f'Profiled step(s) 1: {out}/plugins/profile' in printed
  assert f'Compile cache {out}/compile_cache: 0 hit(s), ' in printed
  assert any((out / 'compile_cache').iterdir())  # the decode program was written for the next run
  (trace,) = (out / 'plugins' / 'profile').glob('*/*.trace.json.gz')
  with gzip.open(trace) as f:
    assert json.load(f)['traceEvents']
