"""benchmarks/reproduce_images.py: commands, intervals and result files from
hand-written run outputs (no runs)."""
import json
import os
import sys

import numpy as np
import pytest
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import reproduce_images as ri  # noqa: E402


def _write(root, name, seed, evals, init_only=False, total_steps=1750,
           batch_size=256):
  wd = os.path.join(root, f"{name}_seed{seed}")
  os.makedirs(wd)
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump(dict(total_steps=total_steps, batch_size=batch_size), f)
  with open(os.path.join(wd, "wall.json"), "w") as f:
    json.dump([60.0], f)
  if init_only:
    with open(os.path.join(wd, "eval_step0.json"), "w") as f:
      json.dump(evals, f)
  else:
    with open(os.path.join(wd, "summary.json"), "w") as f:
      json.dump(dict(pretrain={}, evals=evals), f)


def _mscn(k20, k5, lin):
  return dict(knn=dict(knn_top1=k20), knn_k5=dict(knn_top1=k5),
              linear_probe=dict(accuracy=lin, train_accuracy=0.9))


def test_cifar_aggregate_arms_baseline_and_comparisons(tmp_path):
  root = str(tmp_path)
  rnd = [0.30, 0.31, 0.29]
  vic = [0.45, 0.47, 0.46]
  mvic = [0.50, 0.49, 0.53]
  for s in range(3):
    _write(root, "random_init", s, _mscn(rnd[s], 0.2, 0.3), init_only=True)
    _write(root, "vicreg", s, _mscn(vic[s], 0.4, 0.5))
    _write(root, "mscn_vicreg", s, _mscn(mvic[s], 0.45, 0.55))
    # MetaMask's evaluators are named the other way round
    _write(root, "metamask", s, dict(knn=dict(knn_top1=0.6),
                                     knn_k20=dict(knn_top1=0.5 + 0.01 * s),
                                     linear_probe=dict(accuracy=0.6)))
  _write(root, "mscn_vicreg_zero_fill", 0, _mscn(0.40, 0.3, 0.4))
  _write(root, "bt_ntxent", 0, dict(knn=dict(knn_top1=0.5),
                                    knn_k20=dict(knn_top1=0.52),
                                    linear_probe=dict(accuracy=0.55)))
  # a seed that is not asked for is ignored
  _write(root, "vicreg", 7, _mscn(0.99, 0.99, 0.99))
  out = {r["task"]: r for r in ri.aggregate(
      "cifar10", root, [0, 1, 2], [0], "cpu", ["--task=cifar10"])}
  assert set(out) == {"cifar10_knn_k20", "cifar10_knn_k5",
                      "cifar10_linear_probe"}
  k = out["cifar10_knn_k20"]
  assert k["metric"].startswith("knn_top1 (k=20") and k["higher_is_better"]
  assert k["arms"]["vicreg"]["values"] == vic
  np.testing.assert_allclose(k["arms"]["random_init"]["std"],
                             np.std(rnd, ddof=1))
  assert k["arms"]["metamask"]["values"] == [0.5, 0.51, 0.52]
  assert out["cifar10_knn_k5"]["arms"]["metamask"]["mean"] == 0.6
  # budget: 1750 steps of 45,000 // 256 = 175 per epoch
  b = k["budget"]
  # 14 requested runs of 1 minute each (seed 7 is not counted)
  assert b["epochs"] == 10.0 and b["wall_minutes"] == 14.0
  np.testing.assert_allclose(b["fraction_of_reference"],
                             10 * 45000 / (800 * 50000))
  # paired difference vs random init, with a t interval
  d = np.subtract(vic, rnd)
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
  got = k["vicreg_minus_random_init"]
  np.testing.assert_allclose(got["ci95"], [d.mean() - half, d.mean() + half])
  assert got["method"] == "paired by seed"
  assert k["target"]["met"] == {"vicreg": True, "mscn_vicreg": True,
                                "metamask": True, "mscn_vicreg_zero_fill":
                                True, "bt_ntxent": True}
  c = k["comparisons"]
  assert set(c) == {"mscn_vicreg_minus_vicreg",
                    "mscn_vicreg_minus_mscn_vicreg_zero_fill",
                    "metamask_minus_bt_ntxent"}
  # one-seed ablation: unpaired, the method's spread for both
  z = c["mscn_vicreg_minus_mscn_vicreg_zero_fill"]
  half = stats.t.ppf(0.975, 2) * np.std(mvic, ddof=1) * np.sqrt(1 / 3 + 1)
  np.testing.assert_allclose(z["mean"], np.mean(mvic) - 0.40)
  np.testing.assert_allclose(z["ci95"], [z["mean"] - half, z["mean"] + half])
  assert z["verdict"].startswith("agrees")
  assert c["metamask_minus_bt_ntxent"]["verdict"].startswith(
      "inconclusive")   # -0.01 +- a wide interval
  assert k["ablation_arms"] == ["mscn_vicreg_zero_fill", "bt_ntxent"]


