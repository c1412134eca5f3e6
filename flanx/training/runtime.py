"""Process-level concerns: multi-host start-up, preemption signals, and first-host-only output."""

from __future__ import annotations

import os
import signal
import threading

import jax

from flanx.training import stop_signal


def initialize_distributed(coordinator_address: str | None = None, process_count: int | None = None,
                           process_index: int | None = None, initialization_timeout: int = 300) -> None:
  """Starts JAX's multi-host runtime: explicit (GPU clusters, CPU tests) or automatic (TPU VM pods)."""
  if coordinator_address:
    if os.environ.get('JAX_PLATFORMS', '').startswith('cpu'):
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=process_count,
                               process_id=process_index, initialization_timeout=initialization_timeout)
  elif os.environ.get('TPU_WORKER_HOSTNAMES', 'localhost') not in ('', 'localhost') or 'MEGASCALE_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize()  # TPU VM pod slice: every worker finds its peers from the environment


def is_first_host() -> bool:
  """Only process 0 prints and writes logs."""
  return jax.process_index() == 0


class PreemptionFlag:
  """Set by SIGTERM (TPU maintenance / spot preemption); the train loop checkpoints and exits 0."""

  def __init__(self):
    self._previous = None

  def install(self) -> 'PreemptionFlag':
    """Installs the SIGTERM handler (main thread only); a SIGTERM caught earlier (stop_signal) still counts."""
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.getsignal(signal.SIGTERM)
      stop_signal.install()
    return self

  def uninstall(self) -> None:
    """Restores the previous SIGTERM handler."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def is_set(self) -> bool:
    """Whether any process received SIGTERM (agreed across hosts so all of them save together)."""
    stop_signal.raise_if_aborted()  # a second Ctrl-C whose KeyboardInterrupt was swallowed still aborts
    local = stop_signal.requested()
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils
    import numpy as np
    return bool(np.any(multihost_utils.process_allgather(np.array([local]))))
