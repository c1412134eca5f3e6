"""The public Flan 2022 downloads: which files a folder holds, and what each file's records mean.

Four layouts, detected from the file names (or named with gin `tasks.flan_layouts.flan_layout.layout` /
env `FLANX_FLAN_LAYOUT`):

- 'flan': FLAN's own export (flan/v2 seqio tasks written out as JSONL / Parquet / TFRecord): every record
  carries inputs, targets, task_source, task_name, template_type (a leading '_' is accepted).
- 'dpi': DataProvenanceInitiative/{submix}_submix_original: `data/train-NNNNN-of-NNNNN-<hash>.parquet`,
  the same five plain columns (task_source 'P3' for the t0 submix, as FLAN writes it).
- 'openorca': Open-Orca/FLAN: `{flan,t0,niv2,cot,dialog}_{zsopt,zsnoopt,fsopt,fsnoopt}_data/part.N.parquet`
  with inputs, targets, _task_source, _task_name, _template_type, _template_idx. The repository's top-level
  `*_submix_data.json` files duplicate the parquet parts and are skipped.
- 'sirneural': SirNeural/flan_v2: `{flan,t0,niv2,cot,dialog}_{zs,fs}_{opt,noopt}_train.jsonl.gz` (and
  `flan_fs_opt_train_partN.jsonl.gz`, byte chunks of one gzip stream, read joined in part order). Records
  hold only inputs, targets and task (the submixture); submixture and template type come from the file
  name. These files carry no Flan task name, so per-task caps cannot be applied to them.

A folder holding files of more than one layout, or no data file at all, is an error that lists what was
found and what is expected.
"""

import dataclasses
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import gin

from tasks import records as records_lib

LAYOUT_ENV = 'FLANX_FLAN_LAYOUT'
LAYOUTS = ('flan', 'dpi', 'openorca', 'sirneural')
SUBMIX_NAMES = ('flan2021', 't0', 'niv2', 'cot', 'dialog')
ALL_VARIANTS = ('zs_opt', 'zs_noopt', 'fs_opt', 'fs_noopt')
# Source names as the exports spell them (FLAN writes Flan2021 / P3 / NIv2 / CoT / Dialog; the mirrors'
# file names use flan / t0 / niv2 / cot / dialog), compared lower-case with punctuation removed.
SUBMIX_ALIASES = {
    'flan2021': ('flan2021', 'flan', 'muffin'),
    't0': ('t0', 't0sf', 'p3'),
    'niv2': ('niv2', 'natinstv2', 'niv2sf', 'superni', 'supernaturalinstructions'),
    'cot': ('cot', 'chainofthought'),
    'dialog': ('dialog',),
}
_ALIAS_TO_SUBMIX = {alias: s for s, aliases in SUBMIX_ALIASES.items() for alias in aliases}
DATA_FORMATS = ('jsonl', 'parquet', 'tfrecord')
UNNAMED_TASK = ''  # task_name of records whose export dropped it (SirNeural): never capped

_NAME = '(flan|flan2021|t0|niv2|cot|dialog)'
_OPENORCA_DIR = re.compile(f'^{_NAME}_(zs|fs)(opt|noopt)_data$')
_OPENORCA_FILE = re.compile(r'^part\.\d+\.parquet$')
_OPENORCA_EXTRA = re.compile(r'^\w+_submix_data\.json$')
_HF_METADATA = re.compile(r'^(dataset_infos?|dataset_dict|state)\.json$')  # `datasets` bookkeeping, not records
_SIRNEURAL_FILE = re.compile(f'^{_NAME}_(zs|fs)_(opt|noopt)_train(?:_part(\\d+))?\\.jsonl(?:\\.gz)?$')
_DPI_DIR = re.compile(f'^{_NAME}_submix_original$')
_DPI_FILE = re.compile(r'^train-\d+-of-\d+(?:-[0-9a-f]+)?\.parquet$')

EXPECTED = (
    "FLAN's own export (jsonl/parquet/tfrecord records with inputs, targets, task_source, task_name, "
    'template_type); DataProvenanceInitiative `{submix}_submix_original/data/train-*.parquet`; '
    'Open-Orca/FLAN `{flan,t0,niv2,cot,dialog}_{zsopt,zsnoopt,fsopt,fsnoopt}_data/part.N.parquet`; '
    'SirNeural/flan_v2 `{flan,t0,niv2,cot,dialog}_{zs,fs}_{opt,noopt}_train.jsonl.gz`')


class LayoutError(ValueError):
  """Flan files of an unknown or mixed layout."""


