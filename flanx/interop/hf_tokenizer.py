"""Hugging Face tokenizer files for a seqio vocabulary, and the text conventions around them.

SentencePiece vocabularies (T5's, or any with T5's special ids pad 0, eos 1, unk 2) become a T5 tokenizer:
`spiece.model` (the original model, without seqio's sentinels), `tokenizer.json` (built by transformers' own
SentencePiece converter, offline), a hand-written `tokenizer_config.json` and `special_tokens_map.json` that read
the same in transformers 4.x and 5.x. `<extra_id_i>` is id `pieces + extra_ids - 1 - i`, as in seqio.

Newline modes (tasks.vocab):
- lossless: `\\n`, `\\t` and runs of 2..16 spaces (`tasks.vocab.newline_token_map`) are added as
  `AddedToken(normalized=False, special=False)`, in that order, so they get the first ids after the sentinels, the
  ids seqio's LosslessNewlineVocabulary trains with (checked on writing); HF matches them leftmost-longest, as
  seqio splits. seqio decodes the text between two such tokens as its own SentencePiece text, so the `▁` that
  starts the piece after one is no space; T5's Metaspace decoder would write it ("a\\n b" for "a\\nb"). The
  exported tokenizer.json decodes as seqio does by itself (`LOSSLESS_DECODER`), so it is loaded as
  `PreTrainedTokenizerFast`: transformers 5's `T5Tokenizer` rebuilds its decoder as plain Metaspace, ignoring
  the one in tokenizer.json.
- dolly: HF's tokenizer cannot apply the `<_LB_>` / `<_T_>` escaping itself; `prepare_text` / `clean_decoded`
  do it around the tokenizer (handler.py applies them).
- none: plain SentencePiece; newlines and tabs become spaces in both.
ByteVocabulary becomes `ByT5Tokenizer` with `extra_ids: 0`: pad 0, eos 1, unk 2, byte b at id b + 3, exactly
seqio's layout (ByT5 has no `tokenizer.json`; transformers has no fast ByT5 tokenizer).

`flanx_export.json` records the mode so the handler (and users) know which pre/postprocessing to apply.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping, Sequence

from flanx import gin_config

EXPORT_INFO_FILE = 'flanx_export.json'

# Probe strings for tokenization checks: ascii, numbers, punctuation, whitespace runs, unicode (some unknown to
# small vocabularies), sentinels, and (when the mode keeps them) newlines and tabs.
PROBES = (
    'Translate to German: The house is wonderful.',
    'Q: What is 12 + 30? A: 42. (3.14159, 1,000,000; 7/8)',
    'Punctuation!? "quoted" \'single\' [brackets] {braces} <angle> #hash @at $5 %',
    '  leading, trailing   and   repeated   spaces  ',
    'Unicode: Café naïve – 東京 ✓ ﬁ ½ Ａ émoji 😀',
    'Sentinels: <extra_id_0> fill <extra_id_1>',
)
NEWLINE_PROBES = (
    'Line 1\nLine 2\n\n\tIndented\tcell\nend',
    '\nstarts with a newline',
    'ends with a newline\n',
    'spaces around \n newline \t tab',
)


def _resolve(vocabulary: Any) -> Any:
  vocab_lib = gin_config.tasks_module('vocab')
  return vocabulary.resolve() if isinstance(vocabulary, vocab_lib.LazyVocabulary) else vocabulary


def newline_mode(vocabulary: Any) -> str:
  """'lossless', 'dolly', 'none' or 'byte' (see tasks.vocab)."""
  vocab_lib = gin_config.tasks_module('vocab')
  return vocab_lib.newline_mode_of(_resolve(vocabulary))


def sentencepiece_base(vocabulary: Any) -> Any:
  """The seqio.SentencePieceVocabulary under a (wrapped) vocabulary, or None for byte vocabularies."""
  import seqio  # pylint: disable=g-import-not-at-top
  vocabulary = _resolve(vocabulary)
  vocabulary = getattr(vocabulary, 'base_vocabulary', vocabulary)
  return vocabulary if isinstance(vocabulary, seqio.SentencePieceVocabulary) else None


def probe_strings(vocabulary: Any) -> list[str]:
  """Probe strings for `vocabulary` (no sentinel text for byte vocabularies, which have no sentinels)."""
  probes = list(PROBES) + list(NEWLINE_PROBES)
  return [p for p in probes if '<extra_id' not in p] if newline_mode(vocabulary) == 'byte' else probes


def prepare_text(text: str, mode: str) -> str:
  """Text as the model saw it in training, before HF tokenization (dolly: newline/tab markers)."""
  if mode == 'dolly':
    vocab_lib = gin_config.tasks_module('vocab')
    return vocab_lib.dolly_escape(text)
  return text


def clean_decoded(text: str, mode: str) -> str:
  """HF-decoded text → seqio's decoding: unescapes the dolly markers (the other modes decode as seqio already)."""
  if mode == 'dolly':
    vocab_lib = gin_config.tasks_module('vocab')
    return vocab_lib.dolly_unescape(text)
  return text


