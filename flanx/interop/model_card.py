"""The README.md model card of an exported folder: where the model came from, how it was trained, its metrics."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

from flanx.model.config import T5Config

_TRAIN_KEYS = ('loss', 'loss_per_nonpadding_target_token', 'cross_ent_loss', 'z_loss', 'accuracy', 'learning_rate')


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  return tf.io.gfile


def last_train_metrics(run_dir: str) -> dict[str, Any] | None:
  """The last line of MODEL_DIR/train_metrics.jsonl (None when the file is absent)."""
  path = os.path.join(run_dir, 'train_metrics.jsonl')
  gfile = _gfile()
  if not gfile.exists(path):
    return None
  with gfile.GFile(path) as f:
    lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
  if not lines:
    return None
  number, line = lines[-1]
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{number}: not valid JSON ({e.msg})') from None


def eval_results(folders: Sequence[str]) -> list[dict[str, Any]]:
  """Results written by `python -m flanx.eval` (`<folder>/eval/*.json`) in the run and checkpoint folders."""
  gfile = _gfile()
  results, seen = [], set()
  for folder in folders:
    for path in sorted(gfile.glob(os.path.join(folder, 'eval', '*.json'))):
      if path in seen:
        continue
      seen.add(path)
      with gfile.GFile(path) as f:
        try:
          record = json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}: not valid JSON ({e.msg})') from None
      if not isinstance(record, dict) or not isinstance(record.get('metrics'), dict):
        raise ValueError(f'{path}: expected {{"metrics": {{task: {{metric: value}}}}, ...}}')
      results.append({'file': path, **record})
  return results


def run_timing(run_dir: str) -> dict[str, Any] | None:
  """Where the run's training time went (MODEL_DIR/goodput.json, flanx.training.goodput), None when absent."""
  from flanx.training import goodput  # pylint: disable=g-import-not-at-top
  return goodput.read(run_dir)


def _timing_lines(run: Mapping[str, Any] | None) -> list[str]:
  """The model card's 'Training time' section: wall time by part over all starts of the run."""
  if not run:
    return []
  wall = max(float(run.get('wall_seconds', 0.0)), 1e-9)
  lines = ['', '## Training time', '',
           f"{wall / 3600:.2f} hours of wall time over {run.get('starts', 1)} start(s), "
           f"{float(run.get('device_hours', 0.0)):.2f} device-hours on {run.get('devices', '?')} × "
           f"{run.get('device_kind', '?')}; goodput (device-step time / wall time) {float(run.get('goodput', 0.0)):.1%}.",
           '', '| part | hours | share |', '|---|---|---|']
  for part, seconds in run.get('parts_seconds', {}).items():
    lines.append(f"| {part.replace('_', ' ')} | {float(seconds) / 3600:.3f} | {float(seconds) / wall:.1%} |")
  return lines


def _number(value: Any) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
    return f'{int(value):,}'
  return f'{value:.4g}'


def _table(rows: Sequence[tuple[str, Any]]) -> list[str]:
  lines = ['| | |', '|---|---|']
  lines += [f'| {k} | {_number(v) if not isinstance(v, str) else v} |' for k, v in rows if v is not None]
  return lines