@gin.configurable
def flan_layout(layout: Optional[str] = None) -> str:
  """The Flan download layout: argument / gin binding, else $FLANX_FLAN_LAYOUT, else 'auto'."""
  layout = (layout or os.environ.get(LAYOUT_ENV) or 'auto').lower()
  if layout not in ('auto',) + LAYOUTS:
    raise ValueError(f'Flan layout must be auto or one of {LAYOUTS}, got {layout!r} '
                     f'(gin tasks.flan_layouts.flan_layout.layout / ${LAYOUT_ENV})')
  return layout


def norm(value: str) -> str:
  """Lower-case alphanumerics only ('Flan2021' -> 'flan2021', 'ZS-OPT' -> 'zsopt')."""
  return re.sub('[^a-z0-9]', '', str(value).lower())


def submix_of(source: str) -> Optional[str]:
  """The submixture a task_source (or file-name prefix) names: 'P3' -> 't0'; None when unknown."""
  return _ALIAS_TO_SUBMIX.get(norm(source))


def normalize_variant(value: str) -> Optional[str]:
  """'zs_opt' for 'zs_opt', 'zsopt', 'ZS-OPT'; None when not a template type."""
  value = norm(value)
  for variant in ALL_VARIANTS:
    if value == norm(variant):
      return variant
  return None


def known_sources() -> str:
  return ', '.join(f"{s} ({'/'.join(a)})" for s, a in SUBMIX_ALIASES.items())


@dataclasses.dataclass(frozen=True)
class FlanFile:
  """One logical data file: a path, or the parts of one split file (read joined, in order).

  submix / variant come from the name when the layout puts them there, else from each record.
  """
  paths: Tuple[str, ...]
  layout: str
  submix: Optional[str] = None
  variant: Optional[str] = None

  @property
  def name(self) -> str:
    return self.paths[0] if len(self.paths) == 1 else f'{self.paths[0]} (+{len(self.paths) - 1} parts)'

  def matches(self, submix: str, variant: str) -> bool:
    """Whether records of (submix, variant) can be in this file."""
    return self.submix in (None, submix) and self.variant in (None, variant)


def _name_layout(path: str) -> Tuple[str, Optional[str], Optional[str], Optional[int]]:
  """(layout, submix, variant, part) a file's name implies; layout 'skip' for known duplicates."""
  base = os.path.basename(path)
  parent = os.path.basename(os.path.dirname(path))
  found = _SIRNEURAL_FILE.match(base)
  if found:
    part = int(found.group(4)) if found.group(4) else None
    return 'sirneural', submix_of(found.group(1)), f'{found.group(2)}_{found.group(3)}', part
  found = _OPENORCA_DIR.match(parent)
  if found and _OPENORCA_FILE.match(base):
    return 'openorca', submix_of(found.group(1)), f'{found.group(2)}_{found.group(3)}', None
  if _OPENORCA_EXTRA.match(base) or _HF_METADATA.match(base):
    return 'skip', None, None, None
  for component in path.replace('\\', '/').split('/'):
    found = _DPI_DIR.match(component)
    if found:
      return 'dpi', submix_of(found.group(1)), None, None
  if _DPI_FILE.match(base):
    return 'dpi', None, None, None
  return 'flan', None, None, None


def _is_data_file(path: str) -> bool:
  try:
    return records_lib.file_format(path) in DATA_FORMATS
  except ValueError:
    return False


def list_files(pattern: str) -> Tuple[List[str], List[str]]:
  """(data files, other files) of a folder (recursively, hidden entries such as .cache skipped), a glob or
  one file; an error when nothing exists there."""
  if records_lib.has_glob(pattern) or not records_lib.is_dir(pattern):
    files = records_lib.expand(pattern)
  else:
    files = records_lib.walk_files(pattern)
  data = [f for f in files if _is_data_file(f)]
  return data, [f for f in files if f not in set(data)]


def _describe(groups: Mapping[str, List[str]]) -> str:
  return '; '.join(f'{layout} ({len(paths)} files, e.g. {paths[0]})' for layout, paths in groups.items())


