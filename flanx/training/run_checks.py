"""Checks a training run makes before any work: argument types and ranges, the batch against the mesh, the task
name, and the new run's settings against those saved with the run folder's newest checkpoint."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Mapping

from flanx.model import peft


class RunConfigError(ValueError):
  """The run's settings are invalid, or disagree with the checkpoints already in MODEL_DIR."""


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(v: Any) -> bool:
  return _is_int(v) and v > 0


def non_negative_int(v: Any) -> bool:
  return _is_int(v) and v >= 0


def any_int(v: Any) -> bool:
  return _is_int(v)


def positive_number(v: Any) -> bool:
  return _is_number(v) and v > 0


def non_negative_number(v: Any) -> bool:
  return _is_number(v) and v >= 0


def fraction(v: Any) -> bool:
  """A number in [0, 1)."""
  return _is_number(v) and 0 <= v < 1


def unit_interval(v: Any) -> bool:
  """A number in [0, 1]."""
  return _is_number(v) and 0 <= v <= 1


def boolean(v: Any) -> bool:
  return isinstance(v, bool)


def non_empty_str(v: Any) -> bool:
  return isinstance(v, str) and bool(v.strip())


def optional_str(v: Any) -> bool:
  return v is None or non_empty_str(v)


def feature_lengths(v: Any) -> bool:
  """{'inputs': n, 'targets': m} with positive integer lengths."""
  return (isinstance(v, Mapping) and {'inputs', 'targets'} <= set(v) and all(isinstance(k, str) for k in v)
          and all(positive_int(n) for n in v.values()))


def optional_positive_int(v: Any) -> bool:
  return v is None or positive_int(v)


# What each train() argument must be, in words for the error message.
TRAIN_ARG_RULES: dict[str, tuple[Any, str]] = {
    'model_dir': (non_empty_str, 'a folder path or gs:// URL'),
    'mixture_or_task_name': (non_empty_str, 'a registered seqio task or mixture name'),
    'task_feature_lengths': (feature_lengths, "a dict of positive integer lengths, e.g. {'inputs': 512, 'targets': 256}"),
    'batch_size': (positive_int, 'a positive integer'),
    'train_steps': (positive_int, 'a positive integer'),
    'relative_steps': (optional_positive_int, 'None or a positive integer'),
    'restore_optimizer_state': (boolean, 'True or False'),
    'checkpoint_period': (positive_int, 'a positive integer'),
    'keep_checkpoints': (optional_positive_int, 'None or a positive integer'),
    'eval_period': (non_negative_int, 'an integer >= 0 (0: no evaluation during training)'),
    'eval_batches': (optional_positive_int, 'None or a positive integer'),
    'inference_eval': (boolean, 'True or False'),
    'num_microbatches': (positive_int, 'a positive integer'),
    'seed': (any_int, 'an integer'),
    'data_seed': (any_int, 'an integer'),
    'log_every': (positive_int, 'a positive integer'),
    'truncation_examples': (non_negative_int, 'an integer >= 0 (0: no truncation report at the start)'),
    'z_loss': (non_negative_number, 'a number >= 0'),
    'label_smoothing': (fraction, 'a number in [0, 1)'),
    'pack': (boolean, 'True or False'),
    'shuffle': (boolean, 'True or False'),
}


def check_args(values: Mapping[str, Any], rules: Mapping[str, tuple[Any, str]], configurable: str = 'train') -> None:
  """Raises RunConfigError naming the first argument (and the gin macro it came from) that breaks its rule."""
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  for name, (ok, expected) in rules.items():
    if name in values and not ok(values[name]):
      key = gin_config.binding_source(configurable, name)
      raise RunConfigError(f'{key} = {values[name]!r}: expected {expected}')


