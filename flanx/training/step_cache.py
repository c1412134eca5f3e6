"""The train step's traced program kept beside the persistent compilation cache: a restart neither traces nor
lowers it.

JAX's persistent cache (compile_cache) stores compiled executables, but finding one needs the lowered program, so
every start still traced the step in Python (seconds for a T5; most of a warm restart's compile time). Here the
traced step is exported once (`jax.export`, as StableHLO) to `<compile cache folder>/train_step/<key>.bin` and a
later start with the same key reads it back; the step that runs is `jax.jit(exported.call)` either way, with the
state's buffers donated as before, so a cold and a warm start run one program (and the persistent cache finds its
executable).

The key covers everything the traced program depends on: the arguments of steps.make_train_step (the model config,
the optimizer and its schedule down to the values their closures hold, the loss settings, microbatches, dropout
seed, the mesh and shardings), the shapes, dtypes and shardings of the state and batch, gin's whole configuration
but MODEL_DIR (functions may read gin bindings while being traced), JAX's settings, the versions of Python, jax,
jaxlib, flax and optax, and a hash of flanx's own source. Anything else changed (TRAIN_STEPS included: a schedule
may read it) gives a new entry. An optimizer holding something the key cannot describe (an object of an unknown
class), or a step jax.export refuses, is traced at every start as before, and so is every step while the compile
cache is off. Each process keeps and reads its own entry (the key holds its devices); the 2-process CPU run of
tests/e2e/test_train_runs.py checks multi-process runs match one process.

On a restart the trainer starts reading the stored program and loading its executable in a background thread
before it restores the checkpoint (`CachedStep.compile_ahead`): on CPU that load is XLA rebuilding the executable,
seconds of work the restart no longer waits for. The first step's wait for it counts as compile time (goodput).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import os
import pathlib
import pickle
import sys
import threading
import time
import types
from typing import Any, Callable

import jax
import numpy as np

from flanx.training import goodput

FOLDER = 'train_step'
# Packages whose code is pinned by their version (module name: distribution name).
_VERSIONED = {'jax': 'jax', 'jaxlib': 'jaxlib', 'flax': 'flax', 'optax': 'optax', 'numpy': 'numpy',
              'ml_dtypes': 'ml_dtypes', 'chex': 'chex', 'gin': 'gin-config'}
_FLANX = pathlib.Path(__file__).resolve().parents[1]


def make_train_step(config, optimizer, shardings, loss_config, num_microbatches: int = 1, dropout_seed: int = 0,
                    inject_nan_at_step: int | None = None, log: Callable[[str], None] = print) -> Callable:
  """steps.make_train_step (same arguments), its traced program read from / stored in the compile cache folder
  when JAX's persistent compilation cache is on."""
  from flanx.training import partitioning, steps  # pylint: disable=g-import-not-at-top
  jitted = steps.make_train_step(config, optimizer, shardings, loss_config, num_microbatches,
                                 dropout_seed=dropout_seed, inject_nan_at_step=inject_nan_at_step)
  directory = jax.config.jax_compilation_cache_dir  # set by compile_cache.enabled; None: the cache is off
  if not directory:
    return jitted
  try:
    key = fingerprint(('train_step', config, optimizer, shardings, loss_config, num_microbatches, dropout_seed,
                       inject_nan_at_step))
  except Unkeyable as e:
    log(f'Train step: traced at every start ({e}).')
    return jitted
  from flanx.training import cpu_dots  # pylint: disable=g-import-not-at-top
  replicated = partitioning.replicated(shardings.mesh)
  options = cpu_dots.for_mesh(shardings.mesh)  # as the traced step
  bare = steps.make_train_step(config, optimizer, shardings, loss_config, num_microbatches, dropout_seed=dropout_seed,
                               inject_nan_at_step=inject_nan_at_step, dot_options=False)  # what jax.export takes
  return CachedStep(bare, jitted, key, os.path.join(directory, FOLDER), (shardings.state, shardings.batch),
                    (shardings.state, replicated), log, options)


