"""kNN protocols: the two weighted votes against hand computations, the
previous-epoch bank (MetaMask reference), and kNN every epoch with the best
and final epoch in the summary and metrics.jsonl."""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maskssl import methods as methods_lib
from maskssl import run as run_lib
from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data.base import ArrayDataset
from maskssl.evaluators import knn as knn_lib
from maskssl.evaluators import make_evaluator
from maskssl.methods.base import Method, gradient_step, optax_state

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")

# 6-point bank: unit directions with cosines 1, .8, .6, 0, -.6, -1 to the
# query (1, 0), stored at different norms (the vote must normalise them)
BANK = np.array([[3, 0], [0.8, 0.6], [1.2, 1.6], [0, 0.5], [-0.6, 0.8],
                 [-2, 0]], np.float32)
LABELS = np.array([0, 1, 1, 2, 2, 0])
QUERY = np.array([[2, 0]], np.float32)


def _scores(k, t):
  return np.asarray(knn_lib.knn_scores(
      jnp.asarray(QUERY), jnp.asarray(BANK), jnp.asarray(LABELS), 3, k, t))[0]


def test_metamask_vote_k5_t1_by_hand():
  # top-5 = cosines 1 (class 0), .8, .6 (class 1), 0, -.6 (class 2);
  # the 6th (-1, class 0) is out
  e = math.exp
  want = [e(1.0), e(0.8) + e(0.6), e(0.0) + e(-0.6)]
  np.testing.assert_allclose(_scores(5, 1.0), want, rtol=1e-6)
  # 2.718 / 4.048 / 1.549: the weighted vote picks class 1, although the
  # nearest neighbour is class 0 and classes 1 and 2 have two votes each
  pred = knn_lib.knn_predict(jnp.asarray(QUERY), jnp.asarray(BANK),
                             jnp.asarray(LABELS), 3, 5, 1.0)
  assert int(pred[0]) == 1


def test_solo_learn_vote_k20_t007_by_hand():
  # k=20 > 6 bank points: all six vote (solo-learn's min(k, N))
  e, t = math.exp, 0.07
  want = [e(1 / t) + e(-1 / t), e(0.8 / t) + e(0.6 / t),
          e(0.0 / t) + e(-0.6 / t)]
  np.testing.assert_allclose(_scores(20, t), want, rtol=1e-5)
  # 1.6e6 vs 9.7e4 vs 1.0: the sharp vote follows the nearest neighbour
  pred = knn_lib.knn_predict(jnp.asarray(QUERY), jnp.asarray(BANK),
                             jnp.asarray(LABELS), 3, 20, t)
  assert int(pred[0]) == 0


def test_configs_use_their_protocols():
  mm = load_config_file(os.path.join(ROOT, "metamask_cifar10.py")).evals.knn
  assert (mm.k, mm.temperature, mm.every_epochs, mm.every) == (5, 1.0, 1, 0)
  q = load_config_file(os.path.join(ROOT, "metamask_cifar10.py:quick"))
  assert q.evals.knn.every_epochs == 0 and q.evals.knn.every == 0
  ms = load_config_file(os.path.join(ROOT, "mscn_cifar10.py")).evals.knn
  assert (ms.k, ms.temperature) == (20, 0.07)


# -- previous-epoch bank ------------------------------------------------------

def _two_class(n, seed):
  """Class 0 around +x, class 1 around -x."""
  r = np.random.default_rng(seed)
  y = np.arange(n) % 2
  x = np.stack([np.where(y == 0, 1.0, -1.0), 0.1 * r.normal(size=n)], 1)
  return ArrayDataset({"x": x.astype(np.float32), "label": y.astype(np.int32)},
                      dict(num_classes=2))


