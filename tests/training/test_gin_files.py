"""Every shipped gin file parses against the real configurables, and the recipes say what the papers say."""

import pathlib

import gin
import pytest

from flanx import gin_config as gin_utils  # noqa: F401  (registers the configurables gin files bind)
from flanx.training import loop as trainer
from flanx.inference import evaluate as evaluation, infer as inference  # noqa: F401
from flanx.model.config import T5Config

GIN = pathlib.Path(__file__).resolve().parents[2] / 'gin'
RECIPE_STEPS = {'small': 98000, 'base': 84000, 'large': 64000, 'xl': 38000, 'xxl': 14000}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def macro(name):
  return gin.query_parameter(f'{name}/gin.macro.value')


@pytest.mark.parametrize('size', sorted(RECIPE_STEPS))
def test_flan2022_recipes_match_the_flan_t5_paper(size):
  gin_utils.parse_gin([f'recipes/flan2022_flan_t5_{size}.gin', 'hardware/cpu.gin'], ['MODEL_DIR = "/tmp/x"'])
  assert macro('MIXTURE_OR_TASK_NAME') == 'flan2022_submix'
  assert macro('BATCH_SIZE') == 64 and macro('DROPOUT_RATE') == 0.05 and macro('LEARNING_RATE') == 5e-4
  assert macro('TRAIN_STEPS') == 1_100_000 + RECIPE_STEPS[size]  # t5x's absolute count from checkpoint_1100000
  assert macro('TASK_FEATURE_LENGTHS') == {'inputs': 2048, 'targets': 512}
  config = T5Config()
  assert config.dropout_rate == 0.05 and config.activation == 'gated-gelu' and not config.tie_embeddings


def test_dolly_recipe():
  gin_utils.parse_gin(['recipes/dolly_flan_t5_xxl_v3_128.gin'], ['MODEL_DIR = "/tmp/x"'])
  assert macro('TASK_FEATURE_LENGTHS') == {'inputs': 512, 'targets': 256}
  assert macro('BATCH_SIZE') == 320 and macro('LEARNING_RATE') == 7e-4 and macro('CHECKPOINT_PERIOD') == 100
  assert macro('TRAIN_STEPS') == 1_114_000 + 5000  # absolute, from flan_t5_xxl/checkpoint_1114000
  config = T5Config()
  assert config.d_model == 4096 and config.dtype == 'bfloat16' and config.scan_layers


REQUIRED = {
    'runs/eval.gin': ['CHECKPOINT_PATH = "/tmp/x"', 'MIXTURE_OR_TASK_NAME = "t"'],
    'runs/eval_flan_suite.gin': ['CHECKPOINT_PATH = "/tmp/x"'],
    'runs/infer.gin': ['CHECKPOINT_PATH = "/tmp/x"', 'INFER_OUTPUT_DIR = "/tmp/x"'],
}


@pytest.mark.parametrize('path', sorted(str(p.relative_to(GIN)) for p in GIN.glob('*/*.gin')))
def test_every_gin_file_parses(path):
  base = ['runs/finetune.gin'] if path.startswith(('hardware/', 'models/')) else []
  bindings = REQUIRED.get(path, ['MODEL_DIR = "/tmp/x"', 'MIXTURE_OR_TASK_NAME = "t"'])
  gin_utils.parse_gin(base + [path], bindings)
  T5Config()  # model bindings resolve


def test_includes_resolve_when_folders_named_like_gin_dirs_are_importable(tmp_path, monkeypatch):
  """A `runs/` or `models/` folder on sys.path (e.g. demo output in the repo root) is a namespace package;
  gin's python-path reader used to crash on it instead of moving on to the search paths."""
  for name in ('runs', 'models', 'recipes'):
    (tmp_path / name).mkdir()
  monkeypatch.syspath_prepend(str(tmp_path))
  gin_utils.parse_gin(['recipes/flan2022_flan_t5_small.gin'], ['MODEL_DIR = "/tmp/x"'])
  assert macro('TRAIN_STEPS') == 1_100_000 + RECIPE_STEPS['small']