def resolve(pattern: str, layout: str = 'auto') -> List[FlanFile]:
  """The Flan files at `pattern` (folder, glob or file) with their layout; LayoutError when the layout is
  unknown or mixed."""
  data, other = list_files(pattern)
  named = [(path,) + _name_layout(path) for path in data]
  named = [n for n in named if n[1] != 'skip']
  if not named:
    raise LayoutError(f'no Flan data files at {pattern!r} (found {len(other)} other files: '
                      f'{[os.path.basename(f) for f in other[:5]]}); expected one of: {EXPECTED}')
  if layout == 'auto':
    groups: Dict[str, List[str]] = {}
    for path, found, *_ in named:
      groups.setdefault(found, []).append(path)
    if len(groups) > 1:
      raise LayoutError(
          f'Flan data at {pattern!r} mixes layouts: {_describe(groups)}. Point the setting at one download '
          f'(one of: {EXPECTED}), or name the layout with ${LAYOUT_ENV} / gin '
          f'tasks.flan_layouts.flan_layout.layout (one of {LAYOUTS}).')
    layout = next(iter(groups))
  elif layout == 'sirneural':
    unnamed = [p for p, found, *_ in named if found != 'sirneural']
    if unnamed:
      raise LayoutError(f'{unnamed[0]}: not a SirNeural/flan_v2 file name (the layout takes submixture and '
                        'template type from names like flan_zs_opt_train.jsonl.gz)')
  return _group_parts(named, layout)


def _group_parts(named: Sequence[Any], layout: str) -> List[FlanFile]:
  """FlanFiles, joining `_partN` chunks of one SirNeural file in part order."""
  files, parts = [], {}
  for path, found, submix, variant, part in named:
    if found != layout:  # a layout named explicitly: routing comes from the records
      submix = variant = None
    if part is None:
      files.append(FlanFile((path,), layout, submix, variant))
    else:
      parts.setdefault((os.path.dirname(path), submix, variant), []).append((part, path))
  for (directory, submix, variant), chunks in parts.items():
    whole = [f for f in files if f.submix == submix and f.variant == variant and f.layout == 'sirneural'
             and os.path.dirname(f.paths[0]) == directory]
    if whole:
      raise LayoutError(f'{whole[0].paths[0]} and its _partN chunks are both present: keep one of them')
    files.append(FlanFile(tuple(p for _, p in sorted(chunks)), layout, submix, variant))
  return sorted(files, key=lambda f: f.paths)


def _field(record: Mapping[str, Any], *names: str) -> Any:
  for name in names:
    for key in (name, '_' + name):
      if key in record:
        return record[key]
  return None


FIELDS = ('inputs', 'targets', 'task_source', 'task_name', 'template_type')
_TEXT_FIELDS = {'inputs': ('inputs', 'input'), 'targets': ('targets', 'target')}


def classify(record: Any, file: FlanFile
             ) -> Tuple[Optional[Tuple[str, str]], Optional[Tuple[str, str, str, str, str]]]:
  """(problem, None) for a bad record, else (None, (submix, variant, task_name, inputs, targets))."""
  if not isinstance(record, dict):
    return records_lib.validate(record, FIELDS), None
  wanted = FIELDS[:2] if file.layout == 'sirneural' else FIELDS
  values = {name: _field(record, *_TEXT_FIELDS.get(name, (name,))) for name in wanted}
  missing = [name for name, value in values.items() if value is None]
  if missing:
    return ('missing_field', f'missing field {missing[0]!r} (record has {sorted(record)}; the {file.layout} '
                             f'layout needs {list(wanted)}, a leading _ allowed)'), None
  problem = records_lib.validate(values, wanted)
  if problem:
    return problem, None
  if file.layout == 'sirneural':
    return None, (file.submix, file.variant, UNNAMED_TASK, values['inputs'], values['targets'])
  submix = submix_of(values['task_source'])
  if submix is None:
    return ('unknown_task_source', f"unknown task_source {values['task_source']!r} (known: "
                                   f'{known_sources()})'), None
  variant = normalize_variant(values['template_type'])
  if variant is None:
    return ('unknown_template_type', f"unknown template_type {values['template_type']!r} "
                                     f'(known: {ALL_VARIANTS})'), None
  if not file.matches(submix, variant):
    return ('layout_mismatch', f'record is {submix} {variant} but its file name says {file.submix} '
                               f'{file.variant}'), None
  return None, (submix, variant, values['task_name'], values['inputs'], values['targets'])


READ_COLUMNS = tuple(sorted({c for name in FIELDS for c in (name, '_' + name)} | {'input', 'target', 'task'}))


def iter_records(file: FlanFile):
  """(location, record or None, problem or None) for every record of a FlanFile."""
  if len(file.paths) == 1:
    return records_lib.iter_file(file.paths[0], columns=READ_COLUMNS)
  return records_lib.iter_joined_jsonl(file.paths)


def iter_numbered_records(file: FlanFile, share: Optional[records_lib.Share] = None):
  """(number, location, record or None, problem or None) for every record of a FlanFile, or of `share` of it
  (chosen before parsing); numbers count the file's records from 0, bad ones included."""
  if len(file.paths) == 1:
    return records_lib.iter_file_numbered(file.paths[0], columns=READ_COLUMNS, share=share)
  return records_lib.iter_joined_jsonl_numbered(file.paths, share)
