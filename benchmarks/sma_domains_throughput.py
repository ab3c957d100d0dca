r"""SMA across domains: pretraining throughput (examples/s) of the shared
train step on this machine, per domain config, plus (``--probe_scratch``)
the from-scratch kNN / linear-probe baseline for the image config.

  python benchmarks/sma_domains_throughput.py                  # quick sizes
  python benchmarks/sma_domains_throughput.py --variant=default --steps=10
  python benchmarks/sma_domains_throughput.py --probe_scratch \
      --override data.max_train=0 --override data.image_size=16

Prints one JSON object: for each domain the config variant, batch size,
tokens per example, compile seconds, and the median over ``--repeats``
timed windows of ``--steps`` jitted steps (wall and process CPU time, so
numbers taken on a loaded machine can be judged). Never asserts speed.

Measured 2026-11-23 on the 2-core CPU, shared with other agents (1-min load
average 7.9 / 7.4 at the start; pretraining examples/s, wall clock):
  variant  molecule (transformer)   protein (perceiver)     image (perceiver)
  quick    1218 /s (B 8, 64 tok)    1943 /s (B 8, 128 tok)  3175 /s (B 8, 64 px)
  default    82 /s (B 32, 128 tok)    79 /s (B 16, 512 tok)  135 /s (B 32, 1024 px)
(quick: --steps=10 --repeats=3; default: --steps=3 --repeats=2.)
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import pathlib
import platform
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DOMAINS = {"molecule": "sma_molecule", "protein": "sma_protein",
           "image": "sma_image"}


def load_config(name: str, variant: str):
  spec = importlib.util.spec_from_file_location(
      name, REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(None if variant == "default" else variant)


def apply_overrides(c, overrides):
  for ov in overrides:
    key, val = ov.split("=", 1)
    try:
      val = ast.literal_eval(val)
    except (ValueError, SyntaxError):
      pass
    node = c
    parts = key.split(".")
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = val
    if key == "data.max_len":
      c.model.n_max = val
  return c


def throughput(name, variant, steps, repeats, overrides):
  from maskssl.data import load_split  # pylint: disable=import-outside-toplevel
  from maskssl.methods.sma import SMA  # pylint: disable=import-outside-toplevel
  c = apply_overrides(load_config(name, variant), overrides)
  ds = load_split(c.data, "pretrain")
  bs = int(c.batch_size)
  m = SMA(c)
  batches = [ds.batch(np.random.default_rng(i).choice(len(ds), bs,
                                                      replace=len(ds) < bs))
             for i in range(steps)]
  state = m.init_state(jax.random.PRNGKey(0), batches[0])
  step = jax.jit(m.train_step, donate_argnums=0)
  t0 = time.perf_counter()
  state, met = step(state, batches[0], jax.random.PRNGKey(0))
  jax.block_until_ready(met)
  compile_s = time.perf_counter() - t0
  walls, cpus = [], []
  for r in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    for i, b in enumerate(batches):
      state, met = step(state, b, jax.random.PRNGKey(r * steps + i))
    jax.block_until_ready(met)
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  wall, cpu = float(np.median(walls)), float(np.median(cpus))
  tokens = int(batches[0]["tokens" if "tokens" in batches[0] else "x"
                          ].shape[1])
  return dict(config=f"{name}:{variant}", batch_size=bs,
              tokens_per_example=tokens,
              encoder_mode=c.model.encoder_mode, mask_mode=c.mask.mask_mode,
              compile_s=round(compile_s, 2), steps_timed=steps,
              repeats=repeats, step_wall_s=round(wall / steps, 5),
              examples_per_s_wall=round(bs * steps / wall, 2),
              examples_per_s_cpu=round(bs * steps / cpu, 2),
              loss=float(met["loss"]))


def probe_scratch(variant, overrides, workdir):
  """kNN + linear probe of a randomly initialised image encoder (the
  'scratch' row next to a pretrained run's evals)."""
  from maskssl.data import load_split  # pylint: disable=import-outside-toplevel
  from maskssl.evaluators import make_evaluator  # pylint: disable=import-outside-toplevel
  from maskssl.methods.sma import SMA  # pylint: disable=import-outside-toplevel
  c = apply_overrides(load_config("sma_image", variant), overrides)
  ds = load_split(c.data, "pretrain")
  m = SMA(c)
  state = m.init_state(jax.random.PRNGKey(int(c.seed)),
                       ds.batch(np.arange(int(c.batch_size))))
  out = {}
  for name, ecfg in c.evals.items():
    out[name] = make_evaluator(name, ecfg, c, m.predict_fns()).run(
        state, os.path.join(workdir, name))
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--domains", default="molecule,protein,image")
  ap.add_argument("--variant", default="quick",
                  choices=("quick", "default", "reference"))
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--override", action="append", default=[],
                  help="dotted.key=value applied to every config")
  ap.add_argument("--probe_scratch", action="store_true")
  ap.add_argument("--workdir", default="/tmp/sma_domains_bench")
  a = ap.parse_args()
  res = dict(backend=jax.default_backend(), devices=jax.device_count(),
             cpu_count=os.cpu_count(), machine=platform.machine(),
             load_avg_1m=os.getloadavg()[0])
  if a.probe_scratch:
    res["image_scratch"] = probe_scratch(a.variant, a.override, a.workdir)
  else:
    for d in a.domains.split(","):
      res[d] = throughput(DOMAINS[d], a.variant, a.steps, a.repeats,
                          a.override)
  print(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
  main()
