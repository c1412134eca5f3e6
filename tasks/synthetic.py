"""Generator of the embedded demo dataset: small verifiable tasks in Dolly format.

Kinds (the record's category): arithmetic (small additions), sorting (numbers or letters, some
one per line), reversal (a short made-up word) and uppercase (copy with a twist). Every answer is
a function of the prompt, so learning shows up as exact match. `tasks.demo` registers the task.

Regenerate the shipped file (byte for byte) with: python -m tasks.synthetic
"""

import argparse
import json
import os
import random
from typing import Dict, List

from tasks.demo import DATA_PATH

SEED = 1234
NUM_RECORDS = 2400
_LETTERS = 'abcdefghijklmnopqrstuvwxyz'
_SYLLABLES = ('ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'po', 'si', 'de', 'fa', 'gu', 'be', 'zo', 'vi')


def _arithmetic(rng: random.Random) -> Dict[str, str]:
  a, b = rng.randint(0, 99), rng.randint(0, 99)
  if rng.random() < 0.5:
    return {'instruction': f'What is {a} + {b}?', 'context': '', 'response': str(a + b)}
  return {'instruction': 'Add the two numbers.', 'context': f'{a} and {b}',
          'response': str(a + b)}


def _sorting(rng: random.Random) -> Dict[str, str]:
  if rng.random() < 0.5:
    items = [str(rng.randint(0, 99)) for _ in range(rng.randint(3, 5))]
    key, what = int, 'numbers from smallest to largest'
  else:
    items = rng.sample(_LETTERS, rng.randint(3, 5))
    key, what = str, 'letters in alphabetical order'
  ordered = sorted(items, key=key)
  if rng.random() < 0.5:
    return {'instruction': f'Sort these {what}: {", ".join(items)}', 'context': '',
            'response': ', '.join(ordered)}
  return {'instruction': f'Sort the {what}, one per line.', 'context': '\n'.join(items),
          'response': '\n'.join(ordered)}


def _word(rng: random.Random) -> str:
  return ''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


def _reversal(rng: random.Random) -> Dict[str, str]:
  word = _word(rng)
  return {'instruction': f'Spell the word "{word}" backwards.', 'context': '',
          'response': word[::-1]}


def _uppercase(rng: random.Random) -> Dict[str, str]:
  words = ' '.join(_word(rng) for _ in range(rng.randint(2, 3)))
  return {'instruction': 'Copy the text in capital letters.', 'context': words,
          'response': words.upper()}


KINDS = {'arithmetic': _arithmetic, 'sorting': _sorting, 'reversal': _reversal,
         'uppercase': _uppercase}


def generate(num_records: int = NUM_RECORDS, seed: int = SEED) -> List[Dict[str, str]]:
  """Dolly-format records, the same for the same arguments."""
  rng = random.Random(seed)
  names = sorted(KINDS)
  out = []
  for i in range(num_records):
    category = names[i % len(names)]
    record = KINDS[category](rng)
    out.append({'instruction': record['instruction'], 'context': record['context'],
                'response': record['response'], 'category': category})
  return out


def to_jsonl(records: List[Dict[str, str]]) -> str:
  """One JSON object per line, keys in Dolly's order, ASCII only."""
  return ''.join(json.dumps(r, ensure_ascii=True, separators=(',', ':')) + '\n' for r in records)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=DATA_PATH, help='where to write the JSONL file')
  parser.add_argument('--num_records', type=int, default=NUM_RECORDS)
  parser.add_argument('--seed', type=int, default=SEED)
  args = parser.parse_args()
  text = to_jsonl(generate(args.num_records, args.seed))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + '.tmp'
  with open(tmp, 'w', encoding='ascii', newline='\n') as f:
    f.write(text)
  os.replace(tmp, args.out)
  print(f'wrote {len(text.splitlines())} records ({len(text.encode())} bytes) to {args.out}')


if __name__ == '__main__':
  main()