def render(info: Mapping[str, Any]) -> str:
  """Markdown model card from collected facts (missing facts are left out, never invented)."""
  config: T5Config = info['config']
  name = info.get('name', 'flanx model')
  from flanx.interop import card_checkpoints  # pylint: disable=g-import-not-at-top
  lines = ['---', 'library_name: transformers', 'pipeline_tag: text2text-generation',
           'tags:', '- t5', '- text2text-generation', '- flanx', *card_checkpoints.front_matter(info), '---', '',
           f'# {name}', '',
           'A T5-family encoder-decoder trained with flanx (JAX, t5x-compatible) and exported to Hugging Face '
           'format.', '']
  lines += ['## Training', '']
  lines += _table([
      ('Base model (initial checkpoint)', None if info.get('base_model') is None else
       info['base_model'] or 'none (trained from random initialisation)'),
      ('Data (seqio mixture or task)', info.get('mixture')),
      ('Checkpoint step', info.get('step')),
      ('Configured train steps', info.get('train_steps')),
      ('Batch size (sequences)', info.get('batch_size')),
      ('Feature lengths', json.dumps(info['feature_lengths']) if info.get('feature_lengths') else None),
      ('Learning rate', info.get('learning_rate')),
      ('Optimizer', info.get('optimizer')),
      ('Dropout', config.dropout_rate),
      ('Training dtype (activations)', config.dtype),
  ])
  lines += ['', '## Model', '']
  lines += _table([
      ('Architecture', f'T5ForConditionalGeneration ({config.activation}, '
                       f'{"tied" if config.tie_embeddings else "untied"} output embedding)'),
      ('Parameters', info.get('param_count')),
      ('d_model / d_ff / d_kv / heads', f'{config.d_model} / {config.d_ff} / {config.d_kv} / {config.num_heads}'),
      ('Encoder / decoder layers', f'{config.num_encoder_layers} / {config.num_decoder_layers}'),
      ('Vocabulary rows', config.vocab_size),
      ('Exported weights dtype', info.get('dtype')),
  ])
  metrics = info.get('train_metrics')
  if metrics:
    lines += ['', f'## Training metrics (step {metrics.get("step", "?")})', '']
    keys = [k for k in _TRAIN_KEYS if k in metrics] or [k for k in metrics if k != 'step']
    lines += _table([(k, metrics[k]) for k in keys])
  lines += _timing_lines(info.get('run_timing'))
  lines += card_checkpoints.section(info)  # which checkpoint, by which rule; the evaluated ones; the pictures
  evals = info.get('eval_results') or []
  if evals:
    lines += ['', '## Evaluation', '', '| file | split | step | task | metric | value |', '|---|---|---|---|---|---|']
    for record in evals:
      for task, values in record['metrics'].items():
        for metric, value in (values.items() if isinstance(values, dict) else [('value', values)]):
          lines.append(f'| {os.path.basename(record["file"])} | {record.get("split", "")} | '
                       f'{record.get("step", "")} | {task} | {metric} | {_number(value)} |')
  tokenizer = info.get('tokenizer') or {}
  lines += ['', '## Tokenizer', '']
  mode = tokenizer.get('newline_mode')
  lines.append(f'`{tokenizer.get("tokenizer_class", "?")}`, newline mode `{mode}`.')
  if mode == 'lossless':
    ids = ', '.join(f'{json.dumps(c)} → {i}' for c, i in tokenizer.get('newline_token_ids', {}).items())
    lines += ['', f'Newlines, tabs and runs of 2-16 spaces have their own ids ({ids}); `tokenizer.decode` gives '
              'them back as they were (indented code round-trips).']
  elif mode == 'dolly':
    lines += ['', 'The model was trained with newlines written as ` <_LB_> ` and tabs as ` <_T_> `: apply that to '
              'inputs and map the markers back on outputs (handler.py does this).']
  elif mode == 'none':
    lines += ['', 'Newlines and tabs were folded into spaces in training.']
  lines += ['', '## Usage', '', '```python',
            'from transformers import AutoModelForSeq2SeqLM, AutoTokenizer',
            'tokenizer = AutoTokenizer.from_pretrained(PATH)',
            *([] if config.tie_embeddings else [
                '# transformers 5 advises tie_word_embeddings=False here, as for any Flan-T5: config.json says so and '
                'the head loads untied', '# (passing it to from_pretrained would untie the input embeddings too).']),
            'model = AutoModelForSeq2SeqLM.from_pretrained(PATH)',
            'ids = tokenizer(["Answer the question: ..."], return_tensors="pt").input_ids',
            'print(tokenizer.batch_decode(model.generate(ids, max_new_tokens=64), skip_special_tokens=True))',
            '```']
  verification = info.get('verification')
  if verification:
    lines += ['', '## Export verification', '',
              f'Reloaded with transformers and compared with flanx on {verification["probe_rows"]} probe inputs: '
              f'max |logit difference| {verification["max_logit_diff"]:.2e} (tolerance '
              f'{verification["tolerance"]:.1e}, logit scale {verification["logit_scale"]:.3g}); greedy generation '
              f'of {verification["decode_tokens"]} tokens identical'
              + (f' (near-ties: {"; ".join(verification["greedy_ties"])})' if verification.get('greedy_ties') else '')
              + f'; tokenization identical to seqio on {verification["tokenization_probes"]} probe strings.']
    if 'bf16_drift' in verification:
      lines.append(f'bfloat16 weights vs the float32 model: max |logit difference| '
                   f'{verification["bf16_drift"]:.2e} (tolerance {verification["bf16_tolerance"]:.2e}).')
  if info.get('config_gin'):
    lines += ['', '<details><summary>Training config (config.gin)</summary>', '', '```', info['config_gin'].rstrip(),
              '```', '', '</details>']
  return '\n'.join(lines) + '\n'
