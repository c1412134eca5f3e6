"""Input-pipeline throughput: packed vs unpacked seqio batches on the real FLAN CoT data.

Builds the native CoT tasks (tasks.cot) over the shared TSVs with the dev SentencePiece vocabulary
(lossless newlines, and plain SentencePiece for comparison), then for each (inputs, targets)
length pair times seqio.get_dataset with EncDecFeatureConverter(pack=True) and pack=False:
input examples/s, non-padding tokens/s and the non-padding fraction of encoder and decoder rows.
Prints a markdown table; --out writes JSON.

  .venv/bin/python benchmarks/pipeline.py --out /tmp/pipeline.json

`--source flan` measures the Flan 2022 mixture (tasks.flan) instead, over a folder in the Open-Orca/FLAN
layout (`{flan,t0,niv2,cot,dialog}_{zsopt,...}_data/part.N.parquet`) written from the real CoT text
(`--flan_rows` records; few-shot variants get three exemplars in front, as Flan's fs templates do):

  .venv/bin/python benchmarks/pipeline.py --source flan --flan_rows 50000 --lengths 2048:512 --packing packed
"""

import argparse
import json
import os
import pathlib
import platform
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # pylint: disable=g-import-not-at-top
import seqio  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tasks import cot  # pylint: disable=g-import-not-at-top
from tasks import spec as spec_lib  # pylint: disable=g-import-not-at-top
from tasks import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
DATASETS = ('aqua', 'creak', 'ecqa', 'gsm8k', 'sensemaking')
FLAN_SOURCES = {'flan2021': ('flan', 'Flan2021'), 't0': ('t0', 'P3'), 'niv2': ('niv2', 'NIv2'),
                'cot': ('cot', 'CoT'), 'dialog': ('dialog', 'Dialog')}


def register_mixture(cot_dir, vocab_path, variant_names, name='bench_cot',
                     newline_mode='lossless'):
  """Registers the CoT tasks of DATASETS (only `variant_names`) as mixture `name` (returned)."""
  vocabulary = vocab_lib.get_vocabulary(vocab_path, newline_mode)
  variants = [v for v in cot.VARIANTS if v.name in variant_names]
  if not variants:
    raise ValueError(f'no known CoT variant in {variant_names!r}')
  names = []
  for dataset in DATASETS:
    spec = cot.make_spec(dataset, cot_dir, vocabulary=vocabulary, variants=variants,
                         prefix=f'{name}_')
    names += spec_lib.register(spec)
  spec_lib.add_mixture(name, names,
                       default_rate=lambda t: min(t.num_input_examples('train'), cot.CAP))
  return name


