r"""SD-MAE vs plain MAE on the embedded PCam sample at equal budget.

For each seed, pretrain ``configs/sdmae_pcam.py:sample`` and the same config
with ``sd_weight = 0`` (plain MAE) for the same number of steps on the 200
pretraining patches, then run the linear probe (BatchNorm without affine +
linear, 160 train / 100 test patches). A random-init encoder (0 steps) is
probed too, as a floor. Prints JSON with per-seed results and mean +- std.

  python benchmarks/sdmae_pcam_probe.py [--seeds 0,1,2] [--steps 200]

The sample is tiny (100 test patches: one AUC point of sampling noise is
about +-0.05), so this checks the pipeline; it cannot separate the methods
unless the gap is large.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from maskssl.data import load_split  # noqa: E402
from maskssl.data.base import batch_indices  # noqa: E402
from maskssl.evaluators import linear_probe  # noqa: E402
from maskssl.evaluators.scores import mean_std  # noqa: E402
from maskssl.methods.sdmae import SDMAE  # noqa: E402


def load_config(variant="sample"):
  spec = importlib.util.spec_from_file_location(
      "cfg", os.path.join(REPO, "configs", "sdmae_pcam.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def pretrain_and_probe(config, steps: int, seed: int) -> dict:
  config = config.copy_and_resolve_references()
  config.seed, config.total_steps = seed, max(steps, 1)
  method = SDMAE(config)
  data = load_split(config.data, "pretrain")
  bs = int(config.batch_size)
  first = data.batch(batch_indices(len(data), bs, 0, seed))
  state = jax.jit(method.init_state)(jax.random.PRNGKey(seed), first)
  step_fn = jax.jit(method.train_step, donate_argnums=0)
  base = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  t0, losses = time.perf_counter(), []
  for t in range(steps):
    batch = data.batch(batch_indices(len(data), bs, t, seed))
    state, m = step_fn(state, batch, jax.random.fold_in(base, t))
    if t % 20 == 0 or t == steps - 1:
      losses.append(float(m["loss"]))
  train_s = time.perf_counter() - t0
  ecfg = config.evals.linear_probe
  res = linear_probe.run(config, ecfg, method, state, None)
  return dict(res, final_loss=losses[-1] if losses else None,
              pretrain_s=round(train_s, 1), steps=steps)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--variant", default="sample")
  args = ap.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  base = load_config(args.variant)
  steps = args.steps or int(base.total_steps)
  runs = {"sdmae": [], "mae": [], "random_init": []}
  for seed in seeds:
    for name, weight, n in (("sdmae", 0.2, steps), ("mae", 0.0, steps),
                            ("random_init", 0.0, 0)):
      cfg = base.copy_and_resolve_references()
      cfg.sdmae.sd_weight = weight
      r = pretrain_and_probe(cfg, n, seed)
      r["seed"] = seed
      runs[name].append(r)
      print(json.dumps(dict(method=name, **r)), file=sys.stderr, flush=True)
  summary = {}
  for name, rs in runs.items():
    for k in ("auc", "accuracy"):
      m, s = mean_std([r[k] for r in rs])
      summary[f"{name}/{k}"] = [round(m, 4), round(s, 4)]
  d = [a["auc"] - b["auc"] for a, b in zip(runs["sdmae"], runs["mae"])]
  summary["sdmae_minus_mae_auc_per_seed"] = [round(x, 4) for x in d]
  print(json.dumps(dict(variant=args.variant, steps=steps, seeds=seeds,
                        model=dict(base.model), summary=summary, runs=runs),
                   indent=1))


if __name__ == "__main__":
  main()
