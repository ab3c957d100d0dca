"""SMA at a CPU budget, per domain: SMA vs random-mask pretraining vs scratch.

    python benchmarks/reproduce_sma.py --domain=particle   # HIGGS, 100/1k labels
    python benchmarks/reproduce_sma.py --domain=molecule   # 7 MoleculeNet tasks
    python benchmarks/reproduce_sma.py --domain=protein    # DeepLoc, GB1, TAPE x2
        [--seeds=0,1,2] [--pretrain_seeds=0] [--root=DIR] [--extra_flags=...]

For each pretraining seed it runs the domain's ``:cpu`` config twice through
``python -m maskssl.main``: with the attention-guided mask (arm ``sma``; its
fine-tune evaluators also train the ``scratch`` arm from random init) and with
``mask.mask_mode=random`` (arm ``random_mask``, same mask counts). Every
fine-tune evaluator of the config runs once per fine-tune seed (``--seeds``:
label subset, head init, dropout and data order) and is scored on its test
split at the best-validation step (the reference selects on test; we do not).
One pretraining seed is the default: the budget allows two ~40-minute
pretraining runs per domain and session, not six, so the spread is over
fine-tuning seeds. Runs live in ``--root`` (outside the repo) and resume:
rerun the same command to continue; finished runs are only re-read.

Writes ``benchmarks/results/reproduce_sma_<task>.json`` per task (and label
budget) in the agreed form: task, dataset, metric, higher_is_better, command,
budget, arms {sma, random_mask, scratch: mean, std, n, values}, paired
differences, and the other metrics under ``other_metrics``.
"""
from __future__ import annotations

import argparse
import glob
import os
import shlex
import sys

from reproduce_common import (REPO, add_run_flags, arms_stats, difference,
                              pretraining_stats, read_json, run_commands,
                              tuple_flag, write_results)

# domain -> config, default root, reference pretraining size (sma spec 5.1)
DOMAINS = {
    "particle": dict(
        config="configs/sma_particle.py:cpu", root="reproduce_sma_higgs",
        prefix="higgs", reference="50 epochs of ~10.5 M HIGGS rows",
        reference_examples=50 * 10.5e6,
        dataset="HIGGS (9,000 shipped rows + 14,988 unlabelled; 1,000 val, "
                "1,500 test)"),
    "molecule": dict(
        config="configs/sma_molecule.py:cpu", root="reproduce_sma_molecule",
        prefix="", reference="30 epochs of GuacaMol train (~1.27 M SMILES) "
        "packed into 512-token rows, counted here in 128-token rows",
        reference_examples=30 * 1.27e6 * 45 / 128,  # ~45 bytes per SMILES
        dataset="MoleculeNet, scaffold split 80/10/10; pretraining on MOSES"),
    "protein": dict(
        config="configs/sma_protein.py:cpu", root="reproduce_sma_protein",
        prefix="", reference="10 epochs of Pfam train (~32 M sequences)",
        reference_examples=10 * 32e6,
        dataset="DeepLoc, FLIP GB1, TAPE remote homology / stability"),
}
# fine-tune init -> arm name, per pretraining arm
ARMS = {
    "sma": ([], {"pretrained": "sma", "scratch": "scratch"}),
    "random_mask": (["--config.mask.mask_mode=random"],
                    {"pretrained": "random_mask"}),
}


def _finetune_evals(config: str) -> dict:
  """The config's enabled fine-tune evaluators: name -> eval config."""
  sys.path.insert(0, REPO)
  from maskssl.config_utils import load_config_file
  cfg = load_config_file(os.path.join(REPO, config))
  return cfg, {k: v for k, v in cfg.evals.items()
               if v.get("type") == "finetune" and v.get("enabled", True)}


def command(arm, seed, ft_seeds, wd, config, evals, extra) -> list[str]:
  flags, inits = ARMS[arm]
  per_eval = []
  for name in evals:
    per_eval.append(f"--config.evals.{name}.seeds={tuple_flag(ft_seeds)}")
    if "scratch" not in inits:  # scratch is trained once, in the sma arm
      per_eval.append(f"--config.evals.{name}.inits=('pretrained',)")
  return [sys.executable, "-m", "maskssl.main", f"--config={config}",
          f"--config.seed={seed}", f"--workdir={wd}", *flags, *per_eval,
          *extra]


def run(arm, seed, ft_seeds, root, config, evals, extra) -> dict:
  wd = os.path.join(root, f"{arm}_seed{seed}")
  cmd = command(arm, seed, ft_seeds, wd, config, evals, extra)
  return run_commands([cmd], wd, os.path.join(wd, "summary.json"),
                      f"{arm} seed {seed}")


def finetune_runs(wd: str, name: str) -> tuple[str, list[dict]]:
  """(task, per-seed runs) of evaluator ``name`` at the final checkpoint."""
  paths = glob.glob(os.path.join(wd, "eval", "step*", name, "results.json"))
  if not paths:
    return "", []
  last = max(paths, key=lambda p: int(p.split(os.sep + "step")[-1]
                                      .split(os.sep)[0]))
  res = read_json(last)
  return res["task"], res["runs"]


