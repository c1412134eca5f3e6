"""Module names from before the re-homing (flat `flanx/*.py`), still importable as aliases.

Users' gin files and every run's saved MODEL_DIR/config.gin say `import flanx.config`, `import flanx.trainer`…;
each old name resolves to the module that now holds the same configurables.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

RENAMED = {
    'flanx.adafactor': 'flanx.training.adafactor',
    'flanx.checkpoint_import': 'flanx.interop.load_params',
    'flanx.checkpoints': 'flanx.training.checkpoints',
    'flanx.config': 'flanx.model.config',
    'flanx.data': 'flanx.training.data',
    'flanx.decoding': 'flanx.model.decoding',
    'flanx.evaluation': 'flanx.inference.evaluate',
    'flanx.flops': 'flanx.model.flops',
    'flanx.gin_utils': 'flanx.gin_config',
    'flanx.hf': 'flanx.interop.hf_format',
    'flanx.hf_tokenizer': 'flanx.interop.hf_tokenizer',
    'flanx.hf_verify': 'flanx.interop.hf_verify',
    'flanx.losses': 'flanx.training.losses',
    'flanx.metrics_writer': 'flanx.training.metrics_writer',
    'flanx.model_card': 'flanx.interop.model_card',
    'flanx.partitioning': 'flanx.training.partitioning',
    'flanx.predict': 'flanx.inference.predict',
    'flanx.runtime': 'flanx.training.runtime',
    'flanx.schedules': 'flanx.training.schedules',
    'flanx.t5x_checkpoint': 'flanx.interop.t5x_checkpoint',
    'flanx.train_state': 'flanx.training.steps',
    'flanx.trainer': 'flanx.training.loop',
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports an old name as the module it moved to (the same module object, so gin sees one registration)."""

  def find_spec(self, fullname, path=None, target=None):
    return importlib.util.spec_from_loader(fullname, self) if fullname in RENAMED else None

  def create_module(self, spec):
    return importlib.import_module(RENAMED[spec.name])

  def exec_module(self, module):
    pass  # already executed under its new name


def install() -> None:
  """Adds the alias finder once (cheap: nothing is imported until an old name is)."""
  if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.append(_AliasFinder())