def check_keep_best(values: Mapping[str, Any]):
  """train.keep_best as a KeepBest (None when unset); it needs in-training evals and replaces keep_checkpoints."""
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  from flanx.training import keep_best  # pylint: disable=g-import-not-at-top
  key = gin_config.binding_source('train', 'keep_best')
  try:
    policy = keep_best.from_setting(values.get('keep_best'))
  except ValueError as e:
    raise RunConfigError(f'{key}: {e}') from None
  if policy is None:
    return None
  if values.get('keep_checkpoints') is not None:
    raise RunConfigError(f'{key} is set and so is {gin_config.binding_source("train", "keep_checkpoints")} = '
                         f'{values["keep_checkpoints"]}: keep_best decides which checkpoints stay (the best '
                         f'{policy.keep} and the newest); leave keep_checkpoints = None')
  if not values.get('eval_period'):
    raise RunConfigError(f'{key} ranks checkpoints by the in-training eval: set EVAL_PERIOD > 0 (a divisor of '
                         'CHECKPOINT_PERIOD, so that every checkpoint has metrics)')
  generation = [m for m in policy.metrics if m.startswith('inference_eval/')]
  if generation and not values.get('inference_eval', True):
    raise RunConfigError(f'{key} monitors {generation[0]}, a generation metric, but train.inference_eval = False')
  return policy


def check_batch_fits(batch_size: int, num_microbatches: int, data_parallel: int, process_count: int) -> None:
  """The global batch must split evenly over hosts, microbatches and the mesh's 'data' axis."""
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  key = gin_config.binding_source('train', 'batch_size')
  for count, what in ((process_count, f'the {process_count} processes (hosts)'),
                      (num_microbatches, f'num_microbatches={num_microbatches}'),
                      (num_microbatches * data_parallel,
                       f'num_microbatches x the mesh\'s data-parallel size ({num_microbatches} x {data_parallel})')):
    if batch_size % count:
      near = max(count, round(batch_size / count) * count)
      raise RunConfigError(f'{key} = {batch_size} is not divisible by {what}; use a multiple of {count} '
                           f'(e.g. {near}), or change make_mesh.data / num_microbatches')


def check_task_name(name: str) -> None:
  """An unknown seqio task/mixture name fails here with the closest registered names."""
  import seqio  # pylint: disable=g-import-not-at-top
  known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  if name in known:
    return
  from flanx import gin_config  # pylint: disable=g-import-not-at-top
  key = gin_config.binding_source('train', 'mixture_or_task_name')
  close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
  hint = f'; did you mean {" or ".join(close)}?' if close else (
      '; is MIXTURE_OR_TASK_MODULE set to the module that registers it?')
  raise RunConfigError(f'{key} = {name!r}: no seqio task or mixture of that name is registered{hint}')


def run_signature(model_config: Any, batch_size: int, task_feature_lengths: Mapping[str, int],
                  mixture_or_task_name: str, pack: bool) -> dict[str, Any]:
  """The settings a checkpoint can only be resumed with: the model's shapes and the data's layout."""
  out = {f'T5Config.{k}': v for k, v in dataclasses.asdict(model_config).items()}
  out.update({'BATCH_SIZE': batch_size, 'TASK_FEATURE_LENGTHS': dict(sorted(task_feature_lengths.items())),
              'MIXTURE_OR_TASK_NAME': mixture_or_task_name, 'train.pack': pack})
  return out


# Settings that decide the arrays' shapes/structure: a checkpoint cannot be restored under other values.
_MODEL_KEYS = ('T5Config.vocab_size', 'T5Config.d_model', 'T5Config.d_kv', 'T5Config.num_heads', 'T5Config.d_ff',
               'T5Config.num_encoder_layers', 'T5Config.num_decoder_layers', 'T5Config.activation',
               'T5Config.tie_embeddings', 'T5Config.relpos_buckets', 'T5Config.scan_layers')
# Settings the saved data position depends on: restorable only without it (restore_data=False).
_DATA_KEYS = ('BATCH_SIZE', 'TASK_FEATURE_LENGTHS', 'MIXTURE_OR_TASK_NAME', 'train.pack')