def metric_for(task: str, ecfg) -> tuple[str, str, bool]:
  """(result key, metric name, higher_is_better) as MoleculeNet / TAPE
  report the task: ROC-AUC, accuracy, RMSE or Spearman."""
  if task in ("binary", "binary_mse", "multilabel"):
    return "auc", "roc_auc", True
  if task == "multiclass":
    return "accuracy", "accuracy", True
  if task == "regression":
    if ecfg.get("select_metric", "") == "spearman":
      return "spearman", "spearman", True
    return "rmse", "rmse", False
  raise ValueError(f"no reported metric for task {task!r}")


def aggregate(domain, cfg, evals, root, pretrain_seeds, ft_seeds, argv):
  spec = DOMAINS[domain]
  bs = int(cfg.batch_size)
  steps = int(cfg.total_steps)
  wall = sum(sum(read_json(os.path.join(root, f"{a}_seed{s}", "wall.json"), []))
             for a in ARMS for s in pretrain_seeds)
  # per pretraining arm and seed: examples/s, input-wait share, final loss
  pretraining = {}
  for arm in ARMS:
    for s in pretrain_seeds:
      st = pretraining_stats(os.path.join(root, f"{arm}_seed{s}"), bs)
      if st:
        pretraining.setdefault(arm, {})[s] = st
  out = []
  for name, ecfg in evals.items():
    per = {}  # (n_labels) -> metric key -> arm -> [values by seed]
    task = ""
    for arm, (_, inits) in ARMS.items():
      for seed in pretrain_seeds:
        task_, runs = finetune_runs(os.path.join(root, f"{arm}_seed{seed}"),
                                    name)
        task = task or task_
        for r in runs:
          arm_name = inits.get(r["init"])
          if arm_name is None:
            continue
          for k, v in r.items():
            if k.startswith("best_") and k != "best_step":
              per.setdefault(r["n_labels"], {}).setdefault(
                  k[5:], {}).setdefault(arm_name, {})[
                      (seed, r["seed"]) if len(pretrain_seeds) > 1
                      else r["seed"]] = float(v)
    if not task:
      continue
    key, metric, higher = metric_for(task, ecfg)
    ename = name.removeprefix("finetune_").removeprefix("finetune")
    # num_labels=(0,) means the whole labelled pool: no label-budget suffix
    subsets = tuple(int(n) for n in ecfg.num_labels) != (0,)
    for n, metrics in sorted(per.items()):
      label = "_".join(p for p in (spec["prefix"], ename,
                                   f"n{n}" if subsets else "") if p)
      arms = metrics.get(key, {})
      result = dict(
          task=f"sma_{label}", dataset=spec["dataset"], metric=metric,
          higher_is_better=higher,
          command="python benchmarks/reproduce_sma.py " + " ".join(argv),
          seeds=dict(pretrain=list(pretrain_seeds), finetune=list(ft_seeds)),
          budget=dict(
              wall_minutes=round(wall / 60, 1), pretrain_steps=steps,
              batch_size=bs,
              fraction_of_reference=steps * bs / spec["reference_examples"],
              reference=spec["reference"],
              finetune=dict(epochs=float(ecfg.get("num_epochs", 0.0)),
                            steps=int(ecfg.get("total_steps", 0)),
                            lr=float(ecfg.optim.lr),
                            schedule=str(ecfg.optim.schedule),
                            batch_size=int(ecfg.batch_size))),
          num_labels=int(n),
          selection="test score at the best-validation step",
          arms=arms_stats(arms),
          pretraining=pretraining,
          other_metrics={m: arms_stats(a) for m, a in metrics.items()
                         if m != key})
      for a, b in (("sma", "scratch"), ("sma", "random_mask")):
        if a in arms and b in arms:
          result[f"{a}_minus_{b}"] = difference(arms[a], arms[b])
      out.append(result)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--domain", choices=sorted(DOMAINS), required=True)
  p.add_argument("--seeds", default="0,1,2", help="fine-tune seeds")
  p.add_argument("--pretrain_seeds", default="0")
  p.add_argument("--root", default="",
                 help="run directory (default ~/maskssl_runs/<domain root>)")
  p.add_argument("--config", default="", help="default: the domain's :cpu")
  p.add_argument("--arms", default="sma,random_mask")
  add_run_flags(p)
  args = p.parse_args()
  spec = DOMAINS[args.domain]
  config = args.config or spec["config"]
  root = args.root or os.path.expanduser(
      os.path.join("~", "maskssl_runs", spec["root"]))
  ft_seeds = [int(s) for s in args.seeds.split(",")]
  pretrain_seeds = [int(s) for s in args.pretrain_seeds.split(",")]
  extra = shlex.split(args.extra_flags)
  cfg, evals = _finetune_evals(config)
  for seed in pretrain_seeds:
    for arm in args.arms.split(","):
      run(arm, seed, ft_seeds, root, config, evals, extra)
  argv = [f"--domain={args.domain}", f"--seeds={args.seeds}",
          f"--pretrain_seeds={args.pretrain_seeds}"]
  argv += [f"--config={args.config}"] if args.config else []
  argv += [f"--extra_flags={shlex.quote(args.extra_flags)}"] \
      if args.extra_flags else []
  write_results(aggregate(args.domain, cfg, evals, root, pretrain_seeds,
                          ft_seeds, argv), args.results)

if __name__ == "__main__":
  main()
