"""Export: `python -m flanx.export --checkpoint_dir=RUN_OR_CHECKPOINT --output_dir=OUT [--gin_file=… --gin.X=Y]`.

Writes a Hugging Face folder (`AutoModelForSeq2SeqLM` / `AutoTokenizer` load it offline): config.json,
generation_config.json, model.safetensors (sharded above --max_shard_size), the tokenizer, README.md (model
card), flanx_export.json and handler.py (Inference Endpoints). Unless --verify=false, the folder is reloaded with
transformers and checked against flanx (flanx/hf_verify.py) before it appears at --output_dir: everything is
staged in a temporary folder beside it and renamed at the end, so a failure leaves nothing behind.

Model config and vocabulary come from the run's config.gin (MODEL_DIR/config.gin, written by the trainer:
`train.model_config`, `train.mixture_or_task_name` → the task's vocabulary), overridable with --gin.X=Y; or,
with --gin_file, from the given gin files alone (model gins; `export_checkpoint.*` bindings work too).
--vocab=PATH.model|byte (with --newline_mode) replaces the task's vocabulary.

Flags: --dtype=float32|bfloat16 (stored weights), --max_shard_size=5GB, --verify=true, --handler=true,
--overwrite=false.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

import gin

from flanx import gin_utils
from flanx.config import T5Config

PyTree = Any

HANDLER_TEMPLATE = pathlib.Path(__file__).resolve().parent.parent / 'scripts' / 'hf_handler.py'
DTYPES = {'float32': 'float32', 'fp32': 'float32', 'bfloat16': 'bfloat16', 'bf16': 'bfloat16'}
_SIZE_UNITS = {'': 1, 'B': 1, 'KB': 10**3, 'MB': 10**6, 'GB': 10**9, 'TB': 10**12, 'KIB': 2**10, 'MIB': 2**20,
               'GIB': 2**30, 'TIB': 2**40}
# Configurables whose bindings describe a run, in the order they are consulted.
_RUN_CONFIGURABLES = ('train', 'evaluate', 'infer')


# ----------------------------------------------------------------------------------------------------------------
# Small parsers.

def parse_size(value: int | float | str) -> int:
  """Bytes from 5e9, '5GB', '500MB', '2GiB' (HF's units: GB = 10**9)."""
  if isinstance(value, (int, float)):
    return int(value)
  match = re.fullmatch(r'\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*', str(value))
  unit = match.group(2).upper() if match else None
  if not match or unit not in _SIZE_UNITS:
    raise ValueError(f'size {value!r}: expected a number of bytes or e.g. 5GB, 500MB, 2GiB')
  return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_bool(text: str) -> bool:
  """true/false, yes/no, 1/0, on/off (flag values)."""
  if text.lower() in ('1', 'true', 'yes', 'on'):
    return True
  if text.lower() in ('0', 'false', 'no', 'off'):
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


# ----------------------------------------------------------------------------------------------------------------
# Reading the run.

def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  return tf.io.gfile


def locate_checkpoint(path: str) -> tuple[str, str, int]:
  """(checkpoint_<step> folder, run folder, step) for a run folder (newest step) or a checkpoint folder."""
  path = path.rstrip('/')
  match = re.fullmatch(r'checkpoint_(\d+)', os.path.basename(path))
  gfile = _gfile()
  if match:
    if not gfile.exists(os.path.join(path, 'params')):
      raise FileNotFoundError(f'{path} is not a flanx checkpoint (no params/ inside)')
    return path, os.path.dirname(path), int(match.group(1))
  if not gfile.isdir(path):
    raise FileNotFoundError(f'{path} does not exist')
  steps = []
  for name in gfile.listdir(path):
    match = re.fullmatch(r'checkpoint_(\d+)/?', name)
    if match and gfile.exists(os.path.join(path, name.rstrip('/'), 'params')):
      steps.append(int(match.group(1)))
  if not steps:
    raise FileNotFoundError(f'no flanx checkpoint (checkpoint_<step>/params) under {path}')
  step = max(steps)
  return os.path.join(path, f'checkpoint_{step}'), path, step


def gin_value(selector: str, default: Any = None) -> Any:
  """The value gin binds to `selector` (references and macros evaluated), or `default` when unbound."""
  try:
    value = gin.query_parameter(selector)
  except (ValueError, KeyError):
    return default
  return copy.deepcopy(value)  # gin evaluates @refs() and %macros on deepcopy


def _run_value(name: str, default: Any = None) -> Any:
  for configurable in _RUN_CONFIGURABLES:
    value = gin_value(f'{configurable}.{name}')
    if value is not None:
      return value
  return default


def _bindings(name: str) -> dict[str, Any]:
  try:
    return gin.get_bindings(name)
  except (ValueError, KeyError):
    return {}


def _describe_binding(selector: str, fallback: str) -> str | None:
  """'@schedules.constant() with learning_rate=0.001'-style text for a bound configurable reference."""
  try:
    ref = gin.query_parameter(selector)
  except (ValueError, KeyError):
    ref = None
  name = ref.selector if isinstance(ref, gin.config.ConfigurableReference) else fallback
  bindings = _bindings(name)
  args = ', '.join(f'{k}={v!r}' for k, v in sorted(bindings.items()))
  label = str(ref) if ref is not None else f'{fallback} (flanx default)'
  return f'{label} with {args}' if args else label


def _learning_rate_text(step: int) -> str | None:
  """The configured schedule and its value at the checkpoint's last step."""
  from flanx import schedules  # pylint: disable=g-import-not-at-top
  text = _describe_binding('train.learning_rate_schedule', 'schedules.constant')
  try:
    schedule = gin_value('train.learning_rate_schedule') or schedules.constant()
    return f'{text}; {float(schedule(max(step - 1, 0))):.4g} at step {step}'
  except Exception:  # pylint: disable=broad-except  (a schedule needing more context: keep the description)
    return text


def run_config(model_config: T5Config | None = None) -> T5Config:
  """The model config: the argument, else what gin binds to train/evaluate/infer.model_config, else T5Config()."""
  return model_config or _run_value('model_config') or T5Config()


def resolve_vocabulary(vocab: str | None, newline_mode: str | None, mixture_or_task_name: str | None,
                       mixture_or_task_module: str | None) -> Any:
  """--vocab (a SentencePiece path or 'byte'), else the inputs vocabulary of the run's task or mixture."""
  from tasks import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if vocab:
    return vocab_lib.get_vocabulary(vocab, newline_mode)
  if not mixture_or_task_name:
    raise ValueError('no vocabulary: the run config names no MIXTURE_OR_TASK_NAME; pass --vocab=PATH.model or '
                     '--vocab=byte')
  import seqio  # pylint: disable=g-import-not-at-top
  from flanx import data  # pylint: disable=g-import-not-at-top
  data.import_task_modules(mixture_or_task_module)
  try:
    task = seqio.get_mixture_or_task(mixture_or_task_name)
  except ValueError as e:
    raise ValueError(f'{mixture_or_task_name!r} is not a registered task or mixture (MIXTURE_OR_TASK_MODULE='
                     f'{mixture_or_task_module!r}); pass --vocab instead') from e
  features = task.output_features
  vocabulary = features['inputs'].vocabulary
  if 'targets' in features and features['targets'].vocabulary != vocabulary:
    raise ValueError(f'{mixture_or_task_name}: inputs and targets use different vocabularies; a Hugging Face '
                     'folder has one tokenizer (pass --vocab to choose)')
  return vocabulary


def _restore_params(checkpoint_path: str, config: T5Config) -> PyTree:
  """Params of a flanx checkpoint, restored onto the host CPU (one copy)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx import checkpoints, model as model_lib  # pylint: disable=g-import-not-at-top
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu),
                          model_lib.abstract_params(config))
  try:
    return checkpoints.restore_params(checkpoint_path, abstract)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{checkpoint_path}: params do not match the model config {config} ({e})') from e


# ----------------------------------------------------------------------------------------------------------------
# Writing.

def _generation_config(max_new_tokens: int) -> dict[str, Any]:
  return {'decoder_start_token_id': 0, 'pad_token_id': 0, 'eos_token_id': 1, 'max_new_tokens': max_new_tokens,
          'do_sample': False, 'num_beams': 1}


def _on_cpu(tree: PyTree) -> PyTree:
  """Leaves as jax arrays on the host CPU, converted one at a time in place (never two copies of the model)."""
  import jax  # pylint: disable=g-import-not-at-top
  cpu = jax.devices('cpu')[0]
  if not isinstance(tree, dict):
    return jax.device_put(tree, cpu)
  for key in list(tree):
    tree[key] = _on_cpu(tree[key])
  return tree


def export_model(load_params: Callable[[], PyTree], config: T5Config, output_dir: str | os.PathLike,
                 vocabulary: Any, *, dtype: str = 'float32', max_shard_bytes: int = 5 * 10**9, verify: bool = True,
                 handler: bool = True, overwrite: bool = False, card_info: Mapping[str, Any] | None = None,
                 feature_lengths: Mapping[str, int] | None = None, log: Callable[[str], None] = print
                 ) -> pathlib.Path:
  """Writes (and verifies) the HF folder for the params `load_params()` returns; returns its path.

  `load_params` is called once; its (dict) tree is moved onto the host CPU leaf by leaf in place and dropped
  after writing, before transformers loads the folder, so host memory never holds two full copies of the model
  (pass a loader that keeps no other reference).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flanx import hf, hf_tokenizer, hf_verify, model_card, model as model_lib  # pylint: disable=g-import-not-at-top
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be float32 or bfloat16, got {dtype!r}')
  dtype = DTYPES[dtype]
  output_dir = pathlib.Path(output_dir).absolute()
  if output_dir.exists() and not output_dir.is_dir():
    raise FileExistsError(f'{output_dir} exists and is not a directory')
  if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
    raise FileExistsError(f'{output_dir} exists and is not empty (pass --overwrite to replace it)')
  try:
    import transformers  # pylint: disable=g-import-not-at-top,unused-import  (tokenizer.json conversion)
    if verify:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError(f'export needs transformers, and torch to verify (pip install flanx[hf]): {e}') from e
  if handler and not HANDLER_TEMPLATE.exists():
    raise FileNotFoundError(f'{HANDLER_TEMPLATE} not found (a flanx source checkout has it); pass --handler=false')
  lengths = dict(feature_lengths or {})
  output_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{output_dir.name}.export-', dir=output_dir.parent))
  try:
    params = _on_cpu(load_params())
    param_count = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    reference = None
    if verify:
      log('Computing flanx reference outputs on the probe batch (CPU, float32).')
      batch = hf_verify.probe_batch(vocabulary, config)
      reference = hf_verify.flanx_reference(params, config, *batch)
    tokenizer_info: dict[str, Any] = {}
    log(f'Writing {dtype} safetensors (shards of at most {max_shard_bytes:,} bytes).')
    folder = hf.write_hf_model(
        staging / 'model', params, config, dtype=dtype, max_shard_bytes=max_shard_bytes,
        add_files=lambda tmp: tokenizer_info.update(
            hf_tokenizer.write_tokenizer(tmp, vocabulary, lengths.get('inputs', 512))))
    del params  # the only full copy; transformers loads the folder next
    (folder / 'generation_config.json').write_text(
        json.dumps(_generation_config(lengths.get('targets', 256)), indent=2) + '\n')
    if handler:
      shutil.copyfile(HANDLER_TEMPLATE, folder / 'handler.py')
    summary = None
    if verify:
      original = None
      if dtype == 'bfloat16':  # flanx with the rounded weights, as stored, for the strict comparison
        original = reference
        stored, _ = hf.read_hf_model(folder)
        reference = hf_verify.flanx_reference(model_lib.to_model_layout(config, stored), config,
                                              reference.encoder_tokens, reference.decoder_tokens)
        del stored
      log('Verifying: reloading with transformers and comparing tokenization, logits and greedy generation.')
      summary = hf_verify.verify_folder(str(folder), vocabulary, config, reference, original)
      log(f"Verified: max |logit diff| {summary['max_logit_diff']:.2e} (tolerance {summary['tolerance']:.1e}).")
    info = {'name': output_dir.name, 'config': config, 'dtype': dtype, 'tokenizer': tokenizer_info,
            'verification': summary, 'param_count': param_count,
            'feature_lengths': lengths or None, **dict(card_info or {})}
    (folder / 'README.md').write_text(model_card.render(info))
    hf.replace_folder(folder, output_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return output_dir


@gin.configurable
def export_checkpoint(*,
                      checkpoint_dir: str = gin.REQUIRED,
                      output_dir: str = gin.REQUIRED,
                      dtype: str = 'float32',
                      max_shard_size: int | str = '5GB',
                      verify: bool = True,
                      vocab: str | None = None,
                      newline_mode: str | None = None,
                      handler: bool = True,
                      overwrite: bool = False,
                      model_config: T5Config | None = None,
                      mixture_or_task_name: str | None = None,
                      mixture_or_task_module: str | None = None,
                      task_feature_lengths: Mapping[str, int] | None = None) -> pathlib.Path:
  """Exports a flanx checkpoint (run folder → newest step, or checkpoint_<step>) as a verified HF folder.

  Unset arguments come from the parsed gin config (the run's config.gin by default, see the module doc).
  """
  from flanx import model_card  # pylint: disable=g-import-not-at-top
  checkpoint_path, run_dir, step = locate_checkpoint(checkpoint_dir)
  config = run_config(model_config)
  name = mixture_or_task_name or _run_value('mixture_or_task_name')
  module = mixture_or_task_module or _run_value('mixture_or_task_module')
  lengths = task_feature_lengths or _run_value('task_feature_lengths')
  vocabulary = resolve_vocabulary(vocab, newline_mode, name, module)
  config_gin = os.path.join(run_dir, 'config.gin')
  gfile = _gfile()
  card_info = {
      'mixture': name,
      'step': step,
      'train_metrics': model_card.last_train_metrics(run_dir),
      'eval_results': model_card.eval_results([run_dir, checkpoint_path]),
      'config_gin': gfile.GFile(config_gin).read() if gfile.exists(config_gin) else None,
  }
  if _bindings('train'):  # the run's own config: describe how it trained (never guessed otherwise)
    card_info.update(base_model=gin_value('train.initial_checkpoint_path') or '', train_steps=gin_value(
        'train.train_steps'), batch_size=gin_value('train.batch_size'), learning_rate=_learning_rate_text(step),
                     optimizer=_describe_binding('train.optimizer', 'adafactor'))
  print(f'Exporting {checkpoint_path} (step {step}) to {output_dir}.', flush=True)
  return export_model(lambda: _restore_params(checkpoint_path, config), config, output_dir, vocabulary,
                      dtype=dtype, max_shard_bytes=parse_size(max_shard_size), verify=verify, handler=handler,
                      overwrite=overwrite, card_info=card_info, feature_lengths=lengths)


# ----------------------------------------------------------------------------------------------------------------
# Command line.

def _flag_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False, add_help=False)
  parser.add_argument('--checkpoint_dir', help='flanx run folder (newest checkpoint) or checkpoint_<step> folder')
  parser.add_argument('--output_dir', help='folder to create (must not exist or be empty, unless --overwrite)')
  parser.add_argument('--dtype', choices=sorted(DTYPES), help='stored weight dtype (default float32)')
  parser.add_argument('--max_shard_size', help='largest safetensors file, e.g. 5GB (default), 500MB')
  parser.add_argument('--verify', type=parse_bool, nargs='?', const=True, help='reload and compare (default true)')
  parser.add_argument('--vocab', help="SentencePiece model path or 'byte' (default: the run task's vocabulary)")
  parser.add_argument('--newline_mode', choices=('lossless', 'dolly', 'none'), help='with --vocab=PATH')
  parser.add_argument('--handler', type=parse_bool, nargs='?', const=True, help='write handler.py (default true)')
  parser.add_argument('--overwrite', type=parse_bool, nargs='?', const=True, help='replace a non-empty output_dir')
  return parser


def parse_gin_unlocked(gin_files: Sequence[str], bindings: Sequence[str], search_path_flags: Sequence[str] = ()
                       ) -> None:
  """gin_utils.parse_gin without finalizing: the run's task module, imported later, may add configurables."""
  paths = gin_utils.search_paths(search_path_flags)
  for path in paths:
    gin.add_config_file_search_path(str(path))
  files = [gin_utils.resolve_gin_file(f, paths) for f in gin_files]
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except (ValueError, IOError, SyntaxError) as e:
    raise gin_utils.GinConfigError(str(e)) from None
  gin_utils._check_macro_overrides(bindings)  # pylint: disable=protected-access


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point (export flags plus t5x-style gin flags)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  flags, rest = _flag_parser().parse_known_args(argv)
  args, gin_files, bindings = gin_utils.parse_args(rest, __doc__.splitlines()[0])
  if gin_files:
    parse_gin_unlocked(gin_files, bindings, args.gin_search_paths)
  else:
    if not flags.checkpoint_dir:
      raise SystemExit('--checkpoint_dir is required (or give --gin_file with export_checkpoint.checkpoint_dir)')
    _, run_dir, _ = locate_checkpoint(flags.checkpoint_dir)
    config_gin = os.path.join(run_dir, 'config.gin')
    if not _gfile().exists(config_gin):
      raise SystemExit(f'{config_gin} not found: pass the model config with --gin_file=models/….gin '
                       '(and --vocab)')
    parse_gin_unlocked([config_gin], bindings, args.gin_search_paths)
  overrides = {k: v for k, v in vars(flags).items() if v is not None}
  path = export_checkpoint(**overrides)
  print(f'Wrote {path}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
