"""benchmarks/reproduce_sma.py: result files from fine-tune results (no runs)."""
import json
import os
import sys

import numpy as np
import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import reproduce_sma  # noqa: E402


def _write(root, arm, name, task, runs, step=5):
  d = os.path.join(root, f"{arm}_seed0", "eval", f"step{step}", name)
  os.makedirs(d)
  with open(os.path.join(d, "results.json"), "w") as f:
    json.dump(dict(task=task, runs=runs), f)


def _run(init, seed, n, **m):
  return dict(init=init, seed=seed, n_labels=n, best_step=3,
              **{f"best_{k}": v for k, v in m.items()})


def test_aggregate_arms_metrics_and_paired_interval(tmp_path):
  cfg, evals = reproduce_sma._finetune_evals("configs/sma_molecule.py:quick")
  assert set(evals) == {"finetune_bbbp", "finetune_esol"}
  root = str(tmp_path)
  sma = [0.70, 0.74, 0.72]
  scratch = [0.65, 0.66, 0.70]
  rnd = [0.69, 0.70, 0.71]
  _write(root, "sma", "finetune_bbbp", "binary_mse",
         [_run("pretrained", s, 1640, auc=v, accuracy=0.8)
          for s, v in enumerate(sma)] +
         [_run("scratch", s, 1640, auc=v, accuracy=0.7)
          for s, v in enumerate(scratch)])
  _write(root, "random_mask", "finetune_bbbp", "binary_mse",
         [_run("pretrained", s, 1640, auc=v, accuracy=0.75)
          for s, v in enumerate(rnd)])
  # an older checkpoint's evaluation must be ignored
  _write(root, "sma", "finetune_esol", "regression",
         [_run("pretrained", 0, 900, rmse=9.0, spearman=0.1)], step=2)
  _write(root, "sma", "finetune_esol", "regression",
         [_run("pretrained", 0, 900, rmse=1.5, spearman=0.5),
          _run("scratch", 0, 900, rmse=2.0, spearman=0.4)], step=10)
  out = {r["task"]: r for r in reproduce_sma.aggregate(
      "molecule", cfg, evals, root, [0], [0, 1, 2], ["--domain=molecule"])}
  assert set(out) == {"sma_bbbp", "sma_esol"}
  b = out["sma_bbbp"]
  assert (b["metric"], b["higher_is_better"]) == ("roc_auc", True)
  assert b["arms"]["sma"]["values"] == sma
  assert b["arms"]["random_mask"]["n"] == 3
  np.testing.assert_allclose(b["arms"]["scratch"]["std"],
                             np.std(scratch, ddof=1))
  d = np.subtract(sma, scratch)
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
  np.testing.assert_allclose(b["sma_minus_scratch"]["ci95"],
                             [d.mean() - half, d.mean() + half])
  assert b["other_metrics"]["accuracy"]["random_mask"]["mean"] == 0.75
  e = out["sma_esol"]
  assert (e["metric"], e["higher_is_better"]) == ("rmse", False)
  assert e["arms"]["sma"]["values"] == [1.5]  # step 10, not step 2
  assert "ci95" not in e["sma_minus_scratch"]


def test_command_trains_scratch_once_and_passes_seeds():
  cfg, evals = reproduce_sma._finetune_evals("configs/sma_molecule.py:quick")
  sma = reproduce_sma.command("sma", 0, [0, 1], "/w", "c", evals, [])
  rnd = reproduce_sma.command("random_mask", 0, [1], "/w", "c", evals, [])
  assert "--config.evals.finetune_bbbp.seeds=(0,1)" in sma
  assert not any(".inits=" in a for a in sma)
  assert "--config.evals.finetune_esol.seeds=(1,)" in rnd
  assert "--config.evals.finetune_esol.inits=('pretrained',)" in rnd
  assert "--config.mask.mask_mode=random" in rnd


def test_metric_for_unknown_task():
  with pytest.raises(ValueError, match="no reported metric"):
    reproduce_sma.metric_for("ranking", {})


def test_results_table_renders_arms_and_intervals(tmp_path):
  import results_table
  res = dict(task="sma_bbbp", metric="rmse", higher_is_better=False,
             command="python benchmarks/reproduce_sma.py --domain=molecule",
             budget=dict(wall_minutes=40.0, pretrain_steps=12000,
                         batch_size=32, fraction_of_reference=0.013),
             arms=dict(scratch=dict(mean=1.25, std=0.05, n=3, values=[]),
                       sma=dict(mean=1.0, std=0.1, n=3, values=[])),
             sma_minus_scratch=dict(mean=-0.25, ci95=[-0.4, -0.1]))
  p = tmp_path / "reproduce_sma_bbbp.json"
  p.write_text(json.dumps(res))
  md = results_table.table([str(p)])
  row = md.splitlines()[2]
  assert row.index("sma: 1.000 ± 0.100 (n=3)") < row.index("scratch: 1.250")
  assert "sma − scratch -0.250 [-0.400, -0.100]" in row
  assert "rmse (lower is better)" in row and "0.013 of reference" in row
  assert results_table.table([]) == "No reproduction has finished yet.\n"
