"""Shared benchmark plumbing: CPU device setup and the sharded train step.

The benchmarks time the train step the way ``python -m maskssl.main`` runs
it: the same :func:`maskssl.parallel.configure_cpu_devices` device setup
(one XLA:CPU device per core by default), a data-parallel mesh, the state
initialised into its shardings, the batch placed with ``NamedSharding`` and
one jitted, donated step.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskssl import parallel  # noqa: E402


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


def sharded_step(method, batch, step_fn, seed: int = 0):
  """Compile ``step_fn(state, batch) -> (state, metrics)`` data-parallel.

  Returns a dict with ``compiled``, ``state``, ``batch`` (placed),
  ``compile_s``, ``flops`` (whole step, all devices) and ``devices``."""
  import jax
  mesh = parallel.make_mesh()
  data = parallel.batch_sharding(mesh)
  batch = jax.device_put(batch, data)
  rng = jax.random.PRNGKey(seed)
  abstract = jax.eval_shape(method.init_state, rng, batch)
  shardings = parallel.state_shardings(abstract, mesh)
  state = jax.jit(method.init_state, out_shardings=shardings)(rng, batch)
  jstep = jax.jit(step_fn, donate_argnums=0, in_shardings=(shardings, data),
                  out_shardings=(shardings, parallel.replicated(mesh)))
  t0 = time.perf_counter()
  compiled = jstep.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  return dict(compiled=compiled, state=state, batch=batch,
              compile_s=compile_s, flops=flops_of(compiled),
              devices=mesh.devices.size)


def rng_step(method_step, seed: int = 1):
  """Adapt ``train_step(state, batch, rng)`` to ``(state, batch)`` with the
  rng folded from ``state['step']`` (as the trainer does)."""
  import jax
  base = jax.random.PRNGKey(seed)

  def step(state, batch):
    return method_step(state, batch, jax.random.fold_in(base, state["step"]))
  return step
