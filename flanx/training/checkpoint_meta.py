"""What a checkpoint's `meta` item holds: one typed record, written by the trainer and an import, read by every command.

On disk it is the JSON object orbax writes to checkpoint_<step>/meta/metadata, with these keys (all optional; a key
whose value is None is not written, and an absent key reads as the default below):

| key | written by | meaning | read as, when absent |
| --- | --- | --- | --- |
| step | all | the train step of the checkpoint | None (callers use the folder's step) |
| batches_read | trainer | batches the run's input pipeline had yielded | 0 |
| seed | trainer, demo | train.seed: params' init, dropout; a PEFT run's base without an initial checkpoint | 42 (train's default) |
| data_seed | trainer | train.data_seed (shuffling) | 42 |
| run | trainer | the run signature a resume must match (flanx.training.run_checks) | None |
| config_gin | trainer | the gin config the run was started with (read as data: recorded_config.py) | None |
| schedule_offset | trainer | steps the learning-rate schedule was shifted by (a t5x initial checkpoint) | 0 |
| peft | trainer | the PEFT method trained (the PEFT macro), None for full fine-tuning | None |
| base | trainer | a PEFT run's frozen base (INITIAL_CHECKPOINT_PATH); None: the base drawn from `seed` | None |
| initial_adapter | trainer | the peft folder a PEFT run continued (train.initial_adapter_path) | None |
| data_sources | trainer | the training data's fingerprint (flanx.training.data_fingerprint) | None |
| eval_metrics | trainer | the in-training eval of this step (keep_best ranks by it) | None |
| imported_from, format | import_t5x | the t5x checkpoint a flanx checkpoint was converted from, and 't5x' | None |
| checkpoint_version | checkpoints.py | 2: checksums recorded; absent: a flanx from before them | None |
| checksums | checkpoints.py | per-array checksums of 'params' (and 'opt_state') | None |

Keys this version does not know (a newer flanx) are kept in `extra` and written back unchanged. Full fine-tuning
runs before this module wrote `peft`, `base` and `initial_adapter` as null; they read the same as absent.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

DEFAULT_SEED = 42  # train.seed / train.data_seed when a checkpoint does not record them


def _int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any) -> bool:
  return isinstance(v, str)


def _dict(v: Any) -> bool:
  return isinstance(v, Mapping)


# The JSON type of each field, checked when read (a damaged or hand-edited meta names its key).
_CHECKS = {'step': (_int, 'an integer'), 'batches_read': (_int, 'an integer'), 'seed': (_int, 'an integer'),
           'data_seed': (_int, 'an integer'), 'run': (_dict, 'an object'), 'config_gin': (_str, 'a string'),
           'schedule_offset': (_int, 'an integer'), 'peft': (_str, 'a string'), 'base': (_str, 'a string'),
           'initial_adapter': (_str, 'a string'), 'data_sources': (_dict, 'an object'),
           'eval_metrics': (_dict, 'an object'), 'imported_from': (_str, 'a string'), 'format': (_str, 'a string'),
           'checkpoint_version': (_int, 'an integer'), 'checksums': (_dict, 'an object')}
_READ_DEFAULTS = {'batches_read': 0, 'seed': DEFAULT_SEED, 'data_seed': DEFAULT_SEED, 'schedule_offset': 0}


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
  """A checkpoint's meta (see the module doc for each field). None: not recorded (not written)."""
  step: int | None = None
  batches_read: int | None = None
  seed: int | None = None
  data_seed: int | None = None
  run: Mapping[str, Any] | None = None
  config_gin: str | None = None
  schedule_offset: int | None = None
  peft: str | None = None
  base: str | None = None
  initial_adapter: str | None = None
  data_sources: Mapping[str, Any] | None = None
  eval_metrics: Mapping[str, float] | None = None
  imported_from: str | None = None
  format: str | None = None
  checkpoint_version: int | None = None
  checksums: Mapping[str, Any] | None = None
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # keys of a newer flanx, kept as read

  @property
  def task(self) -> str | None:
    """The seqio task or mixture the run trained on (its recorded MIXTURE_OR_TASK_NAME)."""
    return (self.run or {}).get('MIXTURE_OR_TASK_NAME')

  def replace(self, **changes: Any) -> 'CheckpointMeta':
    return dataclasses.replace(self, **changes)

  def to_json(self) -> dict[str, Any]:
    """The JSON object written to disk: the fields that are set, in declaration order, then `extra`."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name != 'extra' and getattr(self, f.name) is not None}
    return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

  @classmethod
  def from_json(cls, data: Mapping[str, Any], where: str = 'meta', defaults: bool = True) -> 'CheckpointMeta':
    """The meta a JSON object describes; absent keys read as the module doc's defaults (`defaults=False`: stay
    None). A value of the wrong type is a ValueError naming `where` and the key."""
    if not isinstance(data, Mapping):
      raise ValueError(f'{where}: expected a JSON object, got {type(data).__name__}')
    known = {}
    for key, value in data.items():
      if key not in _CHECKS or value is None:
        continue
      ok, expected = _CHECKS[key]
      if not ok(value):
        raise ValueError(f'{where}: {key} = {value!r}: expected {expected}')
      known[key] = dict(value) if isinstance(value, Mapping) else value
    for key, default in _READ_DEFAULTS.items() if defaults else ():
      known.setdefault(key, default)
    extra = {k: v for k, v in data.items() if k not in _CHECKS}
    return cls(**known, extra=extra)

  @classmethod
  def of(cls, meta: 'CheckpointMeta | Mapping[str, Any]') -> 'CheckpointMeta':
    """`meta` itself, or the meta its JSON object describes, as given (a writer's small dict, e.g. a test's)."""
    return meta if isinstance(meta, CheckpointMeta) else cls.from_json(meta, 'the meta to write', defaults=False)
