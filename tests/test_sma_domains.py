"""SMA across domains: the same method, loop, mask generator and evaluators
serve molecules (transformer mode), proteins and images (perceiver mode)."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl import run as run_lib
from maskssl.data import load_split
from maskssl.methods.sma import SMA

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(name, arg="quick"):
  spec = importlib.util.spec_from_file_location(
      name, REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def _masked(m, params, batch, seed=0, s=0.0):
  x, valid = m.inputs(batch)
  out = m.model.apply({"params": params}, x, valid, train=True, masking=True,
                      s=s, rngs={"mask": jax.random.PRNGKey(seed),
                                 "dropout": jax.random.PRNGKey(1)},
                      mutable=["intermediates"])
  return out[0], out[1]["intermediates"], np.asarray(valid)


@pytest.mark.parametrize("mode", ["sma", "random"])
def test_molecule_masks_exact_counts_never_padding(mode):
  c = _config("sma_molecule")
  c.mask.mask_mode = mode
  ds = load_split(c.data, "pretrain")
  batch = ds.batch(np.arange(8))
  # make the valid lengths differ (packed rows are nearly full)
  batch["valid"] = batch["valid"] & (np.arange(64)[None] < np.array(
      [1, 2, 3, 10, 30, 45, 63, 64])[:, None])
  batch["tokens"] = np.where(batch["valid"], batch["tokens"], 0)
  m = SMA(c)
  params = m.init_params(jax.random.PRNGKey(0), batch)
  out, _, valid = _masked(m, params, batch)
  mask = np.asarray(out["mask"])
  n = valid.sum(1)
  np.testing.assert_array_equal(mask.sum(1), np.round(np.float32(0.3) * n))
  assert not (mask & ~valid).any()
  loss = float(m.loss_from_output(out, jnp.asarray(batch["tokens"])))
  assert 5.0 < loss < 6.2   # CE over 262 ids at init (ln 262 = 5.57)


def test_molecule_curriculum_option_counts():
  c = _config("sma_molecule")
  c.mask.curriculum_fraction = 0.5
  c.total_steps = 10
  ds = load_split(c.data, "pretrain")
  batch = ds.batch(np.arange(8))
  m = SMA(c)
  params = m.init_params(jax.random.PRNGKey(0), batch)
  n = batch["valid"].sum(1)
  for step in (0, 2, 5, 9):
    s = float(m.curriculum(jnp.int32(step)))
    out, _, _ = _masked(m, params, batch, s=s)
    d = np.asarray(out["mask"]).sum(1) - np.round(np.float32(0.3) * n)
    assert np.abs(d).max() <= 1
  assert float(m.curriculum(jnp.int32(0))) == 1.0
  assert float(m.curriculum(jnp.int32(5))) == 0.0


def _perceiver_protein(n_max):
  c = _config("sma_protein")
  c.data.max_len = n_max
  c.model.n_max = n_max
  c.model.compact = False
  return c


def test_perceiver_masks_input_layer_keys_only():
  c = _perceiver_protein(128)
  ds = load_split(c.data, "pretrain")
  batch = ds.batch(np.arange(8))
  batch["valid"] = batch["valid"] & (np.arange(128)[None] < np.array(
      [5, 10, 20, 40, 60, 80, 100, 128])[:, None])
  m = SMA(c)
  params = m.init_params(jax.random.PRNGKey(0), batch)
  out, inter, valid = _masked(m, params, batch)
  mask = np.asarray(out["mask"])
  keep = valid & ~mask
  np.testing.assert_array_equal(mask.sum(1),
                                np.round(np.float32(0.15) * valid.sum(1)))
  assert not (mask & ~valid).any()
  p0 = np.asarray(inter["encoder"]["layer_0"]["attn"][0])   # (B, H, L, N)
  assert p0.shape[-1] == 128 and p0.shape[2] == c.model.num_latents
  k = np.broadcast_to(keep[:, None, None], p0.shape)
  assert (p0[~k] == 0).all() and (p0[k] > 0).all()
  # later layers attend latent-to-latent, no key mask
  p1 = np.asarray(inter["encoder"]["layer_1"]["attn"][0])
  assert p1.shape[-1] == c.model.num_latents and (p1 > 0).all()


def test_perceiver_cost_linear_in_input_length():
  def flops(n):
    c = _perceiver_protein(n)
    m = SMA(c)
    b = dict(tokens=np.zeros((8, n), np.int32), valid=np.ones((8, n), bool))
    p = jax.eval_shape(m.init_params, jax.random.PRNGKey(0), b)
    fwd = jax.jit(lambda p, bb: m.loss_fn(p, bb, jax.random.PRNGKey(0), 0.0))
    ca = fwd.lower(p, b).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"])
  f1, f2, f4 = flops(128), flops(256), flops(512)
  ratio = (f4 - f2) / (f2 - f1)   # 2.0 if linear, 4.0 if quadratic
  assert 1.7 < ratio < 2.3, (f1, f2, f4)


def test_pixel_tokens_and_image_masks():
  c = _config("sma_image")
  ds = load_split(c.data, "pretrain")
  x = ds.arrays["x"]
  assert x.shape[1:] == (64, 3) and x.dtype == np.float32
  assert abs(float(x.mean())) < 0.6 and 0.6 < float(x.std()) < 1.5
  tr = load_split(c.data, "train")
  assert tr.arrays["label"].dtype == np.int32 and tr.arrays["valid"].all()
  m = SMA(c)
  batch = ds.batch(np.arange(8))
  params = m.init_params(jax.random.PRNGKey(0), batch)
  out, _, _ = _masked(m, params, batch)
  np.testing.assert_array_equal(np.asarray(out["mask"]).sum(1), 32)


@pytest.mark.parametrize("name,evals", [
    ("sma_molecule", ("finetune_bbbp",)),
    ("sma_protein", ("finetune_gb1",)),
    ("sma_image", ("knn", "linear_probe")),
])
def test_quick_config_trains_and_evaluates(tmp_path, name, evals):
  c = _config(name)
  c.total_steps = 3
  c.log_every = 3
  for k in list(c.evals.keys()):
    if k not in evals:
      del c.evals[k]
    elif c.evals[k].type == "finetune":
      c.evals[k].total_steps = 2
      c.evals[k].eval_every = 2
      if name != "sma_molecule":   # the scratch path is covered once
        c.evals[k].inits = ("pretrained",)
    elif c.evals[k].type == "linear_probe":
      c.evals[k].epochs = 2
  summary = run_lib.train_and_evaluate(c, str(tmp_path))
  pre = summary["pretrain"]
  assert pre["final_step"] == 3 and np.isfinite(pre["loss"])
  assert set(summary["evals"]) == set(evals)
  for res in summary["evals"].values():
    assert res and all(np.isfinite(v) for v in res.values()), res
  if name == "sma_molecule":
    r = summary["evals"]["finetune_bbbp"]
    assert {"n0/pretrained/last_auc", "n0/scratch/last_auc"} <= set(r)
  if name == "sma_protein":
    assert "n0/pretrained/best_spearman" in summary["evals"]["finetune_gb1"]
  assert (tmp_path / "checkpoints").is_dir()
  assert json.loads((tmp_path / "summary.json").read_text())