def check_resumable(saved: Mapping[str, Any] | None, new: Mapping[str, Any], checkpoint: str,
                    restore_data: bool) -> None:
  """Compares the newest checkpoint's recorded settings with this run's and names every difference."""
  if not saved:
    return  # written before settings were recorded: nothing to compare
  differ = lambda keys: [k for k in keys if k in saved and _normal(saved[k]) != _normal(new.get(k))]
  model, data = differ(_MODEL_KEYS), differ(_DATA_KEYS) if restore_data else []
  peft_settings = differ(peft.RESUME_KEYS)
  if not model and not data and not peft_settings:
    return
  lines = [f'  {k}: checkpoint has {saved[k]!r}, this run has {new.get(k)!r}' for k in model + peft_settings + data]
  advice = []
  if peft_settings:
    advice.append('a PEFT run resumes only on the frozen base (INITIAL_CHECKPOINT_PATH) and with the PEFT settings '
                  'it trained with: restore them, or start a new MODEL_DIR')
  if model:
    advice.append('the model settings must match the checkpoint (or use a new MODEL_DIR, with '
                  'INITIAL_CHECKPOINT_PATH pointing at this checkpoint to fine-tune from it)')
  if data:
    advice.append('a changed data layout cannot reuse the saved data position: keep the old values, or resume '
                  'without it with --gin.train.restore_data=False (the new pipeline then skips as many batches as '
                  'were read)')
  raise RunConfigError(f'this run differs from the run that wrote {checkpoint}:\n' + '\n'.join(lines) + '\n'
                       + _sentence('; '.join(advice)))


def _sentence(text: str) -> str:
  return text[:1].upper() + text[1:] + '.'


def _normal(v: Any) -> Any:
  """JSON round trips turn tuples into lists and dict keys into strings: compare in that form."""
  if isinstance(v, Mapping):
    return {str(k): _normal(x) for k, x in sorted(v.items())}
  if isinstance(v, (list, tuple)):
    return [_normal(x) for x in v]
  return v


# t5x's standard macros (run, eval and infer gin files): what each must be when it is set.
MACRO_RULES: dict[str, tuple[Any, str]] = {
    'MODEL_DIR': (non_empty_str, 'a folder path or gs:// URL (a quoted string)'),
    'CHECKPOINT_PATH': (non_empty_str, 'a checkpoint folder path or gs:// URL (a quoted string)'),
    'INITIAL_CHECKPOINT_PATH': (optional_str, 'None or a checkpoint path (a quoted string)'),
    'MIXTURE_OR_TASK_NAME': (optional_str, 'a seqio task or mixture name (a quoted string)'),
    'MIXTURE_OR_TASK_MODULE': (optional_str, 'None or a module name (a quoted string)'),
    'TASK_FEATURE_LENGTHS': (feature_lengths, "a dict of positive integer lengths with 'inputs' and 'targets', e.g. "
                                              "{'inputs': 512, 'targets': 256}"),
    'BATCH_SIZE': (positive_int, 'a positive integer'),
    'TRAIN_STEPS': (positive_int, 'a positive integer'),
    'EVAL_PERIOD': (non_negative_int, 'an integer >= 0 (0: no evaluation during training)'),
    'CHECKPOINT_PERIOD': (positive_int, 'a positive integer'),
    'NUM_MICROBATCHES': (positive_int, 'a positive integer'),
    'SEED': (any_int, 'an integer'),
    'LEARNING_RATE': (positive_number, 'a positive number'),
    'DROPOUT_RATE': (fraction, 'a number in [0, 1)'),
    'USE_CACHED_TASKS': (boolean, 'True or False'),
    'MAX_DECODE_LENGTH': (positive_int, 'a positive integer'),
    'BEAM_SIZE': (positive_int, 'a positive integer'),
    'TOP_K': (non_negative_int, 'an integer >= 0 (0: no top-k cut)'),
    'TOP_P': (unit_interval, 'a number in [0, 1] (0: no nucleus cut)'),
    'TEMPERATURE': (non_negative_number, 'a number >= 0'),
}
