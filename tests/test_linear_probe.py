"""Linear-probe evaluator, fixed-feature mode: standardisation, fitting, AUC,
run() plumbing."""
import json

import jax.numpy as jnp
import ml_collections
import numpy as np

from maskssl.evaluators import get_evaluator, linear_probe, make_evaluator


def test_standardize_uses_train_statistics():
  rs = np.random.RandomState(0)
  a, b = rs.randn(50, 3) * 4 + 2, rs.randn(20, 3)
  sa, sb = linear_probe.standardize(a, b)
  np.testing.assert_allclose(sa.mean(0), 0, atol=1e-10)
  np.testing.assert_allclose(sa.std(0), 1, atol=1e-6)
  np.testing.assert_allclose(sb, (b - a.mean(0)) / np.sqrt(a.var(0) + 1e-6))


def test_separable_binary_and_chance_level():
  rs = np.random.RandomState(0)
  y = np.arange(200) % 2
  x = rs.randn(200, 8) * 0.5
  x[:, 3] += np.where(y == 1, 2.0, -2.0)
  kw = dict(epochs=20, batch_size=50, warmup_epochs=2)
  res = linear_probe.probe_scores(x[:100], y[:100], x[100:], y[100:], **kw)
  assert res["accuracy"] == 1.0 and res["auc"] == 1.0
  noise = rs.randn(200, 8)
  res = linear_probe.probe_scores(noise[:100], y[:100], noise[100:], y[100:],
                                  **kw)
  assert 0.3 < res["auc"] < 0.7 and 0.3 < res["accuracy"] < 0.7


def test_multiclass_no_auc_and_weights_match_direction():
  rs = np.random.RandomState(1)
  y = np.arange(150) % 3
  centers = np.eye(3) * 3
  x = centers[y] + rs.randn(150, 3) * 0.3
  res = linear_probe.probe_scores(x, y, x, y, epochs=30, batch_size=50,
                                  warmup_epochs=2)
  assert "auc" not in res and res["accuracy"] > 0.97
  w, b = linear_probe.fit_linear(x, y, 3, epochs=30, batch_size=50,
                                 warmup_epochs=2)
  assert (np.argmax(w, axis=1) == np.arange(3)).all()


class _MeanColourMethod:
  """A stand-in method: features = per-channel mean intensity."""

  def encode(self, state, batch):
    x = batch["image"].astype(jnp.float32) / 255.0
    return jnp.mean(x, axis=(1, 2)) * state["scale"]


def test_run_on_embedded_pcam(tmp_path):
  config = ml_collections.ConfigDict(dict(data=dict(name="pcam")))
  # the cheap fixed-feature mode (the reference protocol: test_linear_probe_
  # protocol.py); test_crop=1 keeps the 96 px patches as they are
  ecfg = ml_collections.ConfigDict(dict(type="linear_probe", epochs=40,
                                        batch_size=80, warmup_epochs=2,
                                        augment=False, norm="standardize",
                                        test_crop=1.0))
  ev = make_evaluator("probe", ecfg, config,
                      {"encode": _MeanColourMethod().encode})
  assert isinstance(ev, get_evaluator("linear_probe"))
  res = ev.run({"scale": jnp.float32(1.0)}, str(tmp_path))
  assert set(res) == {"accuracy", "auc", "train_accuracy"}
  assert 0.0 <= res["auc"] <= 1.0
  saved = json.load(open(tmp_path / "linear_probe.json"))
  assert saved["num_train"] == 160 and saved["num_test"] == 100
  assert saved["feature_dim"] == 3
  # the AUC is the AUC of the fitted probe on the extracted features
  from maskssl.data import load_split
  tr, te = load_split(config.data, "train"), load_split(config.data, "test")
  f = lambda d: d.arrays["image"].astype(np.float32).mean((1, 2)) / 255.0
  direct = linear_probe.probe_scores(f(tr), tr.arrays["label"], f(te),
                                     te.arrays["label"], epochs=40,
                                     batch_size=80, warmup_epochs=2)
  np.testing.assert_allclose(res["auc"], direct["auc"], atol=1e-6)
