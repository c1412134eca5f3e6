"""The benchmark rows and the settings each gets on CPU, on an accelerator, and in --quick smoke mode.

T1  train step, flan-t5-small shape, packed, vs HF torch eager (and torch.compile on GPU)
T2  Dolly-shaped train (512/256): small on CPU; base and large in bf16 on GPU/TPU
T3  Flan-shaped train (1024/256): large and XL (remat, scanned layers) in bf16 on GPU/TPU only
D1  greedy and sampled decoding, input 512, 128 new tokens, batch 1/8/32, vs HF generate
P1  data pipeline examples/s and tokens/s, packed vs unpacked, real CoT data (benchmarks/pipeline.py)
"""

from __future__ import annotations

ALL = ('T1', 'T2', 'T3', 'D1', 'P1')

# Training data per row: CoT template variants (T2 adds the few-shot ones: longer, Dolly-like prompts with
# context; the real Dolly-15k cannot be read offline).
T1_VARIANTS = ('zs_reasoning',)
T2_VARIANTS = ('zs_answer', 'zs_reasoning', 'fs_answer', 'fs_reasoning')


def _train(row_id, title, model, batch, inputs, targets, variants, hf_impls, warmup, steps, dtype, **extra):
  return dict(id=row_id, kind='train', title=title, model=model, dtype=dtype, batch=batch, inputs=inputs,
              targets=targets, cot_variants=variants, hf_impls=list(hf_impls), warmup=warmup, steps=steps,
              **extra)


def plan(platform: str, quick: bool, suite: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
  """(rows to run, rows skipped with a reason) for a platform ('cpu', 'gpu' or 'tpu')."""
  accelerated = platform in ('gpu', 'tpu')
  hf_train = ['hf_eager', 'hf_compile'] if platform == 'gpu' else ['hf_eager'] if platform == 'cpu' else []
  rows, skipped = [], []
  if quick:
    tiny = dict(dtype='float32', warmup=1, steps=1)
    candidates = {
        'T1': [_train('T1', 'train step (quick: tiny model)', 'tiny', 2, 64, 32, T1_VARIANTS, hf_train, **tiny)],
        'T2': [_train('T2', 'Dolly-shaped train (quick: tiny model)', 'tiny', 2, 64, 32, T2_VARIANTS, hf_train,
                      **tiny)],
        'T3': [_train('T3', 'Flan-shaped train (quick: tiny model)', 'tiny', 2, 128, 32, T2_VARIANTS, hf_train,
                      **tiny)],
        'D1': [dict(id='D1', kind='decode', title='decode (quick: tiny model)', model='tiny', dtype='float32',
                    inputs=32, new_tokens=8, batches=[1, 2], modes=['greedy', 'sample'], warmup=1, steps=1)],
        'P1': [dict(id='P1', kind='pipeline', title='data pipeline (quick)', lengths=[(64, 32)], batch_size=8,
                    batches=5, warmup=5)],  # warm-up touches every task's shuffle buffer
    }
  elif accelerated:
    bf16 = dict(dtype='bfloat16', warmup=3, steps=10)
    candidates = {
        'T1': [_train('T1', 'train step, flan-t5-small shape', 'flan_t5_small', 64, 512, 256, T1_VARIANTS, hf_train,
                      **bf16)],
        'T2': [_train('T2', 'Dolly-shaped train', 'flan_t5_base', 64, 512, 256, T2_VARIANTS, hf_train, **bf16),
               _train('T2', 'Dolly-shaped train', 'flan_t5_large', 32, 512, 256, T2_VARIANTS, hf_train, **bf16)],
        'T3': [_train('T3', 'Flan-shaped train', 'flan_t5_large', 16, 1024, 256, T2_VARIANTS, hf_train, **bf16),
               _train('T3', 'Flan-shaped train (remat)', 'flan_t5_xl', 16, 1024, 256, T2_VARIANTS, hf_train,
                      remat='full', scan_layers=True, **bf16)],
        'D1': [dict(id='D1', kind='decode', title='decode', model='flan_t5_large', dtype='bfloat16', inputs=512,
                    new_tokens=128, batches=[1, 8, 32], modes=['greedy', 'sample'], warmup=1, steps=3)],
        'P1': [dict(id='P1', kind='pipeline', title='data pipeline', lengths=[(512, 256), (1024, 256)],
                    batch_size=32, batches=40, warmup=5)],
    }
  else:
    fp32 = dict(dtype='float32', warmup=1, steps=2)
    candidates = {
        'T1': [_train('T1', 'train step, flan-t5-small shape', 'flan_t5_small', 8, 512, 256, T1_VARIANTS, hf_train,
                      **fp32)],
        'T2': [_train('T2', 'Dolly-shaped train', 'flan_t5_small', 8, 512, 256, T2_VARIANTS, hf_train, **fp32)],
        'T3': [],
        'D1': [dict(id='D1', kind='decode', title='decode', model='flan_t5_small', dtype='float32', inputs=512,
                    new_tokens=128, batches=[1, 8, 32], modes=['greedy', 'sample'], warmup=1, steps=1)],
        'P1': [dict(id='P1', kind='pipeline', title='data pipeline', lengths=[(512, 256), (1024, 256)],
                    batch_size=32, batches=40, warmup=5)],
    }
    skipped.append({'id': 'T3', 'reason': 'accelerator-only row (flan-t5-large/XL at 1024/256); not run on CPU'})
    skipped += [{'id': 'T2', 'reason': f'{m} in bf16: accelerator only'} for m in ('flan_t5_base', 'flan_t5_large')]
    skipped.append({'id': 'T1/T2', 'reason': 'HF torch.compile: GPU only'})
  for row_id in suite:
    if row_id not in candidates:
      raise ValueError(f'unknown suite row {row_id!r} (known: {", ".join(ALL)})')
    rows += candidates[row_id]
  skipped = [s for s in skipped if any(part in suite for part in s['id'].split('/'))]
  if platform == 'tpu':
    skipped.append({'id': 'T*/D1', 'reason': 'HF torch rows: no torch on TPU; flanx rows only'})
  return rows, skipped
