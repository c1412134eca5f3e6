"""The run folder's exclusive lease: one holder at a time, named when refusing; explicit stale takeover."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from flanx.training import run_lease

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_lease(run_dir: pathlib.Path, host: str, pid: int, heartbeat: float, token: str = 'x') -> None:
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / run_lease.LEASE_FILE).write_text(json.dumps(
      {'host': host, 'pid': pid, 'started': '2026-01-02T03:04:05+00:00', 'heartbeat': heartbeat, 'token': token}))


def test_second_lease_is_refused_naming_the_holder(tmp_path):
  with run_lease.RunLease(str(tmp_path / 'run')).acquire():
    with pytest.raises(run_lease.LeaseHeldError) as info:
      run_lease.RunLease(str(tmp_path / 'run')).acquire(take_over_stale=True)  # fresh: never taken over
  message = str(info.value)
  assert f'host {socket.gethostname()}' in message and f'pid {os.getpid()}' in message and 'started 20' in message
  assert 'run_lease.json' in message


def test_release_frees_the_folder(tmp_path):
  lease = run_lease.RunLease(str(tmp_path)).acquire()
  holder = lease.holder()
  assert holder.pid == os.getpid() and holder.host == socket.gethostname()
  lease.release()
  assert not (tmp_path / run_lease.LEASE_FILE).exists()
  with run_lease.RunLease(str(tmp_path)).acquire() as again:
    assert again.took_over is None


def test_stale_lease_is_taken_over_only_when_asked(tmp_path):
  write_lease(tmp_path, 'other-host', 4242, heartbeat=time.time() - 3600)
  lease = run_lease.RunLease(str(tmp_path), stale_after_seconds=600, takeover_hint='--gin.X=True')
  with pytest.raises(run_lease.LeaseHeldError, match=r'stale lease.*host other-host, pid 4242.*--gin.X=True'):
    lease.acquire()
  assert json.loads((tmp_path / run_lease.LEASE_FILE).read_text())['host'] == 'other-host'  # untouched
  lease.acquire(take_over_stale=True)
  assert lease.took_over.host == 'other-host'
  assert lease.holder().pid == os.getpid()
  lease.release()


def test_unreadable_lease_counts_as_stale(tmp_path):
  (tmp_path / run_lease.LEASE_FILE).write_bytes(b'\x00garbage')
  with pytest.raises(run_lease.LeaseHeldError, match='unreadable'):
    run_lease.RunLease(str(tmp_path)).acquire()
  run_lease.RunLease(str(tmp_path)).acquire(take_over_stale=True).release()


def test_lease_of_a_dead_process_on_this_host_is_replaced(tmp_path):
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
  write_lease(tmp_path, socket.gethostname(), int(dead.stdout), heartbeat=time.time())
  with run_lease.RunLease(str(tmp_path)).acquire() as lease:
    assert lease.took_over.pid == int(dead.stdout)


def test_heartbeat_refreshes_and_notices_a_takeover(tmp_path):
  lease = run_lease.RunLease(str(tmp_path), heartbeat_seconds=0.05).acquire()
  first = lease.holder().heartbeat
  time.sleep(0.5)
  assert lease.holder().heartbeat > first and not lease.lost()
  write_lease(tmp_path, 'other-host', 1, heartbeat=time.time(), token='thief')  # someone took it over
  deadline = time.time() + 10
  while not lease.lost() and time.time() < deadline:
    time.sleep(0.05)
  assert lease.lost()
  lease.release()  # must not delete the other holder's lease
  assert lease.holder().token == 'thief'


_RACER = '''
import os, sys, time
from flanx.training import run_lease
while not os.path.exists(sys.argv[2]):
  time.sleep(0.001)
try:
  lease = run_lease.RunLease(sys.argv[1]).acquire()
  print('won', flush=True)
  time.sleep(2)
  lease.release()
except run_lease.LeaseHeldError as e:
  print('refused', e, flush=True)
'''


@pytest.mark.slow
def test_processes_started_together_exactly_one_wins(tmp_path):
  go = tmp_path / 'go'
  env = dict(os.environ, PYTHONPATH=str(REPO))
  racers = [subprocess.Popen([sys.executable, '-c', _RACER, str(tmp_path / 'run'), str(go)], env=env,
                             stdout=subprocess.PIPE, text=True) for _ in range(4)]
  time.sleep(3)  # let every racer import and start polling
  go.touch()
  outputs = [p.communicate(timeout=120)[0] for p in racers]
  assert sorted(o.split()[0] for o in outputs) == ['refused'] * 3 + ['won'], outputs
  assert all('is in use' in o for o in outputs if o.startswith('refused'))