class CachedStep:
  """`step(state, batch)` run as the exported program of `jitted` for those arguments' shapes (read from
  `folder` when a start before stored it, else traced and stored); argument 0 is donated."""

  def __init__(self, bare: Callable, jitted: Callable, key: str, folder: str, in_shardings: Any, out_shardings: Any,
               log: Callable[[str], None], compiler_options: dict | None = None):
    # `bare`: the step jax.export traces (no compiler options); `jitted`: the same with them, run when export fails
    self._bare, self._jitted, self._key, self._folder, self.log = bare, jitted, key, folder, log
    self._compiler_options = compiler_options  # an exported program carries none: the compile of its call gets them
    self._in_shardings, self._out_shardings = in_shardings, out_shardings
    self._calls: dict[Any, Callable] = {}
    self._ahead: _Ahead | None = None

  def __call__(self, state: Any, batch: Any) -> Any:
    in_tree = jax.tree.structure((state, batch))
    # The state's shapes follow from its structure within a run (a mismatch would fail in exported.call, loudly);
    # the batch's are checked, as a different batch shape is a different program.
    signature = (in_tree, tuple((np.shape(x), x.dtype) for x in jax.tree.leaves(batch)))
    call = self._calls.get(signature)
    if call is None:
      avals = self._avals(state, batch)
      call = self._calls[signature] = self._take_ahead(in_tree, avals) or self._build(in_tree, avals)
    return call(state, batch)

  def compile_ahead(self, state: Any, batch: Any, context: Callable[[], Any]) -> None:
    """Starts reading the stored program for the abstract `state` and `batch` (sharded ShapeDtypeStructs) and
    loading its executable from the persistent cache in a background thread inside `context()` (the mesh and
    activation rules, which are thread-local), so that a restart's restore overlaps it; the first call whose
    arguments match takes the result. Nothing starts when no earlier start stored the program: a first start
    traces and compiles at its first step (in the background it gained nothing on 2 cores, where tracing holds the
    GIL the start-up needs). `wait()` ends it."""
    in_tree, avals = jax.tree.structure((state, batch)), self._avals(state, batch)
    if not _stored(self._path(in_tree, avals)):
      return
    self._ahead = _Ahead(in_tree, avals, lambda log: self._compile(in_tree, avals, log), context)

  def wait(self) -> None:
    """Waits for a compile started by compile_ahead (a run stopping before its first step)."""
    if self._ahead is not None:
      self._ahead.result()

  def _take_ahead(self, in_tree: Any, avals: list) -> Callable | None:
    """The program compile_ahead built for these arguments (waited for, as compile time), else None."""
    ahead, self._ahead = self._ahead, None
    if ahead is None:
      return None
    began = time.time()
    compiled, messages = ahead.result()
    waited = time.time() - began
    goodput.record_compile_wait(began, began + waited)
    for message in messages:
      self.log(message)
    if compiled is not None:
      self.log(f'Train step: compiled in the background during the restore ({ahead.seconds:.1f} s); the first step '
               f'waited {waited:.1f} s for it.')
    if (in_tree, avals) != (ahead.in_tree, ahead.avals):
      self.log('Train step: the arguments differ from the ones compiled ahead; compiling for them.')
      return None
    return compiled

  def _compile(self, in_tree: Any, avals: list, log: Callable[[str], None]) -> Callable:
    args = in_tree.unflatten(avals)
    return self._build(in_tree, avals, log).lower(*args).compile()

  def _avals(self, state: Any, batch: Any) -> list:
    abstract = lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s, weak_type=_weak(x))
    state_shardings, batch_sharding = self._in_shardings
    return jax.tree.leaves((jax.tree.map(abstract, state, state_shardings),
                            jax.tree.map(lambda x: abstract(x, batch_sharding), batch)))

  def _path(self, in_tree: Any, avals: list) -> str:
    key = hashlib.sha256((self._key + repr(in_tree) + repr(avals)).encode()).hexdigest()[:32]
    return f'{self._folder}/{key}.bin'

  def _build(self, in_tree: Any, avals: list, log: Callable[[str], None] | None = None) -> Callable:
    log = log or self.log
    path = self._path(in_tree, avals)
    stored = _read(path)
    if stored is not None:
      exported, out_tree = stored
      log(f'Train step: read its traced program from {path} (not traced).')
    else:
      try:
        exported, out_tree = _export(self._bare, in_tree, avals)
      except Exception as e:  # pylint: disable=broad-except  (e.g. a custom call jax.export does not take)
        log(f'Train step: traced at every start (jax.export refused it: {str(e).splitlines()[0][:200]}).')
        return self._jitted
      _write(path, exported, out_tree)
      log(f'Train step: traced; its program is kept in {path} for later starts.')
    call = lambda s, b: out_tree.unflatten(exported.call(*jax.tree.leaves((s, b))))
    return jax.jit(call, in_shardings=self._in_shardings, out_shardings=self._out_shardings, donate_argnums=0,
                   compiler_options=self._compiler_options)


def _weak(x: Any) -> bool:
  """Whether `x` (an array or a ShapeDtypeStruct) is weakly typed."""
  return bool(getattr(x, 'weak_type', getattr(getattr(x, 'aval', None), 'weak_type', False)))


