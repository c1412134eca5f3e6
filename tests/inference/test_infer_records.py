"""flanx.infer's prompt files: hostile lines stop the run before any decoding, naming file and line (issue 25);
records of a task's own format get that task's template (issue 27).

References: the Dolly task's own training pipeline (seqio's `inputs_pretokenized`) for the prompts a template
makes, and a plain `{"inputs": …}` file decoded by the same checkpoint for the predictions.
"""

import json
import re

import gin
import numpy as np
import pytest
import seqio

from flanx.inference import infer
from flanx.model.config import T5Config
from flanx.training import checkpoints
from tasks import dolly
from tasks import records

DOLLY = [
    {'instruction': 'Add the two numbers.', 'context': '91 and 14', 'response': '105', 'category': 'arithmetic'},
    {'instruction': 'What is 2 + 2?', 'context': '', 'response': '4', 'category': 'open_qa'},
    {'instruction': 'Summarize.', 'context': 'Line one.\nLine two.', 'response': 'Two lines.',
     'category': 'summarization'},
]


def prompts_file(tmp_path, hostile: str, count: int = 10_000, at: int = 7_777):
  path = tmp_path / 'prompts.jsonl'
  lines = [json.dumps({'inputs': f'prompt {i}'}) for i in range(1, count + 1)]
  lines[at - 1] = hostile
  path.write_text('\n'.join(lines) + '\n')
  return path


@pytest.mark.parametrize('hostile, message', [
    ('[' * 100_000 + ']' * 100_000, 'JSON nested too deeply to read'),
    ('{"inputs": ' + '9' * 5000 + '}', 'unreadable JSON value (Exceeds the limit (4300 digits)'),
    ('{"inputs": "half a pair \\ud800"}', '\\ud800 (a lone UTF-16 surrogate escape) is not Unicode text'),
    ('{"inputs": "a", "targets": "\\udc00"}', '\\udc00 (a lone UTF-16 surrogate escape)'),
    ('{"inputs": 5}', 'expected a string field "inputs"'),
    ('{"inputs": "a", "targets": 5}', '"targets" is int, not a string'),
], ids=['nested', 'long_int', 'surrogate', 'surrogate_target', 'number', 'number_target'])
def test_hostile_line_stops_infer_before_any_decoding(tmp_path, hostile, message):
  path = prompts_file(tmp_path, hostile)
  with pytest.raises(records.RecordError, match=re.escape(f'{path}:7777: {message}')):
    infer.read_prompts(str(path))
  # Through infer(): the file is checked whole before the checkpoint is even opened (this one does not exist),
  # so no batch is decoded and nothing is written.
  out = tmp_path / 'out'
  gin.clear_config()
  try:
    with pytest.raises(records.RecordError, match=re.escape(f'{path}:7777: {message}')):
      infer.infer(checkpoint_path=str(tmp_path / 'no_checkpoint'), output_dir=str(out), batch_size=250,
                  task_feature_lengths={'inputs': 8, 'targets': 4}, input_file=str(path),
                  vocabulary=seqio.ByteVocabulary())
  finally:
    gin.clear_config()
  assert not out.exists()


