"""SMA pretraining throughput on the particle (HIGGS) config; prints JSON.

    python benchmarks/sma_throughput.py [--batch 256] [--steps 30] [--reps 5]
        [--compact 1] [--dtype float32] [--gather auto] [--variants]

Measures, for batch 256 of the particle model (E = D = 128, layer 1 + 4
self-attention layers, 8 heads, widening 1, decoder 128-d with 1 head, N = 28,
C_in = 1, r = 0.2, k = 3, random_mix, mask_self, curriculum on):

* compile time of the jitted, donated train step (lower + compile);
* pretraining examples/s (best and median over ``--reps`` timed runs of
  ``--steps`` steps each, one host sync per run);
* the same step fed a precomputed mask (no mask generation), timed
  interleaved with the real step, and the share of step time spent in mask
  generation, ``1 - t_precomputed / t_generated`` (wall and process CPU time);
* process CPU time per step (``time.process_time``): on a machine shared with
  other jobs the wall-clock numbers are dominated by the load, the CPU time
  is the work this step needs;
* FLOPs of one step from ``compile().cost_analysis()`` and achieved GFLOP/s.

The machine may be shared: look at ``load_avg`` and ``cpus`` in the output.
``--cpu_devices`` (default ``auto``, as configs/sma_particle.py sets it)
splits the CPU into one XLA:CPU device per core and shards the batch, the
way ``python -m maskssl.main`` runs this config.

Measured 2026-12-01, idle 2-core AMD EPYC (AVX-512; a 5888x128x384 matmul
runs at ~190 GFLOP/s on both cores), jax 0.10.2, float32, batch 256:
  2 devices (default): 1,020 ex/s best, 251 ms/step, 21.5 GFLOP/step
    (86 GFLOP/s, ~45 % of the matmul peak), compile 5.5 s;
  1 device (--cpu_devices=off): 935 ex/s, 274 ms/step;
  mask generation: 2.7 % of the step in CPU time vs the precomputed-mask step
    (wall-clock comparison within noise); standalone sma_mask 0.5 CPU-ms.
  Engineering history (ms/step, one device, same machine): 303 at the start
    of the session -> 274 with layer 1 run on the gathered kept rows only
    (mask logits from Q/K of stop_gradient(x), no V or backward for masked
    tokens) -> 251 with one device per core.
  Tried and rejected (slower): one (3,B,H,N,d) transpose for fused QKV
    (304), optimisation barriers around LayerNorm (287), block-diagonal
    all-head attention matmuls (5x slower), batch-minor attention, XLA:CPU
    flags (xnn/ynn fusion types, oneDNN, vector width 512; all within +-3 %
    or slower). Per-op profile: the attention core (2,048 tiny 23x16x23
    matmuls per layer, softmax) and head-split transposes are ~35 % of the
    step although they are < 6 % of its FLOPs.
  Also tried (2026-12-01, second session): attention with the batch in the
    vector lanes ((H, d, N, B) layout, per-example products as unrolled
    elementwise sums, hand-written VJP): 7.2 vs 11.8 ms per layer fwd+bwd in
    isolation, but 40-50 ms per step SLOWER in the model, where XLA:CPU fuses
    the (B, N, F) <-> (H, d, N, B) transposes into the unrolled sums; a
    whole-network feature-major layer was slower too (61 vs 51 ms per
    layer). YNNPACK fusion-type flags (-REDUCE / -ELTWISE) stay within the
    host's +-10 % noise.
  Target 1,200 ex/s not reached (80-85 % of it); benchmarks/sma_step_bound.py
    shows why: with attention, LayerNorm and GELU all removed the step still
    takes ~150 ms, and those parts cost ~110 ms in the real step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import harness  # noqa: E402  (benchmarks/; sets sys.path for maskssl)


def particle_config(batch=256, compact=True, dtype="float32", gather="auto",
                    layers=4):
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = batch
  c.total_steps = 100_000
  c.model = dict(input="continuous", c_in=1, n_max=28, embed_dim=128,
                 latent_dim=128, encoder_mode="transformer", num_self_layers=layers,
                 self_heads=8, self_widening=1, decoder_heads=1,
                 compute_dtype=dtype, compact=compact, gather_impl=gather)
  c.mask = dict(ratio=0.2, num_per_query=3, head_aggregation="random_mix",
                mask_self=True, mask_self_value="num_heads", rho=1.0,
                mask_mode="sma", curriculum_fraction=0.25)
  c.optim = dict(name="adamw", lr=1e-4, schedule="cosine", warmup_steps=10_000,
                 weight_decay=0.01, clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8)
  return c


def particle_batch(batch_size, n=28):
  """A fixed random batch of ``batch_size`` HIGGS-shaped examples."""
  rs = np.random.RandomState(0)
  return dict(x=jnp.asarray(rs.randn(batch_size, n, 1), jnp.float32),
              valid=jnp.ones((batch_size, n), bool))


def compile_step(method, batch, precomputed_mask=None):
  """The sharded, donated step, compiled and warmed up."""
  def step(state, batch, rng):
    return method.train_step(state, batch, rng, mask=batch.get("mask"))

  if precomputed_mask is not None:
    batch = dict(batch, mask=precomputed_mask)
  v = harness.sharded_step(method, batch, step)
  state = v["state"]
  for _ in range(3):  # warm-up
    state, metrics = v["compiled"](state, v["batch"])
  jax.block_until_ready(state)
  v.update(state=state, wall=[], cpu=[])
  return v


def time_steps(v, steps):
  """Appends wall and process-CPU seconds per step to ``v``."""
  t0, c0 = time.perf_counter(), time.process_time()
  state, batch = v["state"], v["batch"]
  for _ in range(steps):
    state, metrics = v["compiled"](state, batch)
  jax.block_until_ready((state, metrics))
  v["wall"].append((time.perf_counter() - t0) / steps)
  v["cpu"].append((time.process_time() - c0) / steps)
  v["state"], v["metrics"] = state, metrics


def run(args, compact, dtype, gather, layers=4):
  from maskssl.methods.sma import SMA
  from maskssl.masks.sma import sma_mask
  cfg = particle_config(args.batch, compact, dtype, gather, layers)
  method = SMA(cfg)
  b, n = args.batch, 28
  batch = particle_batch(b, n)
  rs = np.random.RandomState(1)
  # A valid SMA mask (same counts as the generator's) fed as a constant.
  logits = jnp.asarray(rs.randn(b, 8, n, n), jnp.float32)
  spec = method.mask_spec
  mask, _ = sma_mask(jax.random.PRNGKey(3), logits, batch["valid"], spec)
  gen = compile_step(method, batch)
  pre = compile_step(method, batch, precomputed_mask=mask)
  for _ in range(args.reps):          # interleaved: same machine load
    time_steps(gen, args.steps)
    time_steps(pre, args.steps)
  best, med = min(gen["wall"]), statistics.median(gen["wall"])
  cpu = min(gen["cpu"])
  return dict(
      compact=compact, compute_dtype=dtype, gather_impl=gather,
      self_layers=layers,
      examples_per_s_best=b / best, examples_per_s_median=b / med,
      step_ms_best=1e3 * best, step_ms_median=1e3 * med,
      cpu_ms_per_step=1e3 * cpu, examples_per_cpu_s=b / cpu,
      compile_s=gen["compile_s"], devices=gen["devices"],
      precomputed_mask_examples_per_s_best=b / min(pre["wall"]),
      precomputed_mask_cpu_ms_per_step=1e3 * min(pre["cpu"]),
      mask_generation_share_wall=1.0 - min(pre["wall"]) / best,
      mask_generation_share_cpu=1.0 - min(pre["cpu"]) / cpu,
      step_gflop=gen["flops"] * gen["devices"] / 1e9,
      achieved_gflop_per_s=gen["flops"] * gen["devices"] / best / 1e9,
      achieved_gflop_per_cpu_s=gen["flops"] * gen["devices"] / cpu / 1e9,
      loss=float(gen["metrics"]["loss"]),
      mask_fraction=float(gen["metrics"]["mask_fraction"]))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--compact", type=int, default=1)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--gather", default="auto")
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--variants", action="store_true",
                 help="also run compact=0 and bfloat16")
  harness.add_device_flag(p, default="auto")
  args = p.parse_args()
  harness.setup_devices(args.cpu_devices, [args.batch])
  env = dict(jax=jax.__version__, backend=jax.default_backend(),
             cpus=len(os.sched_getaffinity(0)), load_avg=os.getloadavg(),
             batch=args.batch, steps_per_rep=args.steps, reps=args.reps)
  results = [run(args, bool(args.compact), args.dtype, args.gather,
                 args.layers)]
  if args.variants:
    results.append(run(args, False, "float32", "auto", args.layers))
    results.append(run(args, True, "bfloat16", "auto", args.layers))
  env["load_avg_end"] = os.getloadavg()
  print(json.dumps(dict(env=env, results=results), indent=1))


if __name__ == "__main__":
  main()