def _knn(monkeypatch, **kw):
  splits = {"train": _two_class(16, 0), "test": _two_class(8, 1)}
  monkeypatch.setattr("maskssl.data.load_split", lambda cfg, s: splits[s])
  fns = {"encode": lambda state, batch: batch["x"] * state["w"]}
  ecfg = ml_collections.ConfigDict(dict(type="knn", k=3, **kw))
  return make_evaluator("knn", ecfg, ml_collections.ConfigDict(
      dict(data=dict(name="cifar10"))), fns), splits


def test_previous_bank_holds_the_earlier_calls_features(monkeypatch, tmp_path):
  ev, splits = _knn(monkeypatch, bank="previous")
  a, b = {"w": jnp.float32(1.0)}, {"w": jnp.float32(-1.0)}
  # first call: no earlier bank, falls back to the current one
  assert ev.run(a, str(tmp_path / "a")) == {"knn_top1": 1.0,
                                           "knn_bank_previous": 0.0}
  np.testing.assert_array_equal(ev.previous_bank, splits["train"].arrays["x"])
  # second call: queries from b (negated), bank still a's -> every test point
  # lands among the other class
  assert ev.run(b, str(tmp_path / "b")) == {"knn_top1": 0.0,
                                           "knn_bank_previous": 1.0}
  np.testing.assert_array_equal(ev.previous_bank,
                                -splits["train"].arrays["x"])
  doc = json.load(open(tmp_path / "b" / "knn.json"))
  assert doc["bank"] == "previous" and doc["knn_bank_previous"] == 1.0
  # the current-bank evaluator scores b against b's own bank
  cur, _ = _knn(monkeypatch)
  assert cur.run(b, None) == {"knn_top1": 1.0}


def test_bank_mode_and_period_are_checked():
  with pytest.raises(ConfigError, match="bank='last'"):
    make_evaluator("knn", ml_collections.ConfigDict(
        dict(type="knn", bank="last")), ml_collections.ConfigDict(
            dict(data=dict(name="cifar10"))), {"encode": lambda s, b: b})
  c = load_config_file(os.path.join(ROOT, "mscn_cifar10.py:quick"))
  with c.unlocked():
    c.evals.knn.every, c.evals.knn.every_epochs = 4, 1
  with pytest.raises(ConfigError, match="every_epochs, not both"):
    run_lib._validate(c)


# -- every epoch during pretraining -----------------------------------------

class LinearEncoder(Method):
  """A stand-in method for the pipeline test (compiles in a second): a
  linear map of the flattened image, trained to shrink its features."""
  name = "knn_toy"

  def __init__(self, config):
    super().__init__(config)
    self.tx = optax.sgd(2e-4)    # stable on raw pixels (d = 3072)

  def init_state(self, rng, batch):
    d = int(np.prod(batch["image"].shape[1:]))
    return optax_state({"w": jax.random.normal(rng, (d, 8)) / d ** 0.5},
                       self.tx)

  def encode(self, state, batch):
    x = jnp.asarray(batch["image"], jnp.float32) / 255.0
    return x.reshape(x.shape[0], -1) @ state["params"]["w"]

  def train_step(self, state, batch, rng):
    loss = lambda p: (jnp.mean(self.encode(dict(params=p), batch) ** 2), {})  # noqa: E731
    return gradient_step(state, self.tx, loss)


def _epoch_config(monkeypatch=None):
  if monkeypatch is not None:
    monkeypatch.setitem(methods_lib._REGISTRY, "knn_toy",
                        "test_knn_protocol:LinearEncoder")
  data = load_config_file(os.path.join(ROOT, "mscn_cifar10.py:quick")).data
  c = ml_collections.ConfigDict(dict(
      method="knn_toy", seed=0, batch_size=32, num_epochs=0.0,
      total_steps=6, checkpoint_every=6, log_every=2, keep_checkpoints=2,
      async_checkpoints=False, data=data.to_dict(),
      evals=dict(knn=dict(type="knn", k=5, temperature=1.0,
                          bank="previous", every_epochs=1))))
  c.data.max_train, c.data.max_test = 64, 32   # 2 steps per epoch at 32
  return c