def _read_bytes(path: str) -> bytes:
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  return pathlib.Path(path).read_bytes()


def _added_token(content: str) -> dict[str, Any]:
  return {'content': content, 'lstrip': False, 'normalized': False, 'rstrip': False, 'single_word': False,
          'special': False}


def lossless_decoder() -> Any:
  """The `tokenizers` decoder of a lossless tokenizer.json, which decodes as seqio does.

  The tokens are joined, then one `▁` is dropped at the start and after each newline/tab/space-run token (literal
  whitespace comes only from those: pieces spell spaces as `▁`), and the other `▁`s become spaces. That is T5's
  Metaspace decoder, except after the added whitespace tokens.
  """
  from tokenizers import decoders  # pylint: disable=g-import-not-at-top
  mark = '\u2581'
  return decoders.Sequence([decoders.Fuse(), decoders.Strip(mark, 1, 0),
                            *(decoders.Replace(c + mark, c) for c in ('\n', '\t', ' ')),
                            decoders.Replace(mark, ' ')])


def _write_json(path: pathlib.Path, value: Any) -> None:
  path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + '\n')


def _write_sentencepiece(folder: pathlib.Path, vocabulary: Any, model_max_length: int) -> dict[str, Any]:
  import transformers  # pylint: disable=g-import-not-at-top
  vocab_lib = gin_config.tasks_module('vocab')
  base = sentencepiece_base(vocabulary)
  if (base.pad_id, base.eos_id, base.unk_id) != (0, 1, 2):
    raise ValueError(f'{base.sentencepiece_model_file}: T5 tokenizers need pad/eos/unk ids 0/1/2, this model has '
                     f'{base.pad_id}/{base.eos_id}/{base.unk_id}')
  model_bytes = _read_bytes(base.sentencepiece_model_file)
  (folder / 'spiece.model').write_bytes(model_bytes)
  newline_ids = dict(vocab_lib.newline_token_map(_resolve(vocabulary)))

  # transformers converts spiece.model to a `tokenizers` Unigram model (normalizer, Metaspace pre-tokenizer,
  # sentinels, `</s>` post-processor) when a folder holds nothing else; that is the tokenizer.json we ship.
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='.spiece-conversion-', dir=folder))  # removed below
  try:
    (scratch / 'spiece.model').write_bytes(model_bytes)
    tokenizer = transformers.T5Tokenizer.from_pretrained(str(scratch), extra_ids=base.extra_ids,
                                                         local_files_only=True)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  if len(tokenizer) != base.vocab_size:
    raise ValueError(f'transformers converted {base.sentencepiece_model_file} to {len(tokenizer)} tokens, '
                     f'seqio has {base.vocab_size} (pieces + {base.extra_ids} sentinels)')
  if newline_ids:
    added = [transformers.AddedToken(c, normalized=False, special=False) for c in newline_ids]
    tokenizer.add_tokens(added)
    got = tokenizer.convert_tokens_to_ids(list(newline_ids))
    if got != list(newline_ids.values()):
      raise ValueError(f'HF assigned ids {got} to {list(newline_ids)}, the vocabulary trains with '
                       f'{list(newline_ids.values())}')
    tokenizer.backend_tokenizer.decoder = lossless_decoder()
  tokenizer.backend_tokenizer.save(str(folder / 'tokenizer.json'))

  sentinels = [f'<extra_id_{i}>' for i in range(base.extra_ids)]
  specials = {'eos_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>', 'additional_special_tokens': sentinels}
  config = {
      # transformers 5's T5Tokenizer replaces tokenizer.json's decoder with Metaspace: the lossless one needs the
      # class that loads tokenizer.json as it is.
      'tokenizer_class': 'PreTrainedTokenizerFast' if newline_ids else 'T5Tokenizer',
      **specials,
      'extra_ids': base.extra_ids,
      'model_max_length': model_max_length,
      # SentencePiece decoding keeps " ." and " ,"; so must HF (4.x's T5 default would remove those spaces).
      'clean_up_tokenization_spaces': False,
  }
  if newline_ids:
    # Slow (sentencepiece) tokenizers in 4.x read added tokens from here; fast ones from tokenizer.json.
    config['added_tokens_decoder'] = {str(i): _added_token(c) for c, i in newline_ids.items()}
  _write_json(folder / 'tokenizer_config.json', config)
  _write_json(folder / 'special_tokens_map.json', specials)
  return {'tokenizer_class': config['tokenizer_class'], 'newline_token_ids': newline_ids, 'size': len(tokenizer)}


