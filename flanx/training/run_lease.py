"""An exclusive lease on a run folder (MODEL_DIR), so two trainers never write into the same run.

The lease is one small JSON object, MODEL_DIR/run_lease.json, created with a conditional write that succeeds
only if the object does not exist yet (tensorstore's `if_equal`: on local disks a lock-protected create, on
gs:// an `ifGenerationMatch=0` precondition), so of two trainers started together exactly one wins. The holder
rewrites it every `heartbeat_seconds` (again conditionally: only while it still holds it) and deletes it when
it stops. A lease whose heartbeat is older than `stale_after_seconds` is stale (its holder crashed or hangs);
it is taken over only when asked (`take_over_stale=True`), except when its holder provably died: a process on
this same host whose pid no longer runs (the usual kill -9 and restart on one machine).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import threading
import time
import uuid

LEASE_FILE = 'run_lease.json'
_HELD_HERE: set[str] = set()  # tokens of the leases this process holds


class LeaseHeldError(RuntimeError):
  """Another process holds the run folder's lease."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lease, as written in the lease file."""
  host: str
  pid: int
  started: str  # ISO 8601, UTC
  heartbeat: float  # seconds since the epoch
  token: str

  def describe(self, now: float | None = None) -> str:
    """'host H, pid P, started T, last heartbeat N s ago'."""
    age = (time.time() if now is None else now) - self.heartbeat
    return f'host {self.host}, pid {self.pid}, started {self.started}, last heartbeat {age:.0f} s ago'


def _kvstore_url(run_dir: str) -> str:
  if '://' in run_dir:
    return run_dir.rstrip('/') + '/'
  return 'file://' + os.path.abspath(run_dir) + '/'


def pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


class RunLease:
  """Holds MODEL_DIR/run_lease.json while a trainer runs; see the module doc."""

  def __init__(self, run_dir: str, *, heartbeat_seconds: float = 30.0, stale_after_seconds: float = 300.0,
               takeover_hint: str = 'take_over_stale=True'):
    import tensorstore as ts  # local files and gs:// with the same conditional-write semantics
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, LEASE_FILE)
    self.heartbeat_seconds = heartbeat_seconds
    self.stale_after_seconds = stale_after_seconds
    self._takeover_hint = takeover_hint
    self._kv = ts.KvStore.open(_kvstore_url(run_dir)).result()
    self._token = uuid.uuid4().hex
    self._started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    self._generation: bytes | None = None
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._lost = threading.Event()
    self._thread: threading.Thread | None = None
    self.took_over: Holder | None = None  # the holder replaced on acquire, if any

  def holder(self) -> Holder | None:
    """The current holder (None when the folder is free); raises LeaseHeldError if the file is unreadable."""
    return self._read()[1]

  def _read(self) -> tuple[bytes, Holder | None]:
    result = self._kv.read(LEASE_FILE).result()
    if result.state == 'missing':
      return result.stamp.generation, None
    try:
      fields = json.loads(result.value)
      holder = Holder(str(fields['host']), int(fields['pid']), str(fields['started']), float(fields['heartbeat']),
                      str(fields['token']))
    except (ValueError, KeyError, TypeError):
      # An unreadable lease counts as held by an unknown, long-silent holder: taken over only when asked.
      holder = Holder('unknown (unreadable lease file)', -1, 'unknown', 0.0, '')
    return result.stamp.generation, holder

  def _payload(self) -> bytes:
    return json.dumps({'host': socket.gethostname(), 'pid': os.getpid(), 'started': self._started,
                       'heartbeat': time.time(), 'token': self._token}).encode()

  def _provably_dead(self, holder: Holder) -> bool:
    """A holder on this host whose process is gone (or whose pid is ours: an earlier life of this container)."""
    if holder.host != socket.gethostname() or holder.pid <= 0 or holder.token in _HELD_HERE:
      return False
    return holder.pid == os.getpid() or not pid_running(holder.pid)

  def acquire(self, take_over_stale: bool = False) -> 'RunLease':
    """Takes the lease (and starts the heartbeat) or raises LeaseHeldError naming the holder."""
    for _ in range(5):  # re-read after losing a race, to name the winner
      generation, holder = self._read()
      if holder is not None:
        now = time.time()
        stale = now - holder.heartbeat > self.stale_after_seconds
        if not self._provably_dead(holder) and not (stale and take_over_stale):
          hint = (f'. If that run is gone, take over its lease with {self._takeover_hint}' if stale else
                  '. Stop that run first (or use another MODEL_DIR)')
          state = 'stale ' if stale else ''
          raise LeaseHeldError(f'{self.run_dir} is in use: its {state}lease {self.path} is held by '
                               f'{holder.describe(now)}{hint}.')
      new = self._kv.write(LEASE_FILE, self._payload(), if_equal=generation).result()
      if new.generation:
        self._generation = new.generation
        self.took_over = holder
        _HELD_HERE.add(self._token)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name='run_lease_heartbeat', daemon=True)
        self._thread.start()
        return self
    raise LeaseHeldError(f'{self.run_dir}: could not take the lease {self.path} (other processes keep changing it)')

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      self.heartbeat()

  def heartbeat(self) -> bool:
    """Refreshes the lease; False (and `lost()` set) if someone else took it over."""
    with self._lock:
      if self._generation is None or self._lost.is_set():
        return False
      try:
        new = self._kv.write(LEASE_FILE, self._payload(), if_equal=self._generation).result()
      except Exception:  # pylint: disable=broad-except
        return True  # a transient storage error: try again at the next beat
      if not new.generation:
        self._lost.set()
        return False
      self._generation = new.generation
      return True

  def lost(self) -> bool:
    """Whether another process took the lease over while this one held it."""
    return self._lost.is_set()

  def release(self) -> None:
    """Stops the heartbeat and deletes the lease (only if it is still this process's)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    with self._lock:
      if self._generation is not None and not self._lost.is_set():
        self._kv.write(LEASE_FILE, None, if_equal=self._generation).result()
      self._generation = None
      _HELD_HERE.discard(self._token)

  def __enter__(self) -> 'RunLease':
    return self

  def __exit__(self, *exc) -> None:
    self.release()
