"""Evaluators during pretraining: ``config.evals.<name>.every``."""
import json
import os

import pytest

from maskssl import run as run_lib
from maskssl.config_utils import load_config_file
from maskssl.evaluators import make_evaluator

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_online_knn_every_20_matches_offline_checkpoint(tmp_path,
                                                         monkeypatch):
  c = load_config_file(os.path.join(ROOT, "mscn_cifar10.py:quick"))
  with c.unlocked():
    c.total_steps = 50          # the quick run is 6 steps: long enough here
    c.checkpoint_every = 20
    c.keep_checkpoints = 5
    c.log_every = 10
    c.evals = {"knn": c.evals.knn}
    c.evals.knn.every = 20
  wd = str(tmp_path / "run")
  summary = run_lib.train_and_evaluate(c, wd)
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  knn = [l for l in lines if l["stage"] == "eval/knn"]
  assert [l["step"] for l in knn] == [20, 40, 50]
  assert all("lr" in l for l in lines if l["stage"] == "pretrain")
  final = summary["evals"]["knn"]
  assert final["knn_top1"] == knn[-1]["knn_top1"]
  best = max(knn, key=lambda l: l["knn_top1"])
  assert final["best_step"] == best["step"]
  assert final["best_knn_top1"] == best["knn_top1"]
  # the step-40 value is an offline evaluation of the step-40 checkpoint;
  # evaluate-only takes the state's shapes from the checkpoint, not the data
  def no_pretraining_split(*a, **k):
    raise AssertionError("evaluate-only loaded the pretraining split")
  monkeypatch.setattr(run_lib, "load_source", no_pretraining_split)
  method, state, step = run_lib.restore_state(c, wd, step=40)
  assert step == 40
  off = make_evaluator("knn", c.evals.knn, c, method.predict_fns()).run(
      state, str(tmp_path / "offline"))
  assert off["knn_top1"] == pytest.approx(knn[1]["knn_top1"], abs=0)
