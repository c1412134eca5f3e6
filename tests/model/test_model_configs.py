"""gin/models/*.gin: published parameter counts, the FACTS.md dimension table, and transformers' own count."""

import functools
import re

import gin
import pytest

from flanx.interop import hf_format as hf
from flanx.model import network as flanx_model
from flanx.model.config import T5Config

# Published sizes (Hugging Face model cards / num_parameters(); Flan-UL2 with its tied head, see FACTS.md).
PUBLISHED_PARAMS = {
    'flan_t5_small': 76_961_152,
    'flan_t5_base': 247_577_856,
    'flan_t5_large': 783_150_080,
    'flan_t5_xl': 2_849_757_184,
    'flan_t5_xxl': 11_135_332_352,
    'flan_ul2': 19_459_613_696,
    't5_1_0_small': 60_506_624,
}


@functools.lru_cache(maxsize=None)
def _param_count(config: T5Config) -> int:
  """flanx's abstract count, traced with scanned layers (one layer body: fast even for UL2's 64 layers)."""
  return flanx_model.param_count(config.replace(scan_layers=True))


@pytest.fixture
def load_gin(repo_root):
  """load_gin(name, *extra_bindings) → the T5Config that gin/models/{name}.gin binds (global gin state restored)."""

  def load(name, *bindings):
    gin.clear_config()
    try:
      gin.parse_config_file(str(repo_root / 'gin' / 'models' / f'{name}.gin'))
      gin.parse_config(list(bindings))
      return T5Config()
    finally:
      gin.clear_config()

  return load


def test_every_model_gin_parses(repo_root, load_gin):
  names = {p.stem for p in (repo_root / 'gin' / 'models').glob('*.gin')}
  assert names >= set(PUBLISHED_PARAMS) | {'tiny'}
  for name in sorted(names):
    config = load_gin(name)
    assert config.num_encoder_layers > 0 and config.d_model > 0, name
    hf.hf_config_dict(config)  # a known activation, exportable


@pytest.mark.parametrize('name', sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published(name, load_gin):
  config = load_gin(name)
  assert _param_count(config) == PUBLISHED_PARAMS[name]


def _facts_table(shared_dir):
  """{gin name: (d_model, d_ff, d_kv, heads, enc layers, dec layers, params)} parsed from FACTS.md."""
  facts = shared_dir / 'notes' / 'FACTS.md'
  if not facts.exists():
    pytest.skip(f'{facts} not present: dimension table not checked')
  rows = {}
  for line in facts.read_text().splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 8 and cells[0].startswith('flan-'):
      name = cells[0].split()[0].replace('-', '_')
      numbers = [int(re.match(r'[\d,]+', c).group().replace(',', '')) for c in cells[1:]]
      rows[name] = tuple(numbers)
  assert rows, f'{facts}: no model table found'
  return rows


def test_scanned_count_equals_canonical_count(load_gin):
  config = load_gin('flan_t5_small')
  assert flanx_model.param_count(config) == _param_count(config)


def test_dims_match_facts_table(shared_dir, load_gin):
  table = _facts_table(shared_dir)
  assert set(table) == {n for n in PUBLISHED_PARAMS if n.startswith('flan_')}
  for name, (d_model, d_ff, d_kv, heads, enc, dec, params) in table.items():
    config = load_gin(name)
    assert (config.d_model, config.d_ff, config.d_kv, config.num_heads, config.num_encoder_layers,
            config.num_decoder_layers) == (d_model, d_ff, d_kv, heads, enc, dec), name
    assert config.vocab_size == 32128 and (config.relpos_buckets, config.relpos_max_distance) == (32, 128)
    assert config.activation == ('gated-silu' if name == 'flan_ul2' else 'gated-gelu')
    assert config.tie_embeddings == (name == 'flan_ul2')
    assert PUBLISHED_PARAMS[name] == params


@pytest.mark.parametrize('name', ['flan_t5_small', 'flan_t5_base', 'flan_t5_xxl', 'flan_ul2', 't5_1_0_small'])
def test_param_count_matches_transformers(name, load_gin):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  config = load_gin(name)
  with torch.device('meta'):  # shapes only, nothing allocated
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.hf_config_dict(config)))
  count = sum(p.numel() for p in model.parameters())  # transformers 5.x always ties lm_head in memory
  if not config.tie_embeddings:
    count += config.vocab_size * config.d_model
  assert count == _param_count(config)


def test_macros_are_overridable(load_gin):
  config = load_gin('flan_t5_small', 'DROPOUT_RATE = 0.1', "ACTIVATION_DTYPE = 'bfloat16'")
  assert (config.dropout_rate, config.dtype) == (0.1, 'bfloat16')
  default = load_gin('flan_t5_small')
  assert (default.dropout_rate, default.dtype, default.scan_layers, default.remat) == (0.0, 'float32', False, 'none')
