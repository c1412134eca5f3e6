"""Writing a verified Hugging Face folder from flanx params, and exporting a flanx checkpoint as one.

The folder (`AutoModelForSeq2SeqLM` / `AutoTokenizer` load it offline): config.json, generation_config.json,
model.safetensors (sharded above max_shard_size), the tokenizer, README.md (model card) and handler.py
(Inference Endpoints). Unless verify=False it is reloaded with transformers and checked against flanx
(hf_verify) before it appears: it is staged beside the output folder and renamed at the end (staging), so a
failure leaves nothing behind (staging also cleans what a killed export left). The output folder may not overlap
the checkpoint or run folder (check_output_dir), and a vocabulary must fit the model's rows and, when it replaces
the run's, have the same ids (check_vocabulary), checked before the params are read or anything is written.
The command line is `python -m flanx.export`.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Callable, Mapping

import gin

from flanx import gin_config
from flanx.interop import staging
from flanx.model.config import T5Config
from flanx.model import peft
from flanx.training import checkpoints, run_builder, steps

PyTree = Any

HANDLER_TEMPLATE = pathlib.Path(__file__).parent / 'endpoint_handler.py'  # copied into the folder as handler.py
DTYPES = {'float32': 'float32', 'fp32': 'float32', 'bfloat16': 'bfloat16', 'bf16': 'bfloat16'}
_SIZE_UNITS = {'': 1, 'B': 1, 'KB': 10**3, 'MB': 10**6, 'GB': 10**9, 'TB': 10**12, 'KIB': 2**10, 'MIB': 2**20,
               'GIB': 2**30, 'TIB': 2**40}


def parse_size(value: int | float | str) -> int:
  """Bytes from 5e9, '5GB', '500MB', '2GiB' (HF's units: GB = 10**9)."""
  if isinstance(value, (int, float)):
    return int(value)
  match = re.fullmatch(r'\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*', str(value))
  unit = match.group(2).upper() if match else None
  if not match or unit not in _SIZE_UNITS:
    raise ValueError(f'size {value!r}: expected a number of bytes or e.g. 5GB, 500MB, 2GiB')
  return int(float(match.group(1)) * _SIZE_UNITS[unit])


def resolve_vocabulary(vocab: str | None, newline_mode: str | None, mixture_or_task_name: str | None,
                       mixture_or_task_module: str | None) -> Any:
  """--vocab (a SentencePiece path or 'byte'), else the inputs vocabulary of the run's task or mixture."""
  vocab_lib = gin_config.tasks_module('vocab')
  if vocab:
    return vocab_lib.get_vocabulary(vocab, newline_mode)
  if not mixture_or_task_name:
    raise ValueError('no vocabulary: the run config names no MIXTURE_OR_TASK_NAME; pass --vocab=PATH.model or '
                     '--vocab=byte')
  import seqio  # pylint: disable=g-import-not-at-top
  from flanx.training import data  # pylint: disable=g-import-not-at-top
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


def vocabulary_facts(vocabulary: Any) -> dict[str, Any]:
  """What fixes a vocabulary's ids: newline mode (or 'byte'), size, extra ids, SentencePiece model (sha256)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  from flanx.interop import hf_tokenizer  # pylint: disable=g-import-not-at-top
  facts = {'newline mode': hf_tokenizer.newline_mode(vocabulary), 'size': int(vocabulary.vocab_size)}
  base = hf_tokenizer.sentencepiece_base(vocabulary)
  if base is not None:
    with tf.io.gfile.GFile(base.sentencepiece_model_file, 'rb') as f:
      facts['SentencePiece model sha256'] = hashlib.sha256(f.read()).hexdigest()[:16]
    facts['extra ids'] = int(base.extra_ids)
  return facts


def check_vocabulary(vocabulary: Any, config: T5Config, recorded: Any = None, recorded_from: str = '') -> None:
  """An error, before anything is written, if `vocabulary` cannot be the model's: more ids than the model has
  rows, or (with `recorded`, the vocabulary the run trained with) different ids than that one."""
  size = int(vocabulary.vocab_size)
  if size > config.vocab_size:
    raise ValueError(f'the vocabulary has {size} ids, the model only {config.vocab_size} rows '
                     '(T5Config.vocab_size): it is not the vocabulary the checkpoint was trained with')
  if recorded is None:
    return
  mine, theirs = vocabulary_facts(vocabulary), vocabulary_facts(recorded)
  differences = [f'{key} {mine.get(key)} vs {theirs.get(key)}' for key in dict.fromkeys([*mine, *theirs])
                 if mine.get(key) != theirs.get(key)]
  if differences:
    raise ValueError(f'--vocab is not the vocabulary the run trained with ({recorded_from}): '
                     f'{"; ".join(differences)}. Omit --vocab to export with the run\'s vocabulary.')


def _learning_rate_text(step: int) -> str | None:
  """The configured schedule and its value at the checkpoint's last step."""
  from flanx.training import schedules  # pylint: disable=g-import-not-at-top
  text = gin_config.describe_binding('train.learning_rate_schedule', 'schedules.constant')
  try:
    schedule = gin_config.gin_value('train.learning_rate_schedule') or schedules.constant()
    return f'{text}; {float(schedule(max(step - 1, 0))):.4g} at step {step}'
  except Exception:  # pylint: disable=broad-except  (a schedule needing more context: keep the description)
    return text


def restore_on_cpu(checkpoint_path: str, config: T5Config) -> PyTree:
  """Params of a flanx checkpoint, restored whole onto the host CPU (one copy), checked against `config`."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  trained, _ = steps.trained_part(config, network.abstract_params(config))  # a PEFT run saved its adapters only
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), trained)
  try:
    return checkpoints.restore_params(checkpoint_path, target)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{checkpoint_path}: params do not match the model config {config} ({e})') from e


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
  from flanx.interop import hf_format, hf_tokenizer, hf_verify, model_card  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be float32 or bfloat16, got {dtype!r}')
  dtype = DTYPES[dtype]
  output_dir = staging.check_target(output_dir, overwrite)
  check_vocabulary(vocabulary, config)
  try:
    import transformers  # pylint: disable=g-import-not-at-top,unused-import  (tokenizer.json conversion)
    if verify:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError(f'export needs transformers, and torch to verify (pip install flanx[hf]): {e}') from e
  lengths = dict(feature_lengths or {})
  with staging.staged_folder(output_dir, overwrite, 'export') as folder:
    params = _on_cpu(load_params())
    param_count = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    reference = None
    if verify:
      log('Computing flanx reference outputs on the probe batch (CPU, float32).')
      batch = hf_verify.probe_batch(vocabulary, config)
      reference = hf_verify.flanx_reference(params, config, *batch)
    tokenizer_info: dict[str, Any] = {}
    log(f'Writing {dtype} safetensors (shards of at most {max_shard_bytes:,} bytes).')
    hf_format.write_hf_files(folder, params, config, dtype=dtype, max_shard_bytes=max_shard_bytes,
                             generation={'max_new_tokens': lengths.get('targets', 256), 'do_sample': False,
                                         'num_beams': 1})
    tokenizer_info.update(hf_tokenizer.write_tokenizer(folder, vocabulary, lengths.get('inputs', 512)))
    del params  # the only full copy; transformers loads the folder next
    if handler:
      (folder / 'handler.py').write_bytes(HANDLER_TEMPLATE.read_bytes())
    summary = None
    if verify:
      original = None
      if dtype == 'bfloat16':  # flanx with the rounded weights, as stored, for the strict comparison
        original = reference
        stored, _ = hf_format.read_hf_model(folder)
        reference = hf_verify.flanx_reference(network.to_model_layout(config, stored), config,
                                              reference.encoder_tokens, reference.decoder_tokens)
        del stored
      log('Verifying: reloading with transformers and comparing tokenization, logits and greedy generation.')
      summary = hf_verify.verify_folder(str(folder), vocabulary, config, reference, original)
      log(f"Verified: max |logit diff| {summary['max_logit_diff']:.2e} (tolerance {summary['tolerance']:.1e}).")
    info = {'name': output_dir.name, 'config': config, 'dtype': dtype, 'tokenizer': tokenizer_info,
            'verification': summary, 'param_count': param_count,
            'feature_lengths': lengths or None, **dict(card_info or {})}
    if callable(info.get('pictures')):  # the run's pictures, drawn into the folder for the card to embed
      info['pictures'] = info['pictures'](folder)
    (folder / 'README.md').write_text(model_card.render(info))
  return output_dir



def check_output_dir(output_dir: str | os.PathLike, checkpoint_path: str, run_dir: str) -> None:
  """An error if the output folder overlaps what is exported (the checkpoint or run folder: equal, inside, or a
  parent), lies inside any run folder (a trainer prunes and replaces what is there), or is a link."""
  from flanx.training import run_folder  # pylint: disable=g-import-not-at-top
  staging.check_outside(output_dir, checkpoint_path, 'checkpoint folder')
  staging.check_outside(output_dir, run_dir, 'run folder')
  output_dir = str(output_dir)
  if '://' in output_dir:
    return
  enclosing = run_folder.enclosing_run_folder(output_dir)
  if enclosing is not None:
    raise run_folder.OutsideRunFolderError(
        f'output folder {output_dir} is inside the run folder {enclosing}: a trainer there may prune or replace it '
        '(checkpoint_<step>, data_state/, damaged/); choose an output folder outside any run folder')
  if os.path.islink(output_dir):
    raise run_folder.OutsideRunFolderError(f'output folder {output_dir} is a symbolic link (to '
                                           f'{os.path.realpath(output_dir)}): give the folder itself')


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
                      task_feature_lengths: Mapping[str, int] | None = None,
                      adapter_only: bool = False,
                      merge: bool = False,
                      selection: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Exports a flanx checkpoint (run folder → newest step, or checkpoint_<step>) as a verified HF folder.

  Unset arguments come from the parsed gin config (the run's config.gin by default, see the module doc).
  A PEFT run exports its adapter as a peft folder (`adapter_only`; the base is written beside it as a verified HF
  folder when it is not one already), or, for a method that merges (LoRA, (IA)³), the base with it folded in
  (`merge`); prompt and prefix tuning have only `adapter_only`.
  While the run's trainer is live, the checkpoint read is pinned against its pruning (checkpoint_pins).
  """
  arguments = dict(locals())
  from flanx.training import checkpoint_pins  # pylint: disable=g-import-not-at-top
  with checkpoint_pins.reading(arguments.pop('checkpoint_dir')) as checkpoint_path:
    return _export_checkpoint(checkpoint_path, **arguments)


def _export_checkpoint(checkpoint_dir: str, *, output_dir, dtype, max_shard_size, verify, vocab, newline_mode,
                       handler, overwrite, model_config, mixture_or_task_name, mixture_or_task_module,
                       task_feature_lengths, adapter_only, merge, selection) -> pathlib.Path:
  from flanx.interop import model_card  # pylint: disable=g-import-not-at-top
  checkpoint_path, run_dir, step = checkpoints.locate(checkpoint_dir)
  check_output_dir(output_dir, checkpoint_path, run_dir)
  config = run_builder.bound_model_config(model_config)  # with the PEFT method the run's config binds
  peft.check_export_mode(config, adapter_only, merge, checkpoint_dir)
  name = mixture_or_task_name or gin_config.run_value('mixture_or_task_name')
  module = mixture_or_task_module or gin_config.run_value('mixture_or_task_module')
  comparable = True  # whether --vocab can be compared with the run's task vocabulary
  if not mixture_or_task_module:  # from the run's config: a recorded config may not make export import code
    from flanx.training import recorded_config  # pylint: disable=g-import-not-at-top
    try:
      recorded_config.check_task_module(module)
    except recorded_config.RecordedConfigError as e:
      if not vocab:
        raise
      print(f'Warning: --vocab not compared with the run\'s vocabulary ({e})', flush=True)
      comparable = False
  lengths = task_feature_lengths or gin_config.run_value('task_feature_lengths')
  vocabulary = resolve_vocabulary(vocab, newline_mode, name, module)
  recorded = None
  if vocab and name and comparable:  # --vocab replaces the run's: it must have the same ids
    try:
      recorded = resolve_vocabulary(None, None, name, module)
    except ValueError as e:
      print(f'Warning: --vocab not compared with the run\'s vocabulary ({e})', flush=True)
  check_vocabulary(vocabulary, config, recorded, f'the vocabulary of {name}')
  config_gin = os.path.join(run_dir, 'config.gin')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://)
  gfile = tf.io.gfile
  card_info = {
      'mixture': name,
      'step': step,
      'train_metrics': model_card.last_train_metrics(run_dir),
      'eval_results': model_card.eval_results([run_dir, checkpoint_path]),
      'run_timing': model_card.run_timing(run_dir),
      'config_gin': gfile.GFile(config_gin).read() if gfile.exists(config_gin) else None,
      **_selection_card(run_dir, step, selection),
  }
  if gin_config.configurable_bindings('train'):  # the run's own config: describe how it trained (never guessed otherwise)
    card_info.update(base_model=gin_config.gin_value('train.initial_checkpoint_path') or '', train_steps=gin_config.gin_value(
        'train.train_steps'), batch_size=gin_config.gin_value('train.batch_size'), learning_rate=_learning_rate_text(step),
                     optimizer=gin_config.describe_binding('train.optimizer', 'adafactor'))
  print(f'Exporting {checkpoint_path} (step {step}) to {output_dir}.', flush=True)
  if adapter_only or merge:  # a PEFT run (check_export_mode): its trained params on its frozen base
    params = restore_peft_on_cpu(checkpoint_path, config)
    if adapter_only:
      return export_adapter(params, config, output_dir, vocabulary, checkpoints.read_meta(checkpoint_path).base,
                            verify=verify, overwrite=overwrite, feature_lengths=lengths, handler=handler)
    holder = {'params': peft.method(config).merge(params)}
    del params
    return export_model(lambda: holder.pop('params'), peft.base_config(config), output_dir, vocabulary,
                        dtype=dtype, max_shard_bytes=parse_size(max_shard_size), verify=verify, handler=handler,
                        overwrite=overwrite, card_info=card_info, feature_lengths=lengths)
  return export_model(lambda: restore_on_cpu(checkpoint_path, config), config, output_dir, vocabulary,
                      dtype=dtype, max_shard_bytes=parse_size(max_shard_size), verify=verify, handler=handler,
                      overwrite=overwrite, card_info=card_info, feature_lengths=lengths)


def _selection_card(run_dir: str, step: int, selection: Mapping[str, Any] | None) -> dict[str, Any]:
  """Card facts on how the exported checkpoint was chosen, the run's evaluated checkpoints and its pictures."""
  from flanx.inference import checkpoint_table  # pylint: disable=g-import-not-at-top
  from flanx.interop import curves  # pylint: disable=g-import-not-at-top
  table = checkpoint_table.collect(run_dir)
  if selection is None and step in table and table[step]['metrics']:  # no rule: still report what is known
    selection = {'step': step, 'rule': None, 'metrics': table[step]['metrics']}
  metric = ((selection or {}).get('policy') or {}).get('metric') or (selection or {}).get('metric')

  def pictures(folder) -> list[str]:
    rule = (selection or {}).get('rule')
    written = curves.write_pictures(run_dir, str(folder), metric, step, rule)
    try:  # the run folder gets them too (it may be read-only: the export does not depend on it)
      curves.write_pictures(run_dir, None, metric, step, rule)
    except Exception as e:  # pylint: disable=broad-except
      print(f'Warning: could not write the pictures into {run_dir}: {type(e).__name__}: {e}', flush=True)
    return [os.path.basename(p) for p in written]

  return {'selection': selection, 'checkpoint_table': table, 'pictures': pictures}



def restore_peft_on_cpu(checkpoint_path: str, config: T5Config) -> PyTree:
  """A PEFT checkpoint's whole model on the host CPU: its trained params on the frozen base its metadata names."""
  import jax  # pylint: disable=g-import-not-at-top
  from flanx.model import network  # pylint: disable=g-import-not-at-top
  from flanx.model.peft import frozen_base  # pylint: disable=g-import-not-at-top
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  trained, base = (jax.tree.map(lambda _: cpu, tree) for tree in peft.split_trainable(network.abstract_params(config)))
  try:
    return frozen_base.load_model_params(checkpoint_path, config, trained, base)
  except (KeyError, TypeError) as e:
    raise ValueError(f'{checkpoint_path}: params do not match the model config {config} ({e})') from e


def export_adapter(params: PyTree, config: T5Config, output_dir: str | os.PathLike, vocabulary: Any,
                   base_source: str | None, *, verify: bool = True, overwrite: bool = False,
                   feature_lengths: Mapping[str, int] | None = None, log: Callable[[str], None] = print,
                   handler: bool = True) -> pathlib.Path:
  """Writes a PEFT folder (LoRA or prompt-tuning adapter + tokenizer) for a PEFT model's `params`, verified
  through `peft`.

  `base_model_name_or_path` is `base_source` when that is a Hugging Face folder; otherwise the base is exported
  (verified) into OUT/base and the adapter points there.
  """
  from flanx.interop import hf_tokenizer, hf_verify, peft_adapter  # pylint: disable=g-import-not-at-top
  lengths = dict(feature_lengths or {})
  output_dir = staging.check_target(output_dir, overwrite)
  base_params = peft.split_trainable(params)[1]
  with staging.staged_folder(output_dir, overwrite, 'export') as folder:
    if base_source and os.path.exists(os.path.join(base_source, 'config.json')):
      base_folder = final_base = os.path.abspath(base_source)
    else:
      log(f'The base ({base_source or "random initialisation"}) is not a Hugging Face folder: exporting it to '
          f'{output_dir / "base"}.')
      export_model(lambda: dict(base_params), peft.base_config(config), folder / 'base', vocabulary, verify=verify,
                   handler=False, feature_lengths=lengths, card_info={'base_model': base_source or ''}, log=log)
      base_folder, final_base = str(folder / 'base'), str(output_dir / 'base')
    peft_adapter.write_adapter(folder, params, config, final_base)
    hf_tokenizer.write_tokenizer(folder, vocabulary, lengths.get('inputs', 512))
    if handler:  # serves base + adapter (endpoint_handler.load_model)
      (folder / 'handler.py').write_bytes(HANDLER_TEMPLATE.read_bytes())
    if verify:
      log('Verifying the adapter through peft against flanx (logits and greedy generation).')
      reference = peft_adapter.flanx_reference(params, config, *hf_verify.probe_batch(vocabulary, config))
      summary = peft_adapter.verify_adapter(str(folder), base_folder, reference)
      log(f"Verified: max |logit diff| {summary['max_logit_diff']:.2e} (tolerance {summary['tolerance']:.1e}).")
  return output_dir
