"""Turns raw timings into the reported numbers (tokens/s, non-padding tokens/s, MFU, ratios) and markdown.

Every derived number is computed here from a row's own fields, so results.json can be re-checked by hand:
  tokens/s            = batch * length / median step time, encoder and decoder slots counted separately
  non-padding tok/s   = real (non-padding) encoder + decoder tokens per step / step time
  model TFLOP/s       = batch * flanx.model.flops.train_flops(config, inputs, targets) / step time  (training)
                        batch * flanx.model.flops.forward_flops(config, inputs, new_tokens) / time  (decoding)
  MFU                 = model TFLOP/s / (devices * bf16 peak of the device kind); useful MFU = MFU * non-padding
  ratio               = flanx value / Hugging Face value, measured in the same run on the same machine
"""

from __future__ import annotations

FLOPS_FORMULA = (
    'flanx.model.flops: matmul FLOPs only (2 per multiply-add), per sequence pair of input length Li and target '
    'length Lt: encoder layers Li*(4*d*hk + M) + 2*Li^2*hk; decoder layers Lt*(4*d*hk + M) + Lt^2*hk (causal '
    'half) + cross-attention Lt*2*d*hk + Li*2*d*hk + 2*Lt*Li*hk; head Lt*d*V; where hk = heads*d_kv and '
    'M = 3*d*d_ff (gated) or 2*d*d_ff. Training = 3 x forward (no remat recompute counted). Padded slots '
    'count (MFU); "useful MFU" scales by the non-padding fraction.')


def train_metrics(row: dict, raw: dict, stats: dict, flops_per_seq: float, peak_flops: float | None) -> dict:
  """Throughput numbers of one training side from its median step time and its batches' padding stats."""
  step = raw['step_time_s']
  batch, inputs, targets = row['batch'], row['inputs'], row['targets']
  steps_in_stats = stats['steps']
  real_enc = stats['encoder_tokens'] / steps_in_stats
  real_dec = stats['decoder_tokens'] / steps_in_stats
  out = {
      'step_time_s': step,
      'encoder_tokens_per_s': batch * inputs / step,
      'decoder_tokens_per_s': batch * targets / step,
      'tokens_per_s': batch * (inputs + targets) / step,
      'nonpad_encoder_tokens_per_s': real_enc / step,
      'nonpad_decoder_tokens_per_s': real_dec / step,
      'nonpad_tokens_per_s': (real_enc + real_dec) / step,
      'examples_per_s': stats['examples'] / steps_in_stats / step,
      'non_padding_fraction_inputs': stats['non_padding_fraction_inputs'],
      'non_padding_fraction_targets': stats['non_padding_fraction_targets'],
      'non_padding_fraction': stats['non_padding_fraction'],
      'model_flops_per_step': batch * flops_per_seq,
  }
  out.update(_mfu(out['model_flops_per_step'], step, raw, peak_flops, stats['non_padding_fraction']))
  return out


def decode_metrics(case: dict, row: dict, raw: dict, flops_per_seq: float, peak_flops: float | None) -> dict:
  """Throughput numbers of one (mode, batch) decoding case; tokens/s = generated tokens/s."""
  step, batch = case['step_time_s'], case['batch']
  out = {
      'step_time_s': step,
      'encoder_tokens_per_s': batch * row['inputs'] / step,
      'decoder_tokens_per_s': batch * row['new_tokens'] / step,
      'tokens_per_s': batch * row['new_tokens'] / step,
      'nonpad_tokens_per_s': batch * row['new_tokens'] / step,  # no padding: full inputs, forced length
      'non_padding_fraction': 1.0,
      'model_flops_per_step': batch * flops_per_seq,
  }
  out.update(_mfu(out['model_flops_per_step'], step, raw, peak_flops, 1.0))
  return out


def _mfu(flops: float, step: float, raw: dict, peak_flops: float | None, non_padding: float) -> dict:
  out = {'model_tflops_per_s': flops / step / 1e12, 'mfu': None, 'useful_mfu': None}
  if peak_flops:
    devices = raw.get('device', {}).get('device_count', 1)
    out['mfu'] = flops / step / (devices * peak_flops)
    out['useful_mfu'] = out['mfu'] * non_padding
  return out


def add_ratios(rows: list[dict]) -> None:
  """Gives every flanx row `ratio_vs[hf impl] = flanx / HF` for tokens/s and non-padding tokens/s."""
  groups: dict = {}
  for r in rows:
    if r.get('error') or r['kind'] == 'pipeline':
      continue
    groups.setdefault(r['group'], []).append(r)
  for members in groups.values():
    flanx = [r for r in members if r['impl'] == 'flanx']
    for f in flanx:
      f['ratio_vs'] = {h['impl']: {'tokens_per_s': f['tokens_per_s'] / h['tokens_per_s'],
                                   'nonpad_tokens_per_s': f['nonpad_tokens_per_s'] / h['nonpad_tokens_per_s']}
                       for h in members if h['impl'] != 'flanx'}


def _num(x, fmt='{:,.0f}'):
  return '–' if x is None else fmt.format(x)


def _mem(x):
  return '–' if x is None else f'{x / 2**30:.2f} GiB'


def _ratio(r):
  if r['impl'] != 'flanx':
    return 'baseline'
  if not r.get('ratio_vs'):
    return '–'
  return '; '.join(f"{k}: {v['tokens_per_s']:.2f}× · {v['nonpad_tokens_per_s']:.2f}×"
                   for k, v in r['ratio_vs'].items())


