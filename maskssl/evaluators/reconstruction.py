"""Reconstruction picture for MAE-style methods (SD-MAE / MAE).

Writes ``<workdir>/reconstruction.png``: one row per patch of the chosen
split (``split``, default "test"; ``num_images``, default 8), columns
original / masked (grey = masked) / reconstruction (visible patches pasted
from the original, masked ones de-normalised with the patch's own mean/std).
Also returns ``recon_loss``: the masked-patch MSE of those images. Needs
``method.reconstruct(state, images, rng)``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from maskssl.data import load_split
from maskssl.data.images import write_png


def run(config, eval_config, method, state, workdir) -> dict:
  get = eval_config.get
  ds = load_split(get("data", None) or config.data, get("split", "test"))
  n = min(int(get("num_images", 8)), len(ds))
  images = ds.arrays["image"][:n]
  rng = jax.random.PRNGKey(int(get("seed", 0)))
  orig, masked, recon = jax.device_get(
      jax.jit(method.reconstruct)(state, images, rng))
  from maskssl.methods.sdmae import reconstruction_grid
  grid = reconstruction_grid(orig, masked, recon)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "reconstruction.png")
  write_png(path, grid)
  metrics = method.eval_step(state, {"image": images})
  return {"recon_loss": float(metrics["loss_rec"])}
