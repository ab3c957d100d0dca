"""Image methods at a CPU budget: SSL arms vs a random-init encoder.

    python benchmarks/reproduce_images.py --task=cifar10   # MSCN x 3 losses,
        # MetaMask vs BT + NT-Xent vs BT; kNN (k=20 / k=5) and linear probe
    python benchmarks/reproduce_images.py --task=pcam      # MAE vs SD-MAE;
        # linear-probe and fine-tune AUC / accuracy
        [--seeds=0,1,2] [--ablation_seeds=0] [--arms=a,b] [--data=DIR]
        [--root=DIR] [--variant=cpu] [--extra_flags=...]

Every arm is one ``python -m maskssl.main`` run of a ``:cpu`` config on the
same split (CIFAR-10 tar, 5,000 of 50,000 held out as test; PCam 10k tar,
1,000 held out as test, 900 as validation) with the config's evaluators.
``random_init`` evaluates the untrained encoder: this script writes the
initial state (the one pretraining would start from, same seed) as checkpoint
step 0 and runs the CLI's ``--mode=evaluate --step=0`` on it. Main arms run
``--seeds``, ablations (marked ``ablation`` in the result) ``--ablation_seeds``.
Runs live in ``--root`` (default ``~/maskssl_runs/reproduce_images_<task>``)
and resume: rerun the same command to continue; finished runs are re-read.

Writes ``benchmarks/results/reproduce_<task>_<metric>.json`` per metric in
the agreed form (task, dataset, metric, higher_is_better, command, budget,
arms {mean, std, n, values}), plus ``<arm>_minus_random_init`` and the
method-vs-ablation ``comparisons`` with 95 % t intervals (paired by seed when
both arms have the seeds, else unpaired with the multi-seed arm's variance)
and whether each agrees with the paper. Metrics are final-epoch numbers (no
selection on test); fine-tuning is scored at its best-validation step.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys

import numpy as np

from reproduce_common import (REPO, add_run_flags, arms_stats, difference,
                              pretraining_stats, read_json, run_commands,
                              tuple_flag, write_results)
MSCN, MM = "configs/mscn_cifar10.py", "configs/metamask_cifar10.py"
SDMAE, MAE = "configs/sdmae_pcam.py", "configs/mae_pcam.py"
NO_MASK = ("--config.mscn.enabled=False",)
NO_META = ("--config.metamask.enable_meta=False",)


@dataclasses.dataclass(frozen=True)
class Arm:
  config: str                   # config file; the variant is added
  variant_suffix: str = ""      # e.g. ",simclr"
  flags: tuple = ()
  ablation: bool = False        # 1 seed (--ablation_seeds) by default
  init_only: bool = False       # random init: evaluate step 0, no training


# metric -> (result file suffix, metric name, {config file: (eval, key)})
KNN20 = "knn_top1 (k=20, cosine, T=0.07)"
KNN5 = "knn_top1 (k=5, t=1; MetaMask protocol)"
TASKS = {
    "cifar10": dict(
        dataset="CIFAR-10 train tar (50,000 JPEGs): 45,000 pretrain / kNN "
                "bank / probe train, 5,000 held-out test (data.test_size)",
        data_flags=("--config.data.path={data}/cifar10_full/train.tar",
                    "--config.data.test_size=5000"),
        reference_epochs=800, reference_train=50000, train_size=45000,
        model="ResNet-18 (CIFAR stem) at 1/8 width (64-d feature) vs the "
              "reference's full width: ~1/64 of the FLOPs per image",
        arms={
            "random_init": Arm(MSCN, flags=NO_MASK, init_only=True),
            **{loss: Arm(MSCN, "," + loss, NO_MASK)
               for loss in ("simclr", "barlow_twins", "vicreg")},
            **{f"mscn_{loss}": Arm(MSCN, "," + loss)
               for loss in ("simclr", "barlow_twins", "vicreg")},
            "mscn_vicreg_no_hpf": Arm(
                MSCN, ",vicreg", ("--config.mscn.hpf=False",
                                  "--config.mscn.hpf_input=imagenet_norm"),
                ablation=True),
            "mscn_vicreg_zero_fill": Arm(
                MSCN, ",vicreg", ("--config.mscn.fill=zero",), ablation=True),
            "metamask": Arm(MM),
            "bt_ntxent": Arm(MM, flags=NO_META, ablation=True),
            "bt_alone": Arm(MM, flags=NO_META + ("--config.metamask.w_cl=0.0",),
                            ablation=True),
        },
        metrics={
            "knn_k20": (KNN20, {MSCN: ("knn", "knn_top1"),
                                MM: ("knn_k20", "knn_top1")}),
            "knn_k5": (KNN5, {MSCN: ("knn_k5", "knn_top1"),
                              MM: ("knn", "knn_top1")}),
            "linear_probe": ("linear_probe_top1", {
                MSCN: ("linear_probe", "accuracy"),
                MM: ("linear_probe", "accuracy")}),
        },
        # (method, ablation, the paper's claim)
        comparisons=(
            ("mscn_simclr", "simclr", "MSCN masking helps SimCLR"),
            ("mscn_barlow_twins", "barlow_twins",
             "MSCN masking helps Barlow Twins"),
            ("mscn_vicreg", "vicreg", "MSCN masking helps VICReg"),
            ("mscn_vicreg", "mscn_vicreg_no_hpf",
             "MSCN: the high-pass filter beats naive (unfiltered) masking"),
            ("mscn_vicreg", "mscn_vicreg_zero_fill",
             "MSCN: noise fill beats zero fill"),
            ("metamask", "bt_ntxent", "MetaMask >= BT + NT-Xent (no mask)"),
            ("bt_ntxent", "bt_alone", "BT + NT-Xent >= BT alone"),
        ),
        target=("knn_k20", 0.10)),
    "pcam": dict(
        dataset="PCam 10k tar (10,000 96-px H&E patches, 5,000 per label): "
                "1,000 held-out test, 900 validation, 8,100 probe / fine-tune "
                "train, 9,000 pretrain",
        data_flags=("--config.data.path={data}/pcam_10k/train.tar",),
        reference_epochs=100, reference_train=262144, train_size=9000,
        model="ViT-Ti/16 at 96 px (36 patches) vs the reference's ViT-S/16 "
              "at 224 px (196 patches)",
        arms={
            "random_init": Arm(SDMAE, init_only=True),
            "mae": Arm(MAE),
            "sdmae": Arm(SDMAE),
        },
        metrics={
            "linear_probe_auc": ("roc_auc (linear probe)", {
                SDMAE: ("linear_probe", "auc"), MAE: ("linear_probe", "auc")}),
            "linear_probe_accuracy": ("accuracy (linear probe)", {
                SDMAE: ("linear_probe", "accuracy"),
                MAE: ("linear_probe", "accuracy")}),
            "finetune_auc": ("roc_auc (fine-tune, best-validation step)", {
                SDMAE: ("finetune", "n0/pretrained/best_auc"),
                MAE: ("finetune", "n0/pretrained/best_auc")}),
            "finetune_accuracy": (
                "accuracy (fine-tune, best-validation step)", {
                    SDMAE: ("finetune", "n0/pretrained/best_accuracy"),
                    MAE: ("finetune", "n0/pretrained/best_accuracy")}),
        },
        comparisons=(("sdmae", "mae", "SD-MAE >= MAE"),),
        target=("linear_probe_auc", 0.05)),
}


def config_arg(arm: Arm, variant: str) -> str:
  return f"{arm.config}:{variant}{arm.variant_suffix}"


def command(task, arm: Arm, seed, wd, variant, data, extra) -> list[str]:
  """The maskssl.main command line of one arm and seed."""
  spec = TASKS[task]
  flags = [f.format(data=data) for f in spec["data_flags"]]
  if arm.config in (SDMAE, MAE):  # fine-tune the state being evaluated
    flags += [f"--config.evals.finetune.seeds={tuple_flag([seed])}",
              "--config.evals.finetune.inits=('pretrained',)"]
  mode = ["--mode=evaluate", "--step=0"] if arm.init_only else []
  return [sys.executable, "-m", "maskssl.main",
          f"--config={config_arg(arm, variant)}", f"--config.seed={seed}",
          f"--workdir={wd}", *mode, *arm.flags, *flags, *extra]


def _done_file(arm: Arm, wd: str) -> str:
  return os.path.join(wd, "eval_step0.json" if arm.init_only
                      else "summary.json")


def run(task, name, arm, seed, root, variant, data, extra) -> dict:
  wd = os.path.join(root, f"{name}_seed{seed}")
  cmd = command(task, arm, seed, wd, variant, data, extra)
  cmds = [cmd]
  if arm.init_only and not os.path.isdir(os.path.join(wd, "checkpoints")):
    cmds.insert(0, [sys.executable, os.path.abspath(__file__), "init-state",
                    *cmd[3:]])
  return run_commands(cmds, wd, _done_file(arm, wd), f"{name} seed {seed}")


def arm_evals(arm: Arm, wd: str) -> dict | None:
  """evaluator name -> results of a finished run (None if not finished)."""
  res = read_json(_done_file(arm, wd))
  if res is None:
    return None
  return res if arm.init_only else res.get("evals", {})


# ---- statistics -------------------------------------------------------------
def verdict(diff: dict, higher_is_better: bool = True) -> str:
  """Whether a method - ablation difference agrees with 'method >= ablation'
  at the 95 % level."""
  if "ci95" not in diff:
    return "no interval (one seed each)"
  lo, hi = diff["ci95"] if higher_is_better else [-diff["ci95"][1],
                                                  -diff["ci95"][0]]
  if lo > 0:
    return "agrees (method better, interval above 0)"
  if hi < 0:
    return "disagrees (method worse, interval below 0)"
  return "inconclusive (interval contains 0)"


def aggregate(task, root, seeds, ablation_seeds, variant, argv) -> list[dict]:
  spec = TASKS[task]
  wall, epochs, per_metric, pretraining = 0.0, {}, {}, {}
  for name, arm in spec["arms"].items():
    for seed in (ablation_seeds if arm.ablation else seeds):
      wd = os.path.join(root, f"{name}_seed{seed}")
      evals = arm_evals(arm, wd)
      if evals is None:
        continue
      wall += sum(read_json(os.path.join(wd, "wall.json"), []))
      cfg = read_json(os.path.join(wd, "config.json"), {})
      stats = (None if arm.init_only else
               pretraining_stats(wd, int(cfg.get("batch_size", 0) or 0)))
      if stats:
        pretraining.setdefault(name, {})[seed] = stats
      if not arm.init_only and cfg.get("total_steps"):
        spe = max(1, spec["train_size"] // int(cfg["batch_size"]))
        epochs[name] = round(float(cfg["total_steps"]) / spe, 2)
      for metric, (_, where) in spec["metrics"].items():
        ename, key = where[arm.config]
        v = (evals.get(ename) or {}).get(key)
        if v is not None:
          per_metric.setdefault(metric, {}).setdefault(name, {})[seed] = \
              float(v)
  eps = sorted(set(epochs.values()))
  ep = eps[0] if len(eps) == 1 else dict(sorted(epochs.items()))
  # examples seen, as a fraction of the reference run's
  frac = (ep * spec["train_size"] / (spec["reference_epochs"]
                                     * spec["reference_train"])
          if isinstance(ep, (int, float)) else None)
  out = []
  for metric, (mname, _) in spec["metrics"].items():
    values = per_metric.get(metric, {})
    if not values:
      continue
    res = dict(
        task=f"{task}_{metric}", dataset=spec["dataset"], metric=mname,
        higher_is_better=True,
        command="python benchmarks/reproduce_images.py " + " ".join(argv),
        budget=dict(wall_minutes=round(wall / 60, 1), epochs=ep,
                    fraction_of_reference=frac,
                    fraction_is="examples seen / the reference run's",
                    reference_epochs=spec["reference_epochs"],
                    model=spec["model"], variant=variant),
        seeds=dict(main=list(seeds), ablation=list(ablation_seeds)),
        ablation_arms=[n for n, a in spec["arms"].items()
                       if a.ablation and n in values],
        arms=arms_stats(values),
        # per arm and seed: images/s, input-wait share, final monitors
        pretraining={n: p for n, p in pretraining.items() if n in values})
    base = values.get("random_init")
    for name, v in values.items():
      if name != "random_init" and base:
        res[f"{name}_minus_random_init"] = difference(v, base)
    comps = {}
    for a, b, claim in spec["comparisons"]:
      if a in values and b in values:
        d = difference(values[a], values[b])
        comps[f"{a}_minus_{b}"] = dict(d, claim=claim, verdict=verdict(d))
    if comps:
      res["comparisons"] = comps
    tmetric, margin = spec["target"]
    if metric == tmetric and base:
      res["target"] = dict(
          margin=margin, rule=f"every SSL arm >= random_init + {margin}",
          met={n: res[f"{n}_minus_random_init"]["mean"] >= margin
               for n in values if n != "random_init"})
    out.append(res)
  return out


# ---- random init: the initial state as checkpoint step 0 -------------------
def init_state_main(argv):
  """``init-state --config=... --workdir=... [--config.x=y ...]``: build the
  initial training state exactly as the train loop does (config seed, the
  step-0 batch's shapes) and save it as checkpoint step 0, so that
  ``maskssl.main --mode=evaluate --step=0`` evaluates the untrained encoder
  through the CLI's own evaluation path."""
  sys.path.insert(0, REPO)
  from absl import app, flags
  from ml_collections import config_flags
  cfg_flag = config_flags.DEFINE_config_file("config", None, "config")
  wd_flag = flags.DEFINE_string("workdir", None, "run directory")
  flags.DEFINE_string("mode", None, "ignored (evaluate)")
  flags.DEFINE_integer("step", None, "ignored (0)")

  def main(_):
    from maskssl import checkpoint as ckpt_lib
    from maskssl import parallel, run as run_lib, train as train_lib
    from maskssl.data import load_source
    from maskssl.data.base import steps_per_epoch
    config = cfg_flag.value
    mesh = parallel.make_mesh()
    dataset = load_source(config.data, config.data.get("pretrain_split",
                                                       "pretrain"))
    config, lc = run_lib._resolve_length(config, dataset)
    method = run_lib._build(config)[0]
    first = train_lib.example_batch(dataset, lc)
    state, _ = train_lib.init_state(method, first, lc, mesh)
    spe = steps_per_epoch(len(dataset), lc.batch_size)
    meta = dict(method=config.method, stage=lc.stage, steps_per_epoch=spe,
                total_steps=lc.total_steps, batch_size=lc.batch_size,
                seed=lc.seed, num_examples=len(dataset),
                batch_spec=train_lib.batch_spec(first),
                note="initial state (random init), not trained")
    train_lib.save_run_config(config, wd_flag.value)
    ck = ckpt_lib.Checkpointer(os.path.join(wd_flag.value, "checkpoints"),
                               1, False)
    ck.save(0, state, meta, force=True)
    ck.close()
    print(f"wrote the initial state as step 0 in {wd_flag.value}",
          flush=True)

  app.run(main, argv=[argv[0]] + argv[2:])


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "init-state":
    return init_state_main(sys.argv)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", choices=sorted(TASKS), required=True)
  p.add_argument("--seeds", default="0,1,2", help="main arms' seeds")
  p.add_argument("--ablation_seeds", default="0")
  p.add_argument("--arms", default="", help="default: all of the task's")
  p.add_argument("--variant", default="cpu",
                 help="config variant (quick: smoke test)")
  p.add_argument("--data", default=os.environ.get(
      "MASKSSL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared",
                                          "data")))
  p.add_argument("--root", default="", help="default: ~/maskssl_runs/"
                 "reproduce_images_<task>[_<variant>]")
  add_run_flags(p)
  args = p.parse_args()
  spec = TASKS[args.task]
  suffix = "" if args.variant == "cpu" else f"_{args.variant}"
  root = args.root or os.path.expanduser(os.path.join(
      "~", "maskssl_runs", f"reproduce_images_{args.task}{suffix}"))
  seeds = [int(s) for s in args.seeds.split(",")]
  ablation_seeds = [int(s) for s in args.ablation_seeds.split(",")]
  names = args.arms.split(",") if args.arms else list(spec["arms"])
  unknown = set(names) - set(spec["arms"])
  if unknown:
    sys.exit(f"unknown arm(s) {sorted(unknown)}; {args.task} has "
             f"{sorted(spec['arms'])}")
  extra = shlex.split(args.extra_flags)
  for name in names:
    arm = spec["arms"][name]
    for seed in (ablation_seeds if arm.ablation else seeds):
      run(args.task, name, arm, seed, root, args.variant, args.data, extra)
  argv = [f"--task={args.task}", f"--seeds={args.seeds}",
          f"--ablation_seeds={args.ablation_seeds}"]
  argv += [f"--variant={args.variant}"] if args.variant != "cpu" else []
  argv += [f"--extra_flags={shlex.quote(args.extra_flags)}"] \
      if args.extra_flags else []
  write_results(aggregate(args.task, root, seeds, ablation_seeds,
                          args.variant, argv), args.results, suffix)

if __name__ == "__main__":
  main()
