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

from maskssl.data import load_split
from maskssl.evaluators import common

COLUMNS = ("original", "masked", "reconstruction")


def plot_grid(path: str, original, masked, recon, cell_inches: float = 1.6):
  """Save a titled (rows x 3) grid of float images in [0, 1]."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(original)
  fig, axes = plt.subplots(n, 3, figsize=(3 * cell_inches, n * cell_inches),
                           squeeze=False)
  for i, row in enumerate(zip(original, masked, recon)):
    for j, img in enumerate(row):
      ax = axes[i, j]
      ax.imshow(np.clip(np.asarray(img, np.float32), 0, 1),
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(COLUMNS[j], fontsize=10)
      if j == 0:
        ax.set_ylabel(f"image {i}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


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
      plot_grid(os.path.join(workdir, "reconstruction.png"), orig, masked,
                recon)
    metrics = self.eval_step(state, {"image": images})
    return {"recon_loss": float(metrics["loss_rec"])}
