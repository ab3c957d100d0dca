"""python -m maskssl.export and maskssl.load on a tiny trained SMA run:
files, sidecar, bitwise round trip, errors."""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import maskssl
from maskssl import export as export_lib
from maskssl import interop, run as run_lib
from maskssl.config_utils import ConfigError
from maskssl.interop import sma as sma_interop
from sma_tiny import tiny_sma_particle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  c = tiny_sma_particle(width=16, heads=2, batch_size=16, total_steps=3,
                        checkpoint_every=3, log_every=1000)
  c.evals = ml_collections.ConfigDict()
  d = str(tmp_path_factory.mktemp("sma_run"))
  run_lib.train_and_evaluate(c, d)
  return d


def test_load_restores_the_trained_state(run):
  enc = maskssl.load(run)
  assert enc.step == 3 and enc.config.method == "sma"
  assert set(enc.input_spec) == {"x", "valid"}
  assert enc.input_spec["x"] == ((28, 1), "float32")
  assert len(enc.preprocessing["feature_mean"]) == 28
  data = enc.load_data("test")
  emb = enc.encode(data, batch_size=64)
  assert emb.shape == (1500, 16) and emb.dtype == np.float32
  # same as the method's own encode of a few rows (padding does not leak)
  few = {k: data.arrays[k][:5] for k in ("x", "valid")}
  direct = np.asarray(jax.jit(enc.method.encode)(enc.state, few))
  np.testing.assert_allclose(enc.encode(few), direct, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(emb[:5], direct, rtol=1e-6, atol=1e-6)
  with pytest.raises(ConfigError, match="per-example shape"):
    enc.encode({"x": np.zeros((2, 27, 1), np.float32),
                "valid": np.ones((2, 27), bool)})
  with pytest.raises(ConfigError, match="lacks"):
    enc.encode({"x": np.zeros((2, 28, 1), np.float32)})
  with pytest.raises(ConfigError, match="unknown data key"):
    enc.load_data("test", pathh="x.csv")


def test_export_cli_writes_official_names_and_round_trips(run, tmp_path):
  out = str(tmp_path / "sma.safetensors")
  proc = subprocess.run(
      [sys.executable, "-m", "maskssl.export", f"--workdir={run}",
       "--target=official", f"--out={out}"], cwd=REPO, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  side = json.load(open(str(tmp_path / "sma.json")))
  assert side["target"] == "official" and side["step"] == 3
  assert side["feature_dim"] == 16
  tensors = interop.load_state_dict(out)
  assert set(tensors) == set(side["tensors"])
  assert any(k.startswith("perceiver.") for k in tensors)
  enc = maskssl.load(run)
  back = sma_interop.import_into(enc.method, enc.state, tensors, "official")
  for a, b in zip(jax.tree.leaves(back["params"]),
                  jax.tree.leaves(enc.state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  bad = subprocess.run(
      [sys.executable, "-m", "maskssl.export", f"--workdir={run}",
       "--target=timm", f"--out={tmp_path / 'x.safetensors'}"], cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "official" in bad.stderr


def test_export_function_npz_and_missing_run(run, tmp_path):
  side = export_lib.export(run, "official", str(tmp_path / "e.npz"))
  with np.load(str(tmp_path / "e.npz")) as z:
    assert set(side["tensors"]) <= set(z.files)
  with pytest.raises(Exception, match="config.json"):
    maskssl.load(str(tmp_path / "nowhere"))


def test_sidecar_keeps_the_runs_fields_over_the_converters(run, tmp_path,
                                                           monkeypatch):
  """A converter's info may carry its own 'method' / 'step' (the ResNet one
  does): the sidecar keeps the run's values and the converter's others."""
  class Fake:
    @staticmethod
    def export(method, state, target):
      return ({"w": np.zeros((2, 3), np.float32)},
              dict(method="other", step=-1, feature_dim=3, stem="cifar"))
  monkeypatch.setattr(interop, "exporter", lambda name: Fake)
  side = export_lib.export(run, "official", str(tmp_path / "f.safetensors"))
  assert side["method"] == "sma" and side["step"] == 3
  assert side["feature_dim"] == 3 and side["stem"] == "cifar"
  assert json.load(open(str(tmp_path / "f.json")))["tensors"] == {
      "w": [[2, 3], "float32"]}
