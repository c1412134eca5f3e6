"""flanx: Flan-style instruction tuning of T5-family models in JAX, exported to Hugging Face.

Packages: `flanx.model` (config, network, decoding), `flanx.training` (optimizer, losses, steps, partitioning,
checkpoints, data, loop), `flanx.inference` (predict, evaluate, infer), `flanx.interop` (Hugging Face and t5x
formats); the command lines are the modules at the top (`python -m flanx.train`, `flanx.eval`, `flanx.infer`,
`flanx.export`, `flanx.import_t5x`, `flanx.demo`). Submodules are imported on use, so `import flanx` stays cheap.
"""

import os

# TensorFlow (seqio's data pipeline, gfile) logs INFO lines: keep its warnings and errors unless the user chose a
# level; its start-up notices, which no level hides, are filtered out of the first `import tensorflow`.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from flanx import _legacy_names, _quiet_tf  # noqa: E402  pylint: disable=g-import-not-at-top

__version__ = '0.1.0'
_legacy_names.install()
_quiet_tf.install()