class _Ahead:
  """`build(log)` running in a daemon thread inside `context()`; result() waits: (its value or None when it
  failed, the lines it logged, a failure's included)."""

  def __init__(self, in_tree: Any, avals: list, build: Callable[[Callable[[str], None]], Any],
               context: Callable[[], Any]):
    self.in_tree, self.avals, self._messages, self._value = in_tree, avals, [], None
    self.seconds = 0.0  # how long the build took

    def run():
      began = time.time()
      try:
        with context():
          self._value = build(self._messages.append)
      except Exception as e:  # pylint: disable=broad-except  (the first step then builds it again, and reports)
        self._messages.append(f'Train step: compiling ahead failed ({type(e).__name__}: '
                              f'{str(e).splitlines()[0][:200] if str(e) else ""}); compiling at the first step.')
      self.seconds = time.time() - began

    self._thread = threading.Thread(target=run, name='flanx-compile-ahead', daemon=True)
    self._thread.start()

  def result(self) -> tuple[Any, list[str]]:
    self._thread.join()
    return self._value, self._messages


def _export(jitted: Callable, in_tree: Any, avals: list) -> tuple[Any, Any]:
  """(jax.export.Exported of `jitted` on flat leaves, the results' tree): flat, so no pytree node of the train
  state (flax, optax and flanx classes) needs a serialization of its own."""
  out_trees = []

  def flat(*leaves):
    out = jitted(*in_tree.unflatten(leaves))
    out_leaves, out_tree = jax.tree.flatten(out)
    out_trees.append(out_tree)
    return out_leaves

  exported = jax.export.export(jax.jit(flat))(*avals)
  return exported, out_trees[-1]


def _stored(path: str) -> bool:
  """Whether a start stored an entry at `path` (not read: the background thread reads it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.exists(path)
  except tf.errors.OpError:  # an unreachable cache folder: the first step reads (or traces) as before
    return False


def _read(path: str) -> tuple[Any, Any] | None:
  """(Exported, results' tree) stored at `path`, or None when there is none or it cannot be read (traced again)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: local or gs://, like the compile cache)
  try:
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path, 'rb') as f:
      blob, out_tree = pickle.loads(f.read())  # the cache folder is trusted code already (compile_cache)
    return jax.export.deserialize(bytearray(blob)), out_tree
  except Exception:  # pylint: disable=broad-except  (a damaged or foreign entry is a miss, never a failed start)
    return None


def _write(path: str, exported: Any, out_tree: Any) -> None:
  """Stores the entry (first host; staged, then renamed, so a reader never sees half of one)."""
  from flanx.training import runtime  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not runtime.is_first_host():
    return
  try:
    tf.io.gfile.makedirs(os.path.dirname(path))
    staged = f'{path}.tmp{os.getpid()}'
    with tf.io.gfile.GFile(staged, 'wb') as f:
      f.write(pickle.dumps((bytes(exported.serialize()), out_tree)))
    tf.io.gfile.rename(staged, path, overwrite=True)
  except (OSError, tf.errors.OpError, pickle.PicklingError, TypeError):  # a full or read-only cache folder (or
    pass  # a results' tree that does not pickle): the next start traces again


class Unkeyable(ValueError):
  """A value the key cannot describe exactly (its program could depend on state the key does not see)."""


def fingerprint(value: Any) -> str:
  """A sha256 of `value` and of everything that decides the program traced from it (see the module doc)."""
  import gin  # pylint: disable=g-import-not-at-top
  # The run's folder is left out (so runs that differ in it alone share an entry); it is a path, not a number.
  gin_text = '\n'.join(line for line in gin.config_str().splitlines()
                        if not line.startswith(('MODEL_DIR = ', 'train.model_dir = ')))
  parts = [_describe(value, set()), gin_text, _jax_settings(), _versions(), _flanx_source_hash(),
           jax.default_backend(), repr([d.device_kind for d in jax.devices()]), str(jax.process_count())]
  return hashlib.sha256('\x00'.join(parts).encode()).hexdigest()


def _jax_settings() -> str:
  return repr(sorted((k, repr(v)) for k, v in jax.config.values.items() if 'cache' not in k and 'log' not in k))


@functools.cache
def _versions() -> str:
  found = []
  for name in _VERSIONED.values():
    try:
      found.append(f'{name}={importlib.metadata.version(name)}')
    except importlib.metadata.PackageNotFoundError:
      found.append(f'{name}=-')
  return f'python={sys.version};' + ';'.join(found)


@functools.cache
def _flanx_source_hash() -> str:
  digest = hashlib.sha256()
  for path in sorted(_FLANX.rglob('*.py')):
    digest.update(str(path.relative_to(_FLANX)).encode() + b'\x00' + path.read_bytes())
  return digest.hexdigest()


