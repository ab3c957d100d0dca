"""Multi-host start-up through JAX's own distributed runtime."""
from __future__ import annotations

import os

import jax


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """``jax.distributed.initialize`` from flags, else env, else auto-detect.

  Env fallbacks: MASKSSL_COORDINATOR, MASKSSL_NUM_PROCESSES,
  MASKSSL_PROCESS_ID. With none given, JAX auto-detects Cloud TPU and SLURM.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("MASKSSL_COORDINATOR")
  if num_processes is None and "MASKSSL_NUM_PROCESSES" in env:
    num_processes = int(env["MASKSSL_NUM_PROCESSES"])
  if process_id is None and "MASKSSL_PROCESS_ID" in env:
    process_id = int(env["MASKSSL_PROCESS_ID"])
  kwargs = {}
  if coordinator_address:
    kwargs.update(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kwargs)
