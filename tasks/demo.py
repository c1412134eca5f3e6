"""`flanx_demo`: the shipped synthetic Dolly-format data (tasks/data/demo_dolly.jsonl).

Read through the Dolly reader with the byte vocabulary, so it needs nothing outside the repo;
train/validation split, exact-match and BLEU metrics. `tasks.synthetic` regenerates the file.
"""

import os
from typing import List

import seqio

from tasks import dolly
from tasks import metrics
from tasks import spec as spec_lib

DATA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'demo_dolly.jsonl')
TASK_NAME = 'flanx_demo'
VALIDATION_FRACTION = 0.1


def register_demo(name: str = TASK_NAME, path: str = DATA_PATH) -> List[str]:
  """Registers the demo task (byte vocabulary, train/validation, exact match and BLEU)."""
  spec = dolly.make_spec(name, path, validation_fraction=VALIDATION_FRACTION,
                         vocabulary=seqio.ByteVocabulary(), metric_fns=(metrics.exact_match, metrics.bleu))
  return spec_lib.register(spec)


register_demo()
