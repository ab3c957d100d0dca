"""SMA on HIGGS at a CPU budget: SMA vs random-mask pretraining vs scratch.

    python benchmarks/reproduce_sma_higgs.py [--seeds=0,1,2] [--pretrain_seeds=0]
        [--root=DIR]

For each pretraining seed it runs ``python -m maskssl.main
--config=configs/sma_particle.py:cpu`` twice, with the attention-guided mask
(arm ``sma``; its fine-tune evaluator also trains the ``scratch`` arm) and with
``mask.mask_mode=random`` (arm ``random_mask``). Each pretrained encoder is
fine-tuned with the reference recipe on 100 and 1,000 labels once per
fine-tune seed (``--seeds``: label subset, head init, dropout and data order)
and scored on the test split at the best-validation step. One pretraining seed
is the default because the CPU budget allows two ~45-minute pretraining runs
per session, not six; the spread is then over fine-tuning seeds only. Runs live in
``--root`` (outside the repo) and resume: rerun the same command to continue
after an interruption; finished runs are only re-read. Results:
``benchmarks/results/reproduce_sma_higgs_n{100,1000}.json`` (ROC-AUC arms,
accuracy under ``other_metrics``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/sma_particle.py:cpu"
LABELS = (100, 1000)
# Reference pretraining: 50 epochs of ~10.5 M HIGGS rows (sma spec, 5.1).
REFERENCE_EXAMPLES = 50 * 10.5e6

ARMS = {  # arm -> (extra flags, fine-tune inits it provides)
    "sma": ([], {"pretrained": "sma", "scratch": "scratch"}),
    "random_mask": (["--config.mask.mask_mode=random",
                     "--config.evals.finetune.inits=('pretrained',)"],
                    {"pretrained": "random_mask"}),
}


EXTRA: list[str] = []  # --extra_flags, e.g. for a smoke run


FT_SEEDS: list[int] = [0, 1, 2]  # --seeds


def command(arm: str, seed: int, root: str, config: str) -> list[str]:
  flags, _ = ARMS[arm]
  ft = ",".join(map(str, FT_SEEDS)) + ("," if len(FT_SEEDS) == 1 else "")
  return [sys.executable, "-m", "maskssl.main", f"--config={config}",
          f"--config.seed={seed}", f"--config.evals.finetune.seeds=({ft})",
          f"--workdir={os.path.join(root, f'{arm}_seed{seed}')}", *flags,
          *EXTRA]


def run(arm, seed, root, config) -> dict:
  wd = os.path.join(root, f"{arm}_seed{seed}")
  done = os.path.join(wd, "summary.json")
  if not os.path.exists(done):
    os.makedirs(wd, exist_ok=True)
    cmd = command(arm, seed, root, config)
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    with open(os.path.join(wd, "stdout.log"), "a") as log:
      rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if rc:
      sys.exit(f"{arm} seed {seed} failed (exit {rc}); see {wd}/stdout.log")
    walls = _read(os.path.join(wd, "wall.json"), [])
    walls.append(time.time() - t0)
    with open(os.path.join(wd, "wall.json"), "w") as f:
      json.dump(walls, f)
  return _read(done)


def _finetune_runs(wd: str) -> list[dict]:
  """Per-seed fine-tune results of the final checkpoint's evaluation."""
  import glob
  paths = sorted(glob.glob(os.path.join(wd, "eval", "step*", "finetune",
                                        "results.json")),
                 key=lambda p: int(p.split("step")[-1].split(os.sep)[0]))
  return _read(paths[-1])["runs"] if paths else []