@functools.cache
def _file_hash(path: str) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _covered(module: str | None) -> bool:
  """Whether a module's code is pinned by the key already (flanx's source hash, or a package version)."""
  top = (module or '').split('.')[0]
  return top in ('flanx', 'builtins', 'math', 'operator', 'functools') or top in _VERSIONED


def _code_of(obj: Any) -> str:
  """Where a function or class comes from; for one outside flanx and the versioned packages, its file's hash."""
  module = getattr(obj, '__module__', None)
  name = f'{module}.{getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))}'
  if _covered(module):
    return name
  try:
    return f'{name}@{_file_hash(inspect.getsourcefile(obj))}'
  except (TypeError, OSError) as e:
    raise Unkeyable(f'cannot key {name}: its source is not a file') from e


def _describe(x: Any, seen: set) -> str:
  """A text that differs whenever `x` could trace to a different program."""
  if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
    return f'{type(x).__name__}:{x!r}'
  if isinstance(x, enum.Enum):
    return f'{_code_of(type(x))}.{x.name}'
  if isinstance(x, np.dtype):
    return f'dtype:{np.dtype(x)}'
  if isinstance(x, (np.ndarray, np.generic, jax.Array)):
    try:
      a = np.asarray(x)
    except Exception as e:  # pylint: disable=broad-except  (e.g. an array spread over several hosts)
      raise Unkeyable(f'cannot read a {type(x).__name__} of shape {np.shape(x)}') from e
    return f'array:{a.dtype}{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}'
  if id(x) in seen:
    return 'cycle'
  seen = seen | {id(x)}
  describe = lambda v: _describe(v, seen)
  if isinstance(x, jax.sharding.Mesh):
    return f'mesh:{x.axis_names}{tuple(x.devices.shape)}{[d.id for d in x.devices.flat]}{getattr(x, "axis_types", "")}'
  if isinstance(x, (jax.sharding.Sharding, jax.sharding.PartitionSpec)):
    return f'{type(x).__name__}:{x!r}'
  if isinstance(x, (tuple, list)):
    return f'{_code_of(type(x))}[{",".join(map(describe, x))}]'
  if isinstance(x, dict):
    return f'{_code_of(type(x))}{{{",".join(describe(k) + ":" + describe(v) for k, v in x.items())}}}'
  if isinstance(x, type):
    return _code_of(x)
  if dataclasses.is_dataclass(x):
    fields = ','.join(f'{f.name}={describe(getattr(x, f.name))}' for f in dataclasses.fields(x))
    return f'{_code_of(type(x))}({fields})'
  if isinstance(x, functools.partial):
    return f'partial({describe(x.func)},{describe(x.args)},{describe(x.keywords)})'
  if isinstance(x, types.MethodType):
    return f'method({describe(x.__self__)}.{describe(x.__func__)})'
  if isinstance(x, types.FunctionType):
    return _describe_function(x, seen)
  if isinstance(x, np.ufunc):
    return f'ufunc:{x.__name__}'
  if isinstance(x, types.ModuleType):
    return f'module:{x.__name__}'
  if isinstance(x, types.BuiltinFunctionType):
    return _code_of(x)
  if callable(x) and hasattr(x, '__wrapped__'):  # jax.jit, custom_jvp, functools.wraps: what they wrap
    return f'{_code_of(type(x))}({describe(x.__wrapped__)})'
  raise Unkeyable(f'cannot key a {type(x).__module__}.{type(x).__qualname__}')


def _describe_function(fn: types.FunctionType, seen: set) -> str:
  """Its code (by name where pinned, else its file's hash and its bytecode), the values its closure holds, its
  defaults, and the globals it reads that are data (or functions outside the pinned code)."""
  describe = lambda v: _describe(v, seen)
  parts = [_code_of(fn), describe(fn.__defaults__), describe(fn.__kwdefaults__)]
  parts += [describe(cell.cell_contents) if _filled(cell) else 'empty' for cell in fn.__closure__ or ()]
  if not _covered(fn.__module__):
    parts.append(_describe_code(fn.__code__))
    for name in _global_names(fn.__code__):
      if name in fn.__globals__ and not isinstance(fn.__globals__[name], types.ModuleType):
        parts.append(f'{name}={describe(fn.__globals__[name])}')
  return f'function({";".join(parts)})'


def _filled(cell: types.CellType) -> bool:
  try:
    cell.cell_contents  # pylint: disable=pointless-statement
    return True
  except ValueError:
    return False


def _describe_code(code: types.CodeType) -> str:
  consts = [_describe_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
  return f'code({code.co_code.hex()};{consts};{code.co_names})'


def _global_names(code: types.CodeType) -> set[str]:
  names = set(code.co_names)
  for const in code.co_consts:
    if isinstance(const, types.CodeType):
      names |= _global_names(const)
  return names