def _mfu_cell(r):
  if r.get('mfu') is None:
    return f"{r['model_tflops_per_s']:.3f} TFLOP/s"
  return f"{r['mfu'] * 100:.1f}% ({r['useful_mfu'] * 100:.1f}%)"


def markdown(result: dict) -> str:
  """results.md: header (device, date, commit, load), the three tables, skipped rows and the FLOPs formula."""
  dev = result['device']
  lines = [
      f"# flanx benchmark results ({'quick smoke run' if result['quick'] else 'full'})", '',
      f"- device: {dev['platform']} · {dev['device_kind']} × {dev['device_count']} "
      f"(host: {result['host']['cpu_count']} CPU cores, {result['host']['processor']}"
      f"{', ' + result['host']['cpu'].get('Model name', '') if result['host'].get('cpu') else ''})",
      *([f"- CPU flags (kernel choice): {' '.join(result['host']['cpu']['kernel_flags'])}"]
        if result['host'].get('cpu', {}).get('kernel_flags') else []),
      f"- date: {result['date']} · commit: {result['commit']}",
      f"- load average (1/5/15 min) at start: {result['load_average']['start']}, at end: "
      f"{result['load_average']['end']}",
      f"- peak used for MFU: {_num(result['peak_tflops'], '{:g} TFLOP/s')} per device",
      f"- command: `{result['command']}`", '']
  train = [r for r in result['rows'] if r['kind'] == 'train']
  if train:
    lines += ['## Training step (full jitted step incl. optimizer; HF: forward+backward+Adafactor)', '',
              '| row | impl | model | dtype | batch | in/tgt | data | s/step | enc tok/s | dec tok/s | tokens/s | '
              'non-pad tok/s | non-pad in/tgt | MFU (useful) or TFLOP/s | peak mem | flanx/HF tok/s · non-pad |',
              '|' + '---|' * 16]
    for r in train:
      if r.get('error'):
        lines.append(f"| {r['id']} | {r['impl']} | {r['model']} | {r['dtype']} | {r['batch']} | "
                     f"{r['inputs']}/{r['targets']} | | failed: {r['error'][:80]} |" + ' |' * 8)
        continue
      lines.append(
          f"| {r['id']} | {r['impl']} | {r['model']} | {r['dtype']} | {r['batch']} | {r['inputs']}/{r['targets']} | "
          f"{r['data']} | {r['step_time_s']:.3f} | {_num(r['encoder_tokens_per_s'])} | "
          f"{_num(r['decoder_tokens_per_s'])} | {_num(r['tokens_per_s'])} | {_num(r['nonpad_tokens_per_s'])} | "
          f"{r['non_padding_fraction_inputs']:.2f}/{r['non_padding_fraction_targets']:.2f} | {_mfu_cell(r)} | "
          f"{_mem(r['peak_memory_bytes'])} | {_ratio(r)} |")
    lines.append('')
  decode = [r for r in result['rows'] if r['kind'] == 'decode']
  if decode:
    lines += ['## Decoding (encode + forced-length generation)', '',
              '| row | impl | model | dtype | mode | batch | input | new tokens | s/call | enc tok/s | '
              'generated tok/s | MFU or TFLOP/s | peak mem | flanx/HF tok/s |', '|' + '---|' * 14]
    for r in decode:
      if r.get('error'):
        lines.append(f"| {r['id']} | {r['impl']} | {r['model']} | | | | | | failed: {r['error'][:80]} |" + ' |' * 5)
        continue
      ratio = 'baseline' if r['impl'] != 'flanx' else '; '.join(
          f"{v['tokens_per_s']:.2f}×" for v in r.get('ratio_vs', {}).values()) or '–'
      lines.append(
          f"| {r['id']} | {r['impl']} | {r['model']} | {r['dtype']} | {r['mode']} | {r['batch']} | {r['inputs']} | "
          f"{r['new_tokens']} | {r['step_time_s']:.3f} | {_num(r['encoder_tokens_per_s'])} | "
          f"{_num(r['decoder_tokens_per_s'], '{:,.1f}')} | {_mfu_cell(r)} | {_mem(r['peak_memory_bytes'])} | {ratio} |")
    lines.append('')
  pipe = [r for r in result['rows'] if r['kind'] == 'pipeline']
  if pipe:
    lines += ['## Data pipeline (seqio, real CoT data, dev vocabulary; host CPU)', '',
              '| row | in/tgt | layout | batch | examples/s | slot tokens/s | non-pad tokens/s | examples/row | '
              'non-pad in | non-pad tgt | packed/unpacked examples/s |', '|' + '---|' * 11]
    for r in pipe:
      if r.get('error'):
        lines.append(f"| {r['id']} | | failed: {r['error'][:80]} |" + ' |' * 8)
        continue
      lines.append(
          f"| {r['id']} | {r['inputs']}/{r['targets']} | {'packed' if r['pack'] else 'unpacked'} | {r['batch']} | "
          f"{_num(r['examples_per_s'])} | {_num(r['tokens_per_s'])} | {_num(r['nonpad_tokens_per_s'])} | "
          f"{r['examples_per_row']:.2f} | {r['non_padding_fraction_inputs']:.3f} | "
          f"{r['non_padding_fraction_targets']:.3f} | {_num(r.get('packed_over_unpacked'), '{:.2f}×')} |")
    lines.append('')
  if result['skipped']:
    lines += ['## Not run here', ''] + [f"- {s['id']}: {s['reason']}" for s in result['skipped']] + ['']
  lines += ['## Method', '', f"- FLOPs: {FLOPS_FORMULA}"] + [f'- {n}' for n in result['notes']] + ['']
  return '\n'.join(lines)