def _write_byte(folder: pathlib.Path, vocabulary: Any, model_max_length: int) -> dict[str, Any]:
  vocabulary = _resolve(vocabulary)
  if vocabulary.extra_ids:
    raise ValueError(f'ByteVocabulary with extra_ids={vocabulary.extra_ids}: only extra_ids=0 is supported '
                     '(ByT5 puts its sentinels at different ids than seqio)')
  specials = {'eos_token': '</s>', 'unk_token': '<unk>', 'pad_token': '<pad>'}
  config = {'tokenizer_class': 'ByT5Tokenizer', **specials, 'extra_ids': 0, 'model_max_length': model_max_length,
            'clean_up_tokenization_spaces': False}
  _write_json(folder / 'tokenizer_config.json', config)
  _write_json(folder / 'special_tokens_map.json', specials)
  return {'tokenizer_class': 'ByT5Tokenizer', 'newline_token_ids': {}, 'size': vocabulary.vocab_size}


def write_tokenizer(folder: str | os.PathLike, vocabulary: Any, model_max_length: int = 512) -> dict[str, Any]:
  """Writes the HF tokenizer files for a seqio vocabulary into `folder`; returns what was written (for the card)."""
  folder = pathlib.Path(folder)
  mode = newline_mode(vocabulary)
  if mode == 'byte':
    info = _write_byte(folder, vocabulary, model_max_length)
  elif sentencepiece_base(vocabulary) is not None:
    info = _write_sentencepiece(folder, vocabulary, model_max_length)
  else:
    raise ValueError(f'no Hugging Face tokenizer for vocabulary {vocabulary!r} (SentencePiece or byte only)')
  info = {'newline_mode': mode, **info}
  _write_json(folder / EXPORT_INFO_FILE, {'newline_mode': mode,
                                          'newline_token_ids': info['newline_token_ids']})
  return info


def compare_tokenization(vocabulary: Any, hf_tokenizer: Any, probes: Sequence[str] | None = None) -> list[str]:
  """Differences between seqio and an HF tokenizer on probe strings: ids, and decoding (of ids without unk or
  sentinels, which HF's skip_special_tokens drops while seqio spells them out)."""
  mode = newline_mode(vocabulary)
  vocabulary = _resolve(vocabulary)
  skipped = set(hf_tokenizer.all_special_ids) - {vocabulary.eos_id, vocabulary.pad_id}
  problems = []
  for text in probe_strings(vocabulary) if probes is None else probes:
    expected = list(vocabulary.encode(text)) + [vocabulary.eos_id]
    got = list(hf_tokenizer(prepare_text(text, mode)).input_ids)
    if got != expected:
      problems.append(f'ids differ for {text!r}: seqio {expected}, HF {got}')
      continue
    if skipped & set(expected):
      continue
    want = vocabulary.decode(expected)
    decoded = clean_decoded(hf_tokenizer.decode(got, skip_special_tokens=True), mode)
    if decoded != want:
      problems.append(f'decoding differs for {text!r}: seqio {want!r}, HF (cleaned) {decoded!r}')
  return problems


def read_export_info(folder: str | os.PathLike) -> Mapping[str, Any]:
  """The newline mode and ids recorded in an exported folder ({} when absent)."""
  path = pathlib.Path(folder) / EXPORT_INFO_FILE
  return json.loads(path.read_text()) if path.exists() else {}