def test_surrogate_pairs_and_gzip_are_read(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'prompts.jsonl.gz'
  path.write_bytes(gzip.compress(b'{"inputs": "smile \\ud83d\\ude00"}\n'))
  assert infer.read_prompts(str(path)) == [{'inputs': 'smile \U0001F600', 'line': 1}]


def dolly_prompts_from_the_task(tmp_path):
  """The prompts the Dolly task itself trains on for DOLLY (seqio's inputs_pretokenized), in file order."""
  data = tmp_path / 'dolly_full.jsonl'
  data.write_text(''.join(json.dumps(r) + '\n' for r in DOLLY))
  dolly.register_dolly('t_infer_dolly', str(data), validation_fraction=0.0, per_category=False,
                       vocabulary=seqio.ByteVocabulary())
  ds = seqio.get_mixture_or_task('t_infer_dolly').get_dataset(None, split='train', shuffle=False)
  return [ex['inputs_pretokenized'].decode() for ex in ds.as_numpy_iterator()]


@pytest.mark.slow
def test_dolly_records_get_the_task_template(tmp_path):
  expected = dolly_prompts_from_the_task(tmp_path)
  assert expected[0] == 'Add the two numbers.\n\nContext:\n91 and 14'  # the template's shape, for the reader
  path = tmp_path / 'raw.jsonl'
  # Inference records: no response or category; one without context (optional, counts as empty); one plain.
  lines = [{'instruction': r['instruction'], **({'context': r['context']} if r['context'] else {})} for r in DOLLY]
  lines.insert(1, {'inputs': 'a plain prompt', 'targets': 'kept'})
  lines.append(dict(DOLLY[0]))  # a complete record: its response is the target
  path.write_text(''.join(json.dumps(r) + '\n' for r in lines))
  got = infer.read_prompts(str(path), infer._prompt_template('t_infer_dolly', str(tmp_path / 'unused')))
  assert [g['inputs'] for g in got] == [expected[0], 'a plain prompt', *expected[1:], expected[0]]
  assert [g['line'] for g in got] == [1, 2, 3, 4, 5]
  assert [g.get('targets') for g in got] == [None, 'kept', None, None, '105']


def test_template_errors_name_the_line(tmp_path):
  path = tmp_path / 'raw.jsonl'
  path.write_text('{"instruction": "fine"}\n{"context": "no instruction"}\n')
  with pytest.raises(records.RecordError, match=re.escape(f"{path}:2: no string field \"inputs\" (or \"input\"/"
                                                          "\"prompt\"), and not a record of the task: missing field "
                                                          "'instruction' (task dolly builds its inputs")):
    infer.read_prompts(str(path), infer._prompt_template('dolly', str(tmp_path)))
  # No task named and none recorded: the message says how to name one.
  with pytest.raises(records.RecordError, match=re.escape(f'{path}:1: no string field "inputs"') +
                     '.*no task is named .*--gin.infer.task'):
    infer.read_prompts(str(path), infer._prompt_template(None, str(tmp_path / 'not_a_run')))
  # A mixture, a few-shot task, a task whose records are prompts already: each says why.
  for name, why in [('dolly_categories', "'dolly_categories' is a mixture: name one of its tasks"),
                    ('cot_gsm8k_fs_answer', 'is few-shot'), ('t_nonexistent', 'is not registered')]:
    with pytest.raises(records.RecordError, match=re.escape(why)):
      infer.read_prompts(str(path), infer._prompt_template(name, str(tmp_path)))
  # Without a template source at all (read_prompts alone), the plain form is asked for.
  with pytest.raises(records.RecordError, match=re.escape(f'{path}:1: expected a string field "inputs" (or '
                                                          '"input"/"prompt"); for records of a task\'s own format')):
    infer.read_prompts(str(path))


def test_the_checkpoint_recorded_task_applies(tmp_path):
  """A flanx run records its task (checkpoint meta 'run'); infer uses it when infer.task is not given."""
  checkpoint = tmp_path / 'run' / 'checkpoint_3'
  (checkpoint / 'params').mkdir(parents=True)
  (checkpoint / 'meta').mkdir()
  (checkpoint / 'meta' / 'metadata').write_text(json.dumps({'step': 3, 'run': {'MIXTURE_OR_TASK_NAME': 'dolly'}}))
  path = tmp_path / 'raw.jsonl'
  path.write_text(json.dumps({'instruction': 'Name a colour.', 'context': 'Think of the sky.'}) + '\n')
  got = infer.read_prompts(str(path), infer._prompt_template(None, str(tmp_path / 'run')))
  assert got == [{'inputs': 'Name a colour.\n\nContext:\nThink of the sky.', 'line': 1}]


@pytest.mark.slow
def test_infer_on_dolly_records_predicts_as_on_their_prompts(tmp_path, random_params):
  """End to end: a Dolly-format file with --gin.infer.task gives the predictions the same checkpoint gives for
  the plain prompts the task's pipeline makes."""
  config = T5Config(vocab_size=264, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_encoder_layers=2,
                    num_decoder_layers=2)
  run = tmp_path / 'run'
  checkpoints.write_params_checkpoint(str(run), 1, random_params(config, 0), {'step': 1})
  expected = dolly_prompts_from_the_task(tmp_path)
  raw, plain = tmp_path / 'raw.jsonl', tmp_path / 'plain.jsonl'
  raw.write_text(''.join(json.dumps({'instruction': r['instruction'], 'context': r['context']}) + '\n'
                         for r in DOLLY))
  plain.write_text(''.join(json.dumps({'inputs': p}) + '\n' for p in expected))
  outputs = []
  for path, task in ((raw, 't_infer_dolly'), (plain, None)):
    gin.clear_config()
    try:
      gin.parse_config('import flanx.inference.predict\ndecode_options.max_decode_length = 6')
      out = infer.infer(checkpoint_path=str(run), output_dir=str(tmp_path / path.stem), batch_size=2,
                        task_feature_lengths={'inputs': 64, 'targets': 6}, model_config=config,
                        input_file=str(path), vocabulary=seqio.ByteVocabulary(), task=task)
    finally:
      gin.clear_config()
    outputs.append([json.loads(line) for line in open(out, encoding='utf-8')])
  assert [o['input'] for o in outputs[0]] == expected
  assert outputs[0] == outputs[1]
  assert np.isfinite([o['score'] for o in outputs[0]]).all()