def test_pcam_reads_probe_and_finetune_metrics(tmp_path):
  root = str(tmp_path)
  for s in range(2):
    ev = dict(linear_probe=dict(auc=(0.7, 0.8)[s], accuracy=0.6),
              finetune={"n0/pretrained/best_auc": 0.8,
                        "n0/pretrained/best_accuracy": 0.75})
    _write(root, "sdmae", s, ev, total_steps=700, batch_size=128)
    _write(root, "random_init", s, dict(linear_probe=dict(auc=0.6,
                                                          accuracy=0.5)),
           init_only=True)
  out = {r["task"]: r for r in ri.aggregate(
      "pcam", root, [0, 1], [0], "cpu", ["--task=pcam"])}
  assert out["pcam_linear_probe_auc"]["arms"]["sdmae"]["values"] == [0.7,
                                                                     0.8]
  assert out["pcam_finetune_auc"]["arms"] == {
      "sdmae": dict(mean=0.8, std=0.0, n=2, values=[0.8, 0.8], seeds=[0, 1])}
  assert out["pcam_linear_probe_auc"]["budget"]["epochs"] == 10.0  # 700/70
  assert "comparisons" not in out["pcam_linear_probe_auc"]   # no MAE arm
  assert out["pcam_linear_probe_auc"]["pretraining"] == {}  # no metrics


def test_pretraining_throughput_wait_share_and_monitors(tmp_path):
  root = str(tmp_path)
  _write(root, "sdmae", 0, dict(linear_probe=dict(auc=0.7, accuracy=0.6)),
         total_steps=700, batch_size=128)
  lines = [dict(step=0, stage="pretrain", loss=2.0, steps_per_sec=None),
           dict(step=20, stage="pretrain", loss=1.5, steps_per_sec=2.0,
                data_wait_share=0.01),
           dict(step=20, stage="eval/knn", knn_top1=0.3),
           dict(step=40, stage="pretrain", loss=1.2, steps_per_sec=3.0,
                data_wait_share=0.03, emb_std=0.02, emb_rank=12.5),
           dict(step=60, stage="pretrain", loss=1.1, steps_per_sec=4.0,
                data_wait_share=0.02, emb_std=0.03, emb_rank=13.0)]
  with open(os.path.join(root, "sdmae_seed0", "metrics.jsonl"), "w") as f:
    f.write("\n".join(json.dumps(l) for l in lines) + "\n")
  out = {r["task"]: r for r in ri.aggregate(
      "pcam", root, [0], [0], "cpu", ["--task=pcam"])}
  assert out["pcam_linear_probe_auc"]["pretraining"] == {"sdmae": {0: dict(
      examples_per_s=3.0 * 128, data_wait_share=0.02, final_loss=1.1,
      final_emb_std=0.03, final_emb_rank=13.0)}}


@pytest.mark.parametrize("a,b,want", [
    ({0: 1.0}, {0: 0.5}, "no interval"),
    ({0: 0.6, 1: 0.62, 2: 0.61}, {0: 0.5, 1: 0.5, 2: 0.52}, "agrees"),
    ({0: 0.4, 1: 0.42, 2: 0.41}, {0: 0.5, 1: 0.5, 2: 0.52}, "disagrees"),
])
def test_verdicts(a, b, want):
  assert ri.verdict(ri.difference(a, b)).startswith(want)


def test_commands_random_init_evaluates_step_zero():
  task = ri.TASKS["cifar10"]
  cmd = ri.command("cifar10", task["arms"]["random_init"], 1, "/w", "cpu",
                   "/d", ["--x"])
  assert "--config=configs/mscn_cifar10.py:cpu" in cmd
  assert {"--mode=evaluate", "--step=0", "--config.seed=1",
          "--config.mscn.enabled=False",
          "--config.data.path=/d/cifar10_full/train.tar",
          "--config.data.test_size=5000", "--x"} <= set(cmd)
  bt = ri.command("cifar10", task["arms"]["bt_alone"], 0, "/w", "cpu", "/d",
                  [])
  assert "--config=configs/metamask_cifar10.py:cpu" in bt
  assert {"--config.metamask.enable_meta=False",
          "--config.metamask.w_cl=0.0"} <= set(bt)
  assert "--mode=evaluate" not in bt
  m = ri.command("cifar10", task["arms"]["mscn_barlow_twins"], 0, "/w",
                 "cpu", "/d", [])
  assert "--config=configs/mscn_cifar10.py:cpu,barlow_twins" in m
  p = ri.command("pcam", ri.TASKS["pcam"]["arms"]["mae"], 2, "/w", "cpu",
                 "/d", [])
  assert {"--config=configs/mae_pcam.py:cpu",
          "--config.evals.finetune.seeds=(2,)",
          "--config.evals.finetune.inits=('pretrained',)",
          "--config.data.path=/d/pcam_10k/train.tar"} <= set(p)


def test_every_arm_config_builds_and_has_the_metric_evaluators():
  from maskssl.config_utils import load_config_file
  for task, spec in ri.TASKS.items():
    for name, arm in spec["arms"].items():
      cfg = load_config_file(os.path.join(REPO, ri.config_arg(arm, "cpu")))
      for metric, (_, where) in spec["metrics"].items():
        ename, _ = where[arm.config]
        assert ename in cfg.evals, (task, name, metric)
