"""Evaluator classes on stand-in functions: pictures, reports, contract."""
import inspect
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from maskssl.config_utils import ConfigError
from maskssl.evaluators import make_evaluator, mask_report, reconstruction


def _config():
  return ml_collections.ConfigDict(dict(data=dict(name="pcam")))


def test_reconstruction_writes_a_titled_upscaled_grid(tmp_path):
  def reconstruct(state, images, rng):
    x = images.astype(jnp.float32) / 255.0
    return x, jnp.where(x > 0.5, 0.5, x), 1.0 - x

  fns = {"reconstruct": reconstruct,
         "eval_step": lambda state, batch: {"loss_rec": jnp.float32(0.25)}}
  ecfg = ml_collections.ConfigDict(dict(type="reconstruction", num_images=3))
  ev = make_evaluator("reconstruction", ecfg, _config(), fns)
  res = ev.run({}, str(tmp_path))
  assert res == {"recon_loss": 0.25}
  with Image.open(tmp_path / "reconstruction.png") as im:
    w, h = im.size
  assert w >= 300 and h >= 300    # readable, not 32-pixel thumbnails
  # the picture is the evaluator's: no dependency on a method module
  assert "maskssl.methods" not in inspect.getsource(reconstruction)


def test_mask_report_from_mask_values(tmp_path):
  logits = jnp.linspace(-2.0, 2.0, 16)
  fns = {"mask_values": lambda state: (jax_sigmoid(state["mask"]),
                                       state["mask"])}
  ev = make_evaluator("mask", ml_collections.ConfigDict(
      dict(type="mask_report")), _config(), fns)
  res = ev.run({"mask": logits}, str(tmp_path))
  doc = json.load(open(tmp_path / "mask.json"))
  assert len(doc["values"]) == 16 and doc["sorted_dims"][0] == 15
  np.testing.assert_allclose(doc["logits"], np.asarray(logits), rtol=1e-6)
  assert os.path.exists(tmp_path / "mask.png") and res["plot"] == 1.0
  np.testing.assert_allclose(res["mask_mean"], 0.5, atol=1e-6)
  assert mask_report.mask_summary(np.ones(4))["mask_min"] == 1.0


def jax_sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def test_missing_function_names_what_the_evaluator_needs():
  with pytest.raises(ConfigError, match="needs the method's 'encode'"):
    make_evaluator("knn", ml_collections.ConfigDict(dict(type="knn")),
                   _config(), {"eval_step": lambda s, b: {}})
