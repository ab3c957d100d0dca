"""Device mesh, shardings and global arrays.

One mesh axis, ``"data"``, spans every device of every process. Batches are
split along it (data parallelism). Parameters and optimiser state are
replicated by default; with ``config.parallel.fsdp = True`` every array with
at least ``fsdp_min_size`` elements is sharded along its largest dimension
divisible by the device count (FSDP/ZeRO-3 style: XLA inserts the
all-gathers and reduce-scatters). Everything goes through ``jax.jit`` with
``NamedSharding`` in/out shardings (the modern form of ``pjit``).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from maskssl.config_utils import ConfigError

DATA_AXIS = "data"


def cpu_device_count(setting: Any, batch_sizes=(), cores: int = 1) -> int:
  """The device count :func:`configure_cpu_devices` sets (1 = leave as is)."""
  if setting in (None, "", "off", "none", "0", 0, False):
    return 1
  if str(setting) != "auto":
    n = int(setting)
    if n < 1:
      raise ValueError(f"cpu_devices must be 'auto', 'off' or >= 1, got {setting!r}")
    return n
  n = max(1, int(cores))
  sizes = [int(b) for b in batch_sizes if b]
  while n > 1 and any(b % n for b in sizes):
    n -= 1
  return n


CPU_COLLECTIVE_TIMEOUT_S = 3600


def configure_cpu_devices(setting: Any = "auto", batch_sizes=()) -> Any:
  """Split the host CPU into ``n`` XLA:CPU devices (data parallel).

  For the small matmuls of these models one single-threaded device per core
  (the batch split across them by the ``data`` mesh axis) runs faster than
  one device with intra-op threads: the SMA particle step goes from ~300
  to ~255 ms on 2 cores (``benchmarks/sma_throughput.py --cpu_devices``).

  ``setting``: ``"auto"`` (one device per available core, reduced to the
  largest count that divides every size in ``batch_sizes``), an integer, or
  ``"off"``/``0``/``None`` (leave JAX's default: one CPU device). Nothing is
  changed when ``XLA_FLAGS`` already sets
  ``--xla_force_host_platform_device_count`` (tests, launch scripts). Only
  affects the CPU backend (GPU/TPU runs are unchanged). Must be called
  before any JAX backend is initialised; returns the count set, or None.
  """
  import os
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS",
                                                               ""):
    return None
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  n = cpu_device_count(setting, batch_sizes, cores)
  if n <= 1:
    return None
  # XLA:CPU aborts the process when one device thread reaches a collective
  # 40 s after the others, which happens on an oversubscribed host (seen
  # here: a nice'd 6,000-step run killed at step 4,300). Waiting is right.
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_collective_call_terminate_timeout_seconds" not in flags:
    os.environ["XLA_FLAGS"] = (
        flags + f" --xla_cpu_collective_call_terminate_timeout_seconds="
        f"{CPU_COLLECTIVE_TIMEOUT_S}").strip()
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError as e:  # backend already initialised
    if str(setting) == "auto":
      import logging
      logging.warning("cpu_devices=auto ignored: %s", e)
      return None
    raise RuntimeError(
        f"cannot set {n} CPU devices: the JAX backend is already "
        f"initialised ({e}); call configure_cpu_devices first") from e
  return n


def make_mesh(devices=None) -> Mesh:
  """A 1-D data mesh over all devices (explicit ``axis_types``)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size"):
  """Clear error when the global batch does not split over the devices."""
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    raise ConfigError(
        f"config.{what}={batch_size} is not divisible by the {n} devices of "
        f"the mesh; use a multiple of {n} (e.g. --config.{what}="
        f"{max(n, (batch_size // n) * n or n)})")


def _fsdp_spec(shape, n: int, min_size: int) -> P:
  if int(np.prod(shape, dtype=np.int64)) < min_size or not shape:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % n == 0:
      spec = [None] * len(shape)
      spec[d] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, fsdp: bool = False,
                    fsdp_min_size: int = 2 ** 14) -> Any:
  """NamedShardings for a train-state pytree of ``ShapeDtypeStruct``s."""
  n = mesh.devices.size

  def one(x):
    if not fsdp or not hasattr(x, "shape"):
      return replicated(mesh)
    return NamedSharding(mesh, _fsdp_spec(tuple(x.shape), n, fsdp_min_size))

  return jax.tree.map(one, abstract_state)


def global_batch(host_batch: dict, mesh: Mesh) -> dict:
  """Per-process numpy batch -> global ``jax.Array``s sharded on ``data``."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}
