"""Lossless whitespace through the exported Hugging Face tokenizer (issue 11, section 4; issue 27): Python source
with indentation, an aligned table and the Zen of Python encode to the same ids in transformers as in seqio, and
plain `AutoTokenizer` decoding (no handler, no clean-up) gives seqio's text back."""

import calendar
import codecs
import inspect
import pathlib
import textwrap
import this

import pytest

from flanx.interop import hf_tokenizer
from tasks import vocab as vocab_lib

transformers = pytest.importorskip('transformers')
DEV_VOCAB = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'vocab' / 'dev_8k.model'


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  if not DEV_VOCAB.exists():
    pytest.skip(f'shared dev vocabulary absent ({DEV_VOCAB})')
  vocabulary = vocab_lib.get_vocabulary(str(DEV_VOCAB), 'lossless')
  folder = tmp_path_factory.mktemp('tok')
  info = hf_tokenizer.write_tokenizer(folder, vocabulary)
  assert info['newline_token_ids'] == vocab_lib.newline_token_map(vocabulary)
  return vocabulary, transformers.AutoTokenizer.from_pretrained(str(folder))


TEXTS = [
    inspect.getsource(textwrap.dedent),
    inspect.getsource(textwrap.TextWrapper._wrap_chunks),
    calendar.TextCalendar().formatmonth(2024, 2),
    codecs.decode(this.s, 'rot13'),
    'x' + ' ' * 17 + 'y' + ' ' * 40 + 'z\n\t  cell  \t\n',
]


@pytest.mark.parametrize('index', range(len(TEXTS)))
def test_hf_ids_and_decoding_match_seqio(exported, index):
  vocabulary, tokenizer = exported
  text = TEXTS[index]
  ids = list(vocabulary.encode(text)) + [1]
  assert tokenizer(text).input_ids == ids
  decoded = tokenizer.decode(ids, skip_special_tokens=True)
  assert decoded == vocabulary.decode(ids)
  assert tokenizer.batch_decode([ids], skip_special_tokens=True) == [decoded]
  if index < 2:
    assert decoded == text  # indented Python source survives the whole trip


# The README's cases: indentation and aligned text round-trip; a lone space next to a newline/tab or at either end
# is lost, by transformers exactly as by seqio.
README_CASES = [
    ('def f(x):\n    return x\n\tdone', True),
    ('name   value\nalpha  1\nbeta   22\n', True),
    ('  two leading, two trailing  ', True),
    ('a \nb\t c', False),
    (' one leading, one trailing ', False),
]


@pytest.mark.parametrize('text, kept', README_CASES)
def test_plain_transformers_decode_round_trips(exported, text, kept):
  vocabulary, tokenizer = exported
  assert type(tokenizer).__name__ in ('TokenizersBackend', 'PreTrainedTokenizerFast')  # tokenizer.json as written
  ids = tokenizer(text).input_ids
  decoded = tokenizer.decode(ids, skip_special_tokens=True)
  assert decoded == vocabulary.decode(ids)
  assert (decoded == text) == kept


def test_compare_tokenization_probes(exported):
  vocabulary, tokenizer = exported
  assert hf_tokenizer.compare_tokenization(vocabulary, tokenizer) == []
  assert hf_tokenizer.compare_tokenization(vocabulary, tokenizer, TEXTS) == []
