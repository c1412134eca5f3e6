"""Prompt templates written for this project (Dolly prompt, chain-of-thought phrasings)."""

import dataclasses
from typing import Callable, Mapping, Tuple, Union

TextFn = Union[str, Callable[[Mapping[str, str]], str]]

# Few-shot prompts: exemplars and the query separated by a blank line.
EXEMPLAR_SEPARATOR = '\n\n'


@dataclasses.dataclass(frozen=True)
class Template:
  """How a record becomes (inputs, targets): `str.format` patterns over fields, or functions."""
  inputs: TextFn
  targets: TextFn

  def render(self, record: Mapping[str, str]) -> Tuple[str, str]:
    """(inputs, targets) for one record."""
    return self.render_inputs(record), self.render_targets(record)

  def render_inputs(self, record: Mapping[str, str]) -> str:
    """The inputs text alone (KeyError naming a field the record lacks)."""
    return _apply(self.inputs, record)

  def render_targets(self, record: Mapping[str, str]) -> str:
    """The targets text alone (KeyError naming a field the record lacks)."""
    return _apply(self.targets, record)


def _apply(fn: TextFn, record: Mapping[str, str]) -> str:
  return fn(record) if callable(fn) else fn.format(**record)


def exemplar_text(inputs: str, targets: str) -> str:
  """One solved example inside a few-shot prompt."""
  return f'{inputs}\n{targets}'


def dolly_inputs(record: Mapping[str, str]) -> str:
  """The instruction, followed by the context only when there is one."""
  if record['context'].strip():
    return f"{record['instruction']}\n\nContext:\n{record['context']}"
  return record['instruction']


DOLLY = Template(inputs=dolly_inputs, targets='{response}')

# Chain of thought: `question`, `answer`, `rationale` fields (FLAN CoT TSV columns).
COT_WITH_REASONING = (
    Template('{question}\n\nThink it through step by step, then give the answer.',
             '{rationale}\nSo the answer is {answer}.'),
    Template('Work out the answer to the question below. Show your reasoning first.\n\n'
             '{question}', '{rationale}\nTherefore the answer is {answer}.'),
    Template('Question: {question}\nReason step by step before answering.',
             'Reasoning: {rationale}\nAnswer: {answer}'),
    Template('{question}\nExplain how you get there, then state the answer.',
             '{rationale} The answer: {answer}.'),
)

COT_ANSWER_ONLY = (
    Template('{question}\n\nGive only the final answer.', '{answer}'),
    Template('Question: {question}\nAnswer:', '{answer}'),
    Template('{question}', '{answer}'),
    Template('Answer this without explanation.\n{question}', '{answer}'),
)