def _knn_lines(wd):
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  return [l for l in lines if l["stage"] == "eval/knn"]


def test_knn_every_epoch_reports_best_and_final_epoch(tmp_path, monkeypatch):
  c = _epoch_config(monkeypatch)
  wd = str(tmp_path / "run")
  summary = run_lib.train_and_evaluate(c, wd)
  knn = _knn_lines(wd)
  assert [l["step"] for l in knn] == [2, 4, 6]
  assert [l["epoch"] for l in knn] == [1.0, 2.0, 3.0]
  assert [l["knn_bank_previous"] for l in knn] == [0.0, 1.0, 1.0]
  final = summary["evals"]["knn"]
  best = max(knn, key=lambda l: l["knn_top1"])
  assert final["knn_top1"] == knn[-1]["knn_top1"]
  assert final["best_knn_top1"] == best["knn_top1"]
  assert (final["best_step"], final["best_epoch"]) == (best["step"],
                                                       best["epoch"])
  assert final["final_epoch"] == 3.0
  # the final line of metrics.jsonl carries the same best / final keys
  for key in ("best_knn_top1", "best_step", "best_epoch", "final_epoch"):
    assert knn[-1][key] == final[key]

  # the run again (restored at its last step, nothing left to train): the
  # best still covers the online evaluations logged by the first attempt,
  # and the fresh evaluator has no earlier bank (falls back to current)
  again = run_lib.train_and_evaluate(c, wd)
  assert again["pretrain"]["start_step"] == 6
  new = _knn_lines(wd)[len(knn):]
  assert [l["step"] for l in new] == [6]
  assert new[0]["knn_bank_previous"] == 0.0
  hist = knn[:2] + new
  best = max(hist, key=lambda l: l["knn_top1"])
  res = again["evals"]["knn"]
  assert (res["best_knn_top1"], res["best_step"]) == (best["knn_top1"],
                                                      best["step"])
  assert res["final_epoch"] == 3.0


def test_resumed_history_takes_logged_online_steps_up_to_the_checkpoint(
    tmp_path):
  rows = [dict(step=2, stage="eval/knn", knn_top1=0.3, epoch=1.0),
          dict(step=3, stage="eval/knn", knn_top1=0.9),   # evaluate-only
          dict(step=2, stage="pretrain", loss=1.0),
          dict(step=4, stage="eval/knn", knn_top1=0.5, epoch=2.0),
          dict(step=6, stage="eval/knn", knn_top1=0.8, epoch=3.0)]  # after
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
    f.write('{"step": 8, "stage": "eval/kn')        # torn by a kill
  logged = run_lib._logged_evals(str(tmp_path))
  assert logged == {"knn": {2: {"knn_top1": 0.3}, 3: {"knn_top1": 0.9},
                            4: {"knn_top1": 0.5}, 6: {"knn_top1": 0.8}}}
  c = _epoch_config()                           # total 6, every 2 steps
  history = {"knn": [(6, {"knn_top1": 0.1})]}   # this attempt's (resumed
  run_lib._resumed_history(c, history, logged, 4, 2)   # at step 4)
  assert history["knn"] == [(2, {"knn_top1": 0.3}), (4, {"knn_top1": 0.5}),
                            (6, {"knn_top1": 0.1})]


def test_best_and_final_epoch_from_the_history():
  hist = [(2, {"knn_top1": 0.3}), (4, {"knn_top1": 0.6}),
          (6, {"knn_top1": 0.4})]           # the final evaluation is last
  res = run_lib._with_best(knn_lib.Knn, {"knn_top1": 0.4}, hist, spe=2)
  assert res == {"knn_top1": 0.4, "best_knn_top1": 0.6, "best_step": 4.0,
                 "best_epoch": 2.0, "final_epoch": 3.0}
  # without steps per epoch (evaluate-only): steps only
  assert "best_epoch" not in run_lib._with_best(knn_lib.Knn, {"knn_top1": 0.4},
                                                hist)