def write_flan_fixture(folder, cot_dir, rows, seed=0):
  """Writes `rows` Flan records in the Open-Orca/FLAN layout from the real CoT TSV text; returns the folder.

  Records are spread evenly over the 14 (submixture, template variant) tasks of the Flan 2022 mixture, five
  task names each (one per CoT dataset); fs variants prepend three other examples as exemplars.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  from tasks import flan  # pylint: disable=g-import-not-at-top
  from tasks import records as records_lib  # pylint: disable=g-import-not-at-top
  examples = []
  for dataset in DATASETS:
    got, _ = records_lib.read_records(os.path.join(cot_dir, f'{dataset}_train.tsv'), cot.COLUMNS, fmt='tsv',
                                      columns=cot.COLUMNS)
    examples += [(dataset, r['question'].replace('\\n', '\n'),
                  f"{r['rationale']} So the answer is {r['answer']}.".replace('\\n', '\n')) for r in got]
  rng = np.random.default_rng(seed)
  pairs = [(s.name, v) for s in flan.SUBMIXES for v in s.variants]
  schema = pa.schema([('inputs', pa.string()), ('targets', pa.string()), ('_template_idx', pa.int64()),
                      ('_task_source', pa.string()), ('_task_name', pa.string()), ('_template_type', pa.string())])
  for k, (submix, variant) in enumerate(pairs):
    prefix, source = FLAN_SOURCES[submix]
    out = pathlib.Path(folder) / f"{prefix}_{variant.replace('_', '')}_data"
    out.mkdir(parents=True, exist_ok=True)
    n = rows // len(pairs) + (k < rows % len(pairs))
    picks = rng.integers(len(examples), size=(n, 4))
    table = []
    for i, pick in enumerate(picks):
      dataset, question, answer = examples[pick[0]]
      if variant.startswith('fs'):
        shots = ''.join(f'{examples[j][1]}\n{examples[j][2]}\n\n' for j in pick[1:])
        question = shots + question
      table.append({'inputs': question, 'targets': answer, '_template_idx': i % 10, '_task_source': source,
                    '_task_name': f'{submix}_{dataset}', '_template_type': variant})
    for part in range(2):
      pq.write_table(pa.Table.from_pylist(table[part::2], schema=schema), str(out / f'part.{part}.parquet'))
  return folder


def register_flan_mixture(folder, vocab_path, newline_mode='lossless', name='bench_flan'):
  """Registers the Flan 2022 tasks over `folder` with the given vocabulary; returns the mixture name."""
  from tasks import flan  # pylint: disable=g-import-not-at-top
  vocabulary = vocab_lib.get_vocabulary(vocab_path, newline_mode)
  flan.register_flan2022(pattern=str(folder), vocabulary=vocabulary, prefix=f'{name}_{newline_mode}_')
  return f'{name}_{newline_mode}_flan2022_submix'


def count_batch(batch, pack):
  """(examples, encoder tokens, decoder tokens) of one batch, padding excluded."""
  if pack:
    examples = int(batch['encoder_segment_ids'].max(axis=1).sum())
    enc = int((batch['encoder_segment_ids'] > 0).sum())
    dec = int((batch['decoder_segment_ids'] > 0).sum())
  else:
    examples = batch['encoder_input_tokens'].shape[0]
    enc = int((batch['encoder_input_tokens'] != 0).sum())
    dec = int((batch['decoder_loss_weights'] > 0).sum())
  return examples, enc, dec


def measure(name, lengths, pack, batch_size, batches, warmup, seed):
  """Times `batches` batches after `warmup` ones; returns rates and padding figures."""
  start = time.perf_counter()
  ds = seqio.get_dataset(name, lengths, feature_converter=seqio.EncDecFeatureConverter(pack=pack),
                         dataset_split='train', shuffle=True, seed=seed, num_epochs=None)
  it = ds.batch(batch_size).as_numpy_iterator()
  for _ in range(warmup):
    next(it)
  first = time.perf_counter() - start
  examples = enc = dec = 0
  start = time.perf_counter()
  for _ in range(batches):
    e, n_enc, n_dec = count_batch(next(it), pack)
    examples, enc, dec = examples + e, enc + n_enc, dec + n_dec
  seconds = time.perf_counter() - start
  rows = batches * batch_size
  return {
      'task': name, 'inputs_length': lengths['inputs'], 'targets_length': lengths['targets'],
      'pack': pack, 'batch_size': batch_size, 'batches': batches,
      'seconds': seconds, 'startup_seconds': first,
      'examples_per_second': examples / seconds,
      'tokens_per_second': (enc + dec) / seconds,
      'examples_per_row': examples / rows,
      'non_padding_fraction_inputs': enc / (rows * lengths['inputs']),
      'non_padding_fraction_targets': dec / (rows * lengths['targets']),
  }


def markdown(results):
  lines = ['| task | lengths | packing | examples/s | tokens/s | examples/row | '
           'non-padding inputs | non-padding targets |', '|' + '---|' * 8]
  for r in results:
    lines.append(
        f"| {r['task']} | {r['inputs_length']}/{r['targets_length']} | "
        f"{'packed' if r['pack'] else 'unpacked'} | {r['examples_per_second']:,.0f} | "
        f"{r['tokens_per_second']:,.0f} | {r['examples_per_row']:.2f} | "
        f"{r['non_padding_fraction_inputs']:.3f} | {r['non_padding_fraction_targets']:.3f} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cot_dir', default=str(SHARED / 'flan_cot'))
  parser.add_argument('--vocab', default=str(SHARED / 'vocab' / 'dev_8k.model'))
  parser.add_argument('--lengths', default='512:256,1024:256',
                      help='comma-separated inputs:targets pairs')
  parser.add_argument('--variants', default='zs_reasoning',
                      help='comma-separated CoT variants in the benchmarked mixture '
                           '(zs_answer, zs_reasoning, fs_answer, fs_reasoning)')
  parser.add_argument('--newline_modes', default='lossless,none',
                      help='vocabulary newline modes to compare (lossless, dolly, none)')
  parser.add_argument('--source', choices=('cot', 'flan'), default='cot',
                      help='cot: the CoT TSV tasks; flan: the Flan 2022 mixture over a written Open-Orca folder')
  parser.add_argument('--flan_rows', type=int, default=50_000, help='records in the --source flan fixture')
  parser.add_argument('--packing', choices=('both', 'packed', 'unpacked'), default='both')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', help='write the results as JSON here')
  args = parser.parse_args()
  for path in (args.cot_dir, args.vocab):
    if not os.path.exists(path):
      raise SystemExit(f'{path} not found (the shared data lives beside the repo)')

  variants = args.variants.split(',')
  results = []
  packings = {'both': (True, False), 'packed': (True,), 'unpacked': (False,)}[args.packing]
  flan_dir = None
  if args.source == 'flan':
    import tempfile  # pylint: disable=g-import-not-at-top
    flan_dir = write_flan_fixture(tempfile.mkdtemp(prefix='flan-openorca-'), args.cot_dir, args.flan_rows,
                                  args.seed)
  for mode in args.newline_modes.split(','):
    try:
      if flan_dir:
        mixture = register_flan_mixture(flan_dir, args.vocab, mode)
      else:
        mixture = register_mixture(args.cot_dir, args.vocab, variants, f'bench_cot_{mode}', mode)
    except ValueError as e:
      raise SystemExit(str(e)) from e
    for pair in args.lengths.split(','):
      inputs, targets = (int(x) for x in pair.split(':'))
      for pack in packings:
        r = measure(mixture, {'inputs': inputs, 'targets': targets}, pack, args.batch_size,
                    args.batches, args.warmup, args.seed)
        results.append(r)
        print(f"{mode} {pair} pack={pack}: {r['examples_per_second']:,.0f} examples/s",
              flush=True)
  table = markdown(results)
  print(table)
  if args.out:
    report = {
        'results': results, 'load_average_at_end': os.getloadavg(), 'variants': variants,
        'datasets': DATASETS, 'source': args.source,
        'flan_rows': args.flan_rows if args.source == 'flan' else None,
        'vocab': args.vocab, 'cpu_count': os.cpu_count(), 'machine': platform.machine(),
        'python': platform.python_version(), 'tensorflow': tf.__version__,
        'seqio': seqio.__version__, 'numpy': np.__version__,
    }
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
