r"""MetaMask step timings (prints JSON).

Times, at batch B (two 32x32 views, ResNet-18 CIFAR, the reference heads):
  * ``plain_s``: one plain joint-loss step (L_BT + 10 L_CL, SGD momentum;
    ``enable_meta=False``), augmentation included;
  * ``<mode>_s``: one full MetaMask iteration (regular step + virtual step +
    hypergradient + mask step) for each ``meta_grad`` mode;
  * ``<mode>_ratio`` = ``<mode>_s / plain_s`` and ``compile_s`` per variant.
Each time is the median of ``--reps`` runs after one warm-up (compilation
excluded), the variants interleaved; ``<variant>_cpu_s`` is the process CPU
time of a step (less sensitive to other processes on a shared machine) and
``<mode>_cpu_ratio`` the ratio of those. The reference (official PyTorch code, 2 CPU cores) takes about
4.5 s for a plain step and 17 s for a MetaMask iteration at this size.

  python benchmarks/metamask_step.py                       # all modes, B=64
  python benchmarks/metamask_step.py --modes=exact,first_order --reps=5
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np

import harness  # noqa: E402  (benchmarks/; sets sys.path for maskssl)
from maskssl.methods.metamask import MetaMask  # noqa: E402

ALL_MODES = ("exact", "finite_difference", "first_order", "exact_jvp",
             "exact_unrolled")


def make_config(batch, width, meta_grad, enable_meta=True, dtype="float32"):
  return ml_collections.ConfigDict(dict(
      method="metamask", seed=0, batch_size=batch, total_steps=1000,
      model=dict(backbone="resnet18", stem="cifar", stem_relu=False,
                 width=width, bt_features=(2048, 2048, 2048),
                 cl_features=(2048, 256), compute_dtype=dtype),
      metamask=dict(meta_grad=meta_grad, enable_meta=enable_meta,
                    steps_per_epoch=97, epochs=800),
      optim=dict(lr=1e-3, momentum=0.9, weight_decay=5e-4),
      augment=dict(size=32)))


def compile_variant(cfg, images):
  """(run_once, compile_s): ``run_once()`` runs one step, returns seconds
  (wall, process CPU)."""
  method = MetaMask(cfg)
  v = harness.sharded_step(method, dict(image=images))
  holder = {"state": v["state"], "i": 0}
  compiled, batch, compile_s = v["compiled"], v["batch"], v["compile_s"]

  def run_once():
    holder["i"] += 1
    w0, c0 = time.perf_counter(), time.process_time()
    holder["state"], m = compiled(holder["state"], batch)
    jax.block_until_ready((holder["state"], m))
    return time.perf_counter() - w0, time.process_time() - c0

  run_once()  # warm-up
  return run_once, compile_s


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--modes", default=",".join(ALL_MODES[:3]),
                 help=f"comma list from {ALL_MODES}")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--out", default="", help="also write the JSON here")
  harness.add_device_flag(p)
  args = p.parse_args(argv)
  harness.setup_devices(args.cpu_devices, [args.batch])
  modes = [m for m in args.modes.split(",") if m]
  images = np.random.default_rng(0).integers(
      0, 256, (args.batch, 32, 32, 3), np.uint8)
  res = dict(batch=args.batch, views=2, image_size=32, width=args.width,
             backbone="resnet18", dtype=args.dtype, reps=args.reps,
             device=str(jax.devices()[0].platform),
             num_devices=jax.device_count(), cpu_count=os.cpu_count(),
             jax=jax.__version__, python=platform.python_version(),
             reference_torch_2cpu=dict(plain_s=4.5, metamask_s=17.0))
  try:
    res["loadavg_start"] = os.getloadavg()[0]
  except OSError:
    pass
  variants = {"plain": make_config(args.batch, args.width, "exact",
                                   enable_meta=False, dtype=args.dtype)}
  for mode in modes:
    variants[mode] = make_config(args.batch, args.width, mode,
                                 dtype=args.dtype)
  runners = {}
  for name, cfg in variants.items():
    runners[name], res[f"{name}_compile_s"] = compile_variant(cfg, images)
    print(f"# compiled {name}: {res[f'{name}_compile_s']:.1f} s",
          file=sys.stderr, flush=True)
  # Interleave the variants so that load changes on a shared machine hit
  # them alike; report wall-clock medians and process CPU seconds (robust
  # to other processes; ~ num_threads x wall on an idle machine).
  walls = {n: [] for n in runners}
  cpus = {n: [] for n in runners}
  for _ in range(args.reps):
    for name, run in runners.items():
      w, c = run()
      walls[name].append(w)
      cpus[name].append(c)
  for name in runners:
    res[f"{name}_s"] = statistics.median(walls[name])
    res[f"{name}_cpu_s"] = statistics.median(cpus[name])
    res[f"{name}_times"] = walls[name]
  for mode in modes:
    res[f"{mode}_ratio"] = res[f"{mode}_s"] / res["plain_s"]
    res[f"{mode}_cpu_ratio"] = res[f"{mode}_cpu_s"] / res["plain_cpu_s"]
    print(f"# {mode}: {res[f'{mode}_s']:.3f} s wall ({res[f'{mode}_ratio']:.2f}x"
          f" plain {res['plain_s']:.3f} s); cpu ratio "
          f"{res[f'{mode}_cpu_ratio']:.2f}", file=sys.stderr, flush=True)
  try:
    res["loadavg_end"] = os.getloadavg()[0]
  except OSError:
    pass
  harness.emit_json(res, args.out, indent=2)


if __name__ == "__main__":
  main()
