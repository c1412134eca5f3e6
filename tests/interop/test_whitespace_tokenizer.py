"""Lossless whitespace through the exported Hugging Face tokenizer (issue 11, section 4): Python source with
indentation, an aligned table and the Zen of Python encode to the same ids in transformers as in seqio, and
decode (after the handler's clean-up) to seqio's text."""

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
  decoded = hf_tokenizer.clean_decoded(tokenizer.decode(ids, skip_special_tokens=True), 'lossless')
  assert decoded == vocabulary.decode(ids)
  if index < 2:
    assert decoded == text  # indented Python source survives the whole trip


def test_compare_tokenization_probes(exported):
  vocabulary, tokenizer = exported
  assert hf_tokenizer.compare_tokenization(vocabulary, tokenizer) == []
  assert hf_tokenizer.compare_tokenization(vocabulary, tokenizer, TEXTS) == []
