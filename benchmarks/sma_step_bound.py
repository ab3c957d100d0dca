"""Lower bound on the SMA particle step time on this CPU; prints JSON.

    python benchmarks/sma_step_bound.py [--batch 256] [--reps 5]
        [--cpu_devices auto]

Times the real train step of ``benchmarks/sma_throughput.py`` (same config,
sharding, donation) next to copies of it with parts of the model replaced
by the identity. These copies compute the wrong function: they exist to show
how much of the step each part costs and what is left when it is gone.

* ``full``: the real step;
* ``no_attention``: the attention core (logits, softmax, P.V and the
  head split / merge) replaced by ``o = V`` in every layer;
* ``dense_only``: additionally no LayerNorm normalisation and no GELU, so
  what is left is the projections / MLP matmuls (and the optimizer update,
  the mask path's projections, gathers and the loss).

``dense_only`` is a floor for any implementation of this model on XLA:CPU
(its matmuls are the model's), so comparing it with the 1,200 ex/s target
(213 ms per step at batch 256) shows how much time the target leaves for
attention, softmax, LayerNorm and GELU.

Measured 2026-12-01, idle 2-core AMD EPYC, jax 0.10.2, batch 256, 2 CPU
devices (the config's default), three runs of 4 x 10 steps, best step:
  full          257-266 ms  (21.5 GFLOP;  962-996 ex/s)
  no_attention  191-197 ms  (19.7 GFLOP)
  dense_only    147-154 ms  (19.2 GFLOP, 125-130 GFLOP/s)
So attention costs ~65 ms of the step and LayerNorm + GELU ~45 ms. The
1,200 ex/s target (213 ms) leaves ~60 ms for them: they would have to get
~45 % cheaper than XLA:CPU runs them in every formulation tried (see
sma_throughput.py for the list).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import flax.linen as nn
import jax

import harness  # noqa: E402  (benchmarks/; sets sys.path for maskssl)
from sma_throughput import (  # noqa: E402
    compile_step, particle_batch, particle_config, time_steps)


def _interceptor(variant):
  """A ``flax.linen.intercept_methods`` interceptor that replaces parts of
  the model by the identity (the model's code is not touched):
  ``SMALayer.attend`` -> ``V`` (one row per query); for ``dense_only`` also
  ``Norm`` -> its affine part only and the MLP's GELU -> identity."""
  from maskssl.models.sma import Norm, SMALayer

  def intercept(next_fun, args, kwargs, context):
    m, name = context.module, context.method_name
    if isinstance(m, SMALayer) and name == "attend":
      q, kv = args[0], args[1]
      return kv[1][:, :q.shape[-2]]
    if variant == "dense_only" and isinstance(m, Norm) and name == "__call__":
      x, d = args[0], args[0].shape[-1]
      affine = args[1] if len(args) > 1 else kwargs.get("affine", True)
      scale = m.param("scale", nn.initializers.ones, (d,))
      bias = m.param("bias", nn.initializers.zeros, (d,))
      return (x * scale + bias).astype(m.dtype) if affine else \
          (x.astype(m.dtype), (scale, bias))
    if variant == "dense_only" and isinstance(m, SMALayer) and name == "mlp":
      xhat, ln = args
      return m.mlp_out(m.mlp_in(xhat, ln))
    return next_fun(*args, **kwargs)
  return intercept


def time_variant(variant, batch_size, reps, steps):
  from maskssl.methods.sma import SMA
  if variant == "full":
    v = compile_step(SMA(particle_config(batch_size)),
                     particle_batch(batch_size))
  else:
    with nn.intercept_methods(_interceptor(variant)):
      v = compile_step(SMA(particle_config(batch_size)),
                       particle_batch(batch_size))
  for _ in range(reps):
    time_steps(v, steps)
  gflop = v["flops"] * v["devices"] / 1e9
  best = min(v["wall"])
  return dict(variant=variant, step_ms_best=1e3 * best,
              step_ms_median=1e3 * statistics.median(v["wall"]),
              examples_per_s_best=batch_size / best, step_gflop=gflop,
              gflop_per_s=gflop / best, devices=v["devices"])


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--steps", type=int, default=10)
  harness.add_device_flag(p, default="auto")
  args = p.parse_args()
  harness.setup_devices(args.cpu_devices, [args.batch])
  results = [time_variant(name, args.batch, args.reps, args.steps)
             for name in ("full", "no_attention", "dense_only")]
  env = dict(jax=jax.__version__, cpus=len(os.sched_getaffinity(0)),
             load_avg=os.getloadavg(), batch=args.batch,
             target_step_ms=1e3 * args.batch / 1200)
  print(json.dumps(dict(env=env, results=results), indent=1))


if __name__ == "__main__":
  main()
