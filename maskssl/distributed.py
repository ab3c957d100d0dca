"""Multi-host start-up through JAX's own distributed runtime.

* :func:`initialize` calls ``jax.distributed.initialize`` from flags, env or
  auto-detection (Cloud TPU, SLURM), with gloo CPU collectives and bounded
  failure detection: if a peer process dies, the coordination service stops
  receiving its heartbeats and, after ``heartbeat_timeout`` seconds, every
  surviving process is terminated with a non-zero status and an error naming
  the missing task (instead of hanging in a collective forever).
* :func:`any_process` is the cheap agreement used by the train loop so that
  all processes stop (and save) at the same step after a SIGTERM that
  reached only some of them.
"""
from __future__ import annotations

import logging
import os
import sys

import jax
import numpy as np

DEFAULT_HEARTBEAT_TIMEOUT = 60
PEER_FAILED_EXIT_CODE = 3


def initialize(coordinator_address=None, num_processes=None, process_id=None,
               heartbeat_timeout: int | None = None,
               initialization_timeout: int | None = None):
  """``jax.distributed.initialize`` from flags, else env, else auto-detect.

  Env fallbacks: MASKSSL_COORDINATOR, MASKSSL_NUM_PROCESSES,
  MASKSSL_PROCESS_ID, MASKSSL_HEARTBEAT_TIMEOUT (seconds, default 60),
  MASKSSL_INIT_TIMEOUT (seconds, default 300). With no coordinator given,
  JAX auto-detects Cloud TPU and SLURM.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("MASKSSL_COORDINATOR")
  if num_processes is None and "MASKSSL_NUM_PROCESSES" in env:
    num_processes = int(env["MASKSSL_NUM_PROCESSES"])
  if process_id is None and "MASKSSL_PROCESS_ID" in env:
    process_id = int(env["MASKSSL_PROCESS_ID"])
  if heartbeat_timeout is None:
    heartbeat_timeout = int(env.get("MASKSSL_HEARTBEAT_TIMEOUT",
                                    DEFAULT_HEARTBEAT_TIMEOUT))
  if initialization_timeout is None:
    initialization_timeout = int(env.get("MASKSSL_INIT_TIMEOUT", 300))
  # CPU collectives across processes need gloo (harmless on GPU/TPU, where
  # the accelerator's own collectives are used). Must precede initialize.
  if not env.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = dict(heartbeat_timeout_seconds=int(heartbeat_timeout),
                initialization_timeout=int(initialization_timeout))
  if coordinator_address:
    kwargs.update(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d local / %d global "
               "devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def any_process(flag: bool) -> bool:
  """True if ``flag`` is true on any process (a collective: every process
  must call it at the same point). Single-process: returns ``flag``."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.int32(bool(flag)))
  return bool(np.asarray(flags).max())


def is_peer_failure(exc: BaseException) -> bool:
  """A runtime error raised by a cross-process collective in a multi-process
  run (gloo/NCCL connection closed, coordination-service error): the usual
  sign that another process died."""
  return (jax.process_count() > 1
          and isinstance(exc, jax.errors.JaxRuntimeError))


def exit_peer_failure(exc: BaseException):
  """Print a clear error and leave at once with ``PEER_FAILED_EXIT_CODE``,
  without waiting for the distributed runtime's shutdown barrier (which
  would wait for the dead peer)."""
  first = (str(exc).strip().splitlines() or [""])[0][:300]
  print(f"error: process {jax.process_index()} of {jax.process_count()}: a "
        f"collective with the other processes failed ({type(exc).__name__}: "
        f"{first}). Another process of this run probably died or was "
        "killed; see its log. Exiting; rerun the same command on all "
        "processes to resume from the last checkpoint.",
        file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(PEER_FAILED_EXIT_CODE)
