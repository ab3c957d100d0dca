"""Shared benchmark plumbing: CPU device setup and the sharded train step.

The benchmarks time the train step the way ``python -m maskssl.main`` runs
it: the same :func:`maskssl.parallel.configure_cpu_devices` device setup
(one XLA:CPU device per core by default), a data-parallel mesh, the state
initialised into its shardings, the batch placed with ``NamedSharding`` and
one jitted, donated step.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  (importing does not start a backend)

from maskssl import parallel, train  # noqa: E402


def add_device_flag(parser, default="off"):
  """``default`` should be what the method's config sets as
  ``cpu_devices`` (the main command's default)."""
  parser.add_argument(
      "--cpu_devices", default=default,
      help="XLA:CPU devices: 'auto' (one per core), an integer, or 'off' "
           f"(one device, intra-op threads); default {default!r} as in the "
           "method's config")


def setup_devices(setting, batch_sizes=()):
  """Call before anything touches a JAX backend; returns the device count
  requested (None when left to JAX)."""
  return parallel.configure_cpu_devices(setting, batch_sizes)


def flops_of(compiled) -> float:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", float("nan")))


def sharded_step(method, batch, train_step=None, seed: int = 0):
  """Init and compile the trainer's step (:func:`maskssl.train.init_state`,
  :func:`maskssl.train.make_step_fn`) on a data-parallel mesh.

  ``train_step(state, batch, rng)`` defaults to ``method.train_step``.
  Returns a dict with ``compiled`` (``(state, batch) -> (state, metrics)``),
  ``state``, ``batch`` (placed), ``compile_s``, ``flops`` (per device
  program) and ``devices``."""
  mesh = parallel.make_mesh()
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  lc = train.LoopConfig(batch_size=len(next(iter(batch.values()))),
                        total_steps=1, seed=seed)
  state, shardings = train.init_state(method, batch, lc, mesh)
  jstep = train.make_step_fn(method, seed, shardings, mesh, train_step)
  t0 = time.perf_counter()
  compiled = jstep.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  return dict(compiled=compiled, state=state, batch=batch,
              compile_s=compile_s, flops=flops_of(compiled),
              devices=mesh.devices.size)


def emit_json(res: dict, out: str = "", indent: int = 1) -> str:
  """Print ``res`` as JSON and, with ``out``, write it there too."""
  text = json.dumps(res, indent=indent)
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")
  return text
