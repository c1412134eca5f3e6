"""Inference behind `python -m flanx.infer` (gin-configurable `infer`).

Inputs come from a task/mixture split or a JSONL file of prompts (`{"inputs": …}`, optional `"targets"`, or
records of a task's own format, which get its template: `infer.task`, default the run's task); outputs are
JSONL lines with input, prediction, score and (when present) target, written as
`{name}-{mode}.jsonl-00000-of-00001` in the output folder (t5x's naming).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np

from flanx import gin_config
from flanx.training import data, profiling, run_builder, runtime
from flanx.inference import predict
from flanx.model.config import T5Config
from flanx.inference.inference_model import InferenceModel

_PROMPT_KEYS = ('inputs', 'input', 'prompt')


def read_prompts(path: str, template: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
  """Prompts from a JSONL file (each with its 'line' number), all read and checked before any decoding.

  A line is `{"inputs": …}` (or "input"/"prompt"; optional "targets"/"target"), or a record of a task's own
  format (Dolly's instruction/context/…) when `template()` returns that task's source (tasks.spec.SpecSource):
  its template makes the prompt. A bad line (not UTF-8, malformed or hostile JSON, a lone surrogate, no prompt)
  is a RecordError naming file and line.
  """
  records_lib = gin_config.tasks_module('records')
  records, source = [], None
  for where, line, problem in records_lib.iter_lines(path):
    if problem is None and not line.strip():
      continue
    record, problem = (None, problem) if problem else records_lib.parse_json_line(line)
    if problem:
      raise records_lib.RecordError(f'{where}: {problem[1]}')
    number = int(where.rsplit(':', 1)[1])
    key = next((k for k in _PROMPT_KEYS if isinstance(record, dict) and k in record), None)
    if key is not None and isinstance(record[key], str):
      target = record.get('targets', record.get('target'))
      if target is not None and not isinstance(target, str):
        raise records_lib.RecordError(f'{where}: "targets" is {type(target).__name__}, not a string')
      records.append({'inputs': record[key], 'line': number,
                      **({'targets': target} if target is not None else {})})
      continue
    if key is not None or not isinstance(record, dict) or template is None:
      raise records_lib.RecordError(f'{where}: expected a string field "inputs" (or "input"/"prompt")'
                                    + ('' if key is not None else _TASK_FORMAT_HINT))
    try:
      source = source or template()
      inputs, targets = source.prompt(record)
    except ValueError as e:
      raise records_lib.RecordError(f'{where}: no string field "inputs" (or "input"/"prompt"), and not a '
                                    f'record of the task: {e}') from None
    records.append({'inputs': inputs, 'line': number, **({'targets': targets} if targets is not None else {})})
  if not records:
    raise records_lib.RecordError(f'{path}: no prompts (the file is empty or has only blank lines)')
  return records


_TASK_FORMAT_HINT = ('; for records of a task\'s own format (e.g. Dolly\'s instruction/context) name the task: '
                     '--gin.infer.task=\'"dolly"\'')


def _prompt_template(task: str | None, checkpoint_path: str) -> Callable[[], Any]:
  """What turns a record without "inputs" into a prompt: the template of `task`, else of the task the
  checkpoint's run trained on (its recorded MIXTURE_OR_TASK_NAME), looked up at the first such record."""

  def source():
    spec = gin_config.tasks_module('spec')
    name = task or _recorded_task(checkpoint_path)
    if not name:
      raise ValueError('no task is named (--gin.infer.task=\'"dolly"\') and the checkpoint records none')
    return spec.prompt_source(name)

  return source


def _recorded_task(checkpoint_path: str) -> str | None:
  """The task a flanx run trained on, from its checkpoint's recorded settings (None for other checkpoints)."""
  from flanx.training import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.read_meta(checkpoints.locate(checkpoint_path)[0]).task
  except (FileNotFoundError, checkpoints.CheckpointRestoreError):
    return None


def _encode(vocabulary: Any, texts: Sequence[str], length: int, truncated: list[int] | None = None) -> np.ndarray:
  """Token ids with EOS, truncated (EOS kept) and zero-padded to `length`; appends cut rows' indices to
  `truncated`."""
  rows = np.zeros((len(texts), length), np.int32)
  for i, text in enumerate(texts):
    ids = list(vocabulary.encode(text))
    if len(ids) > length - 1 and truncated is not None:
      truncated.append(i)
    ids = ids[:length - 1] + [vocabulary.eos_id]
    rows[i, :len(ids)] = ids
  return rows


def _truncation_report(source: str, records: Sequence[Mapping[str, Any]], truncated: Sequence[int],
                       length: int) -> str:
  """A warning line naming how many inputs (and which lines or examples) were cut to the input length."""
  where = [f"line {records[i]['line']}" if 'line' in records[i] else f'example {i}' for i in truncated[:10]]
  more = ', …' if len(truncated) > 10 else ''
  return (f'Warning: {source}: {len(truncated)} of {len(records)} inputs are longer than the input length '
          f'({length} tokens with EOS) and were truncated ({", ".join(where)}{more}).')


def _encode_prompts(vocabulary: Any, texts: Sequence[str], max_decode_length: int) -> np.ndarray:
  """Decoder prompts: token ids without EOS (t5x strips it), truncated to max_decode_length - 1, 0-padded."""
  rows = np.zeros((len(texts), max_decode_length), np.int32)
  for i, text in enumerate(texts):
    ids = [t for t in vocabulary.encode(text) if t != vocabulary.eos_id][:max_decode_length - 1]
    rows[i, :len(ids)] = ids
  return rows


def _task_records(name: str, split: str, lengths: Mapping[str, int], use_cached: bool,
                  num_examples: int | None) -> tuple[list[dict[str, str]], Any]:
  import seqio
  task_or_mixture = seqio.get_mixture_or_task(name)
  vocabulary = task_or_mixture.output_features['inputs'].vocabulary
  ds = seqio.get_dataset(name, task_feature_lengths=dict(lengths), dataset_split=split, shuffle=False,
                         num_epochs=1, use_cached=use_cached, feature_converter=seqio.PassThroughFeatureConverter())
  records = []
  for ex in ds.as_numpy_iterator():
    if num_examples is not None and len(records) >= num_examples:
      break
    text = lambda key: (ex[f'{key}_pretokenized'].decode() if f'{key}_pretokenized' in ex
                        else vocabulary.decode(ex[key].tolist()))
    records.append({'inputs': text('inputs'), 'targets': text('targets')})
  return records, vocabulary


@gin.configurable
def infer(*,
          checkpoint_path: str = gin.REQUIRED,
          output_dir: str = gin.REQUIRED,
          batch_size: int = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          model_config: T5Config | None = None,
          peft: str | None = None,
          mixture_or_task_name: str | None = None,
          mixture_or_task_module: str | None = None,
          split: str = 'validation',
          input_file: str | None = None,
          vocabulary: Any = None,
          num_examples: int | None = None,
          use_cached_tasks: bool = False,
          prompt_with_targets: bool = False,
          task: str | None = None,
          profile_batches: tuple[int, ...] | None = None) -> str:
  """Generates predictions for a task split or a prompts file; returns the output file's path.

  Each line has the best decode ('prediction', 'score'); when decode_options give several decodes per input
  (beam search, or sampling with num_decodes > 1) also all of them, best first ('predictions', 'scores').
  prompt_with_targets (t5x's predict_batch_with_aux option): each record's target text is a decoder prompt the
  decode continues; as in t5x, the prediction then starts with it.
  task: for an input_file, the registered task whose template turns lines of its own format (no "inputs") into
  prompts; default mixture_or_task_name, else the task the checkpoint's run trained on. The whole file is read
  and checked before decoding starts, so a bad line stops the run before any work, naming file and line.
  `profile_batches=(start, count[, every])` traces those decode batches into `<output_dir>/plugins/profile`.
  `peft` (the macro PEFT, as the run trained): the PEFT method of the checkpoint (flanx.training.run_builder).
  """
  config = run_builder.model_config(model_config, peft)
  data.import_task_modules(mixture_or_task_module)
  if input_file:
    records = read_prompts(input_file, _prompt_template(task or mixture_or_task_name, checkpoint_path))
    name = os.path.splitext(os.path.basename(input_file))[0]
    if vocabulary is None and mixture_or_task_name:  # the task's (e.g. the run's, from its recorded config)
      import seqio  # pylint: disable=g-import-not-at-top
      vocabulary = seqio.get_mixture_or_task(mixture_or_task_name).output_features['inputs'].vocabulary
    if vocabulary is None:
      raise ValueError('infer.vocabulary must be set when reading prompts from a file '
                       '(e.g. infer.vocabulary = @tasks.vocab.get_vocabulary()), or MIXTURE_OR_TASK_NAME')
  elif mixture_or_task_name:
    records, task_vocab = _task_records(mixture_or_task_name, split, task_feature_lengths, use_cached_tasks,
                                        num_examples)
    vocabulary, name = vocabulary or task_vocab, mixture_or_task_name
  else:
    raise ValueError('set infer.input_file or infer.mixture_or_task_name')
  records = records[:num_examples] if num_examples is not None else records
  options = predict.decode_options()
  model = InferenceModel(checkpoint_path, config, batch_size, **{**options, 'return_all_decodes': True})
  model.profiler = profiling.Profiler(profiling.parse_window(profile_batches, 'infer.profile_batches'), output_dir)
  several = predict.decodes_per_input(options) > 1
  path = os.path.join(output_dir, f"{name}-{options['mode']}.jsonl-00000-of-00001")
  lines, truncated = [], []
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    cut = []
    tokens = _encode(vocabulary, [r['inputs'] for r in chunk], task_feature_lengths['inputs'], cut)
    truncated += [start + i for i in cut]
    prompt = (_encode_prompts(vocabulary, [r.get('targets', '') for r in chunk], options['max_decode_length'])
              if prompt_with_targets else None)
    predictions, scores = model.predict(tokens, start // batch_size, prompt)
    for record, decodes, row_scores in zip(chunk, predict.trim_at_eos(predictions), scores):
      texts = [vocabulary.decode(ids) for ids in decodes]
      line = {'input': record['inputs'], 'prediction': texts[0], 'score': float(row_scores[0])}
      if several:
        line.update(predictions=texts, scores=[float(s) for s in row_scores])
      if 'targets' in record:
        line['target'] = record['targets']
      lines.append(line)
  if runtime.is_first_host():
    import tensorflow as tf
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
      f.write(''.join(json.dumps(line, ensure_ascii=False) + '\n' for line in lines))
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
    if truncated:
      print(_truncation_report(input_file or name, records, truncated, task_feature_lengths['inputs']), flush=True)
    print(f'{name}: {len(lines)} predictions, {len(truncated)} of {len(records)} inputs truncated to '
          f"{task_feature_lengths['inputs']} tokens.", flush=True)
  return path
