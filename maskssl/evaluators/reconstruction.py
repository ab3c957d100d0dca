"""Reconstruction picture for MAE-style methods (SD-MAE / MAE).

Writes ``<workdir>/reconstruction.png`` (matplotlib): one row per image of
the chosen split, titled columns original / masked (grey = masked) /
reconstruction (visible patches pasted from the original, masked ones
de-normalised with the patch's own mean/std), upscaled so 32-pixel images
stay readable. Returns ``recon_loss``: the masked-patch MSE of those images.
Needs the method's ``reconstruct(state, images, rng)`` and ``eval_step``.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from maskssl import plots
from maskssl.data import load_split
from maskssl.evaluators import common

COLUMNS = ("original", "masked", "reconstruction")


class Reconstruction:
  """Original / masked / reconstruction grid + masked-patch MSE."""

  def __init__(self, fns, data, *, split: str = "test", num_images: int = 8,
               seed: int = 0):
    self.reconstruct = common.require(fns, "reconstruct", "reconstruction")
    self.eval_step = common.require(fns, "eval_step", "reconstruction")
    self.data, self.split = data, split
    self.num_images, self.seed = int(num_images), int(seed)

  def run(self, state, workdir) -> dict:
    ds = load_split(self.data, self.split)
    n = min(self.num_images, len(ds))
    images = ds.arrays["image"][:n]
    rng = jax.random.PRNGKey(self.seed)
    orig, masked, recon = jax.device_get(
        jax.jit(self.reconstruct)(state, images, rng))
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      plots.image_grid(os.path.join(workdir, "reconstruction.png"),
                       [orig, masked, recon], COLUMNS,
                       [f"image {i}" for i in range(n)], cell_inches=1.6,
                       dpi=100, title_size=10)
    metrics = self.eval_step(state, {"image": images})
    return {"recon_loss": float(metrics["loss_rec"])}