def _read(path, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def aggregate(summaries: dict, root: str, config: str, seeds) -> list[dict]:
  """One result file per label budget, in the agreed form."""
  from maskssl.config_utils import load_config_file
  cfg = load_config_file(os.path.join(REPO, config))
  bs = int(cfg.batch_size)
  steps = min(int(s["pretrain"]["final_step"]) for s in summaries.values())
  rows = 21488  # 6,500 sample + 14,988 shipped extra pretraining rows
  wall = sum(sum(_read(os.path.join(root, f"{a}_seed{s}", "wall.json"), []))
             for a, s in summaries)
  out = []
  for n in LABELS:
    metrics = {"auc": {}, "accuracy": {}}
    for (arm, seed) in summaries:
      runs = _finetune_runs(os.path.join(root, f"{arm}_seed{seed}"))
      for r in sorted(runs, key=lambda r: r["seed"]):
        name = ARMS[arm][1].get(r["init"])
        if r["n_labels"] != n or name is None:
          continue
        for m in metrics:
          if f"best_{m}" in r:
            metrics[m].setdefault(name, []).append(float(r[f"best_{m}"]))

    def arms(d):
      return {k: dict(mean=float(np.mean(v)), std=float(np.std(v, ddof=1))
                      if len(v) > 1 else 0.0, n=len(v), values=v)
              for k, v in d.items()}
    result = dict(
        task=f"sma_higgs_n{n}", dataset="HIGGS (9,000 shipped rows + 14,988 "
        "unlabelled; 1,000 val, 1,500 test)", metric="roc_auc",
        higher_is_better=True,
        command=f"python benchmarks/reproduce_sma_higgs.py --seeds="
                f"{','.join(map(str, FT_SEEDS))} --pretrain_seeds="
                f"{','.join(map(str, seeds))}",
        seeds=dict(pretrain=list(seeds), finetune=list(FT_SEEDS)),
        budget=dict(wall_minutes=round(wall / 60, 1),
                    epochs=round(steps * bs / rows, 1),
                    pretrain_steps=steps, batch_size=bs,
                    fraction_of_reference=steps * bs / REFERENCE_EXAMPLES,
                    finetune="reference recipe: lr 3e-5 constant, 200 "
                             "epochs, batch 128, dropout 0.1"),
        selection="test score at the best-validation step (the reference "
                  "selects on test; we do not)",
        arms=arms(metrics["auc"]),
        other_metrics=dict(accuracy=arms(metrics["accuracy"])))
    if "sma" in result["arms"] and "scratch" in result["arms"]:
      d = (np.array(metrics["auc"]["sma"]) -
           np.array(metrics["auc"]["scratch"]))
      result["sma_minus_scratch"] = dict(mean=float(d.mean()),
                                         values=d.tolist())
    out.append(result)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", default="0,1,2", help="fine-tune seeds")
  p.add_argument("--pretrain_seeds", default="0")
  p.add_argument("--root", default=os.path.expanduser(
      "~/maskssl_runs/reproduce_sma_higgs"))
  p.add_argument("--config", default=CONFIG)
  p.add_argument("--arms", default="sma,random_mask")
  p.add_argument("--extra_flags", default="",
                 help="more flags for every maskssl.main run (smoke tests)")
  p.add_argument("--results", default=os.path.join(REPO, "benchmarks",
                                                   "results"))
  args = p.parse_args()
  import shlex
  EXTRA.extend(shlex.split(args.extra_flags))
  FT_SEEDS[:] = [int(s) for s in args.seeds.split(",")]
  seeds = [int(s) for s in args.pretrain_seeds.split(",")]
  summaries = {}
  for seed in seeds:
    for arm in args.arms.split(","):
      summaries[(arm, seed)] = run(arm, seed, args.root, args.config)
  os.makedirs(args.results, exist_ok=True)
  for res in aggregate(summaries, args.root, args.config, seeds):
    path = os.path.join(args.results, f"reproduce_{res['task']}.json")
    with open(path, "w") as f:
      json.dump(res, f, indent=2)
    print(f"{res['task']}: " + "  ".join(
        f"{k} {a['mean']:.4f} ± {a['std']:.4f} (n={a['n']})"
        for k, a in res["arms"].items()), flush=True)


if __name__ == "__main__":
  main()
