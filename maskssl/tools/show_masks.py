r"""MSCN mask gallery: each mask type applied to real images, written as a PNG.

    python -m maskssl.tools.show_masks --config=configs/mscn_cifar10.py \
        --out=runs/mscn_masks.png [--num_images=6] [--scale=4] [--seed=0]

Columns (one row per image):
  original | HPF | grid, zero fill, no HPF (naive masking: parasitic edges) |
  grid mask | grid + noise | channel-wise mask | channel-wise + noise |
  focal mask | focal + noise | MSCN mixture (config's kind_probs)

Mask columns show the bool mask as ``1 - mask`` per colour channel (black =
masked in all channels; a colour = that channel's complement is masked).

Masked columns are in the network's input space (after the HPF and the
``hpf_scale`` division) and are displayed as ``0.5 + v / (6 s)`` with ``s``
the std of the HPF images, clipped to [0, 1]. The HPF column is displayed the
same way. Images come from ``config.data`` (``split``, default "test") through
the data registry, or from ``--npz`` (CIFAR row layout, ``test_data`` /
``train_data``), or, by default without a config, from
``../shared/data/cifar10_partial/cifar10_partial.npz`` beside the checkout.

Written with matplotlib (:func:`maskssl.plots.image_grid`).
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from maskssl import plots
from maskssl.masks import mscn

COLUMNS = ("original", "hpf", "grid zero no hpf", "grid mask", "grid noise",
           "channel mask", "channel noise", "focal mask", "focal noise",
           "mixture")

FLAGS = flags.FLAGS


def _define_flags():
  """Flags are defined only when run as a program, so importing this module
  (tests) never clashes with other modules' ``--config`` flag."""
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  lock_config=False)
  flags.DEFINE_string("out", "runs/mscn_masks.png", "Output PNG path.")
  flags.DEFINE_string("npz", None, "CIFAR-layout npz to read images from.")
  flags.DEFINE_string("split", "test", "Data split to read.")
  flags.DEFINE_integer("num_images", 6, "Rows (images).")
  flags.DEFINE_integer("scale", 4, "Cell size: 0.35 x scale inches at 120 dpi.")
  flags.DEFINE_integer("seed", 0, "PRNG seed for the masks.")

def default_npz_path() -> pathlib.Path:
  repo = pathlib.Path(__file__).resolve().parents[2]
  return repo.parent / "shared" / "data" / "cifar10_partial" / "cifar10_partial.npz"


def load_npz_images(path, split: str, n: int) -> np.ndarray:
  """uint8 (n, 32, 32, 3) from a CIFAR-row-layout npz."""
  with np.load(path) as d:
    key = f"{split}_data" if f"{split}_data" in d.files else "test_data"
    rows = d[key][:n]
  return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def load_images(config, npz, split: str, n: int) -> np.ndarray:
  if npz:
    return load_npz_images(npz, split, n)
  if config is not None and "data" in config:
    from maskssl import data as data_lib
    ds = data_lib.load_split(config.data, split)
    for key in ("image", "images", "x"):
      if key in ds.arrays:
        return np.asarray(ds.arrays[key][:n])
    raise KeyError(f"no image array in split {split!r}: {list(ds.arrays)}")
  path = default_npz_path()
  if not path.exists():
    raise FileNotFoundError(f"no --npz / --config given and {path} is absent")
  return load_npz_images(path, split, n)


def gallery_columns(rng, images_uint8: np.ndarray, cfg) -> list[np.ndarray]:
  """List of (N, H, W, 3) float arrays in [0, 1], one per :data:`COLUMNS`."""
  x = jnp.asarray(images_uint8, jnp.float32) / 255.0
  h = mscn.preprocess(x, cfg)
  s = float(jnp.std(h)) if cfg.hpf else 0.25
  vis = lambda v: np.clip(0.5 + np.asarray(v) / (6 * s), 0, 1)
  ks = jax.random.split(rng, 8)

  def with_(probs, fill="noise", hpf=None):
    c = cfg.copy_and_resolve_references()
    c.kind_probs = probs
    c.fill = fill
    if hpf is not None:
      c.hpf = hpf
    return c

  cols = [np.asarray(x), vis(h)]
  c = with_((0, 1, 0), fill="zero", hpf=False)
  raw = mscn.preprocess(x, c)
  cols.append(np.clip(np.asarray(mscn.mask_images(ks[0], raw, c)[0]), 0, 1))
  for i, probs in enumerate([(0, 1, 0), (0, 0, 1), (1, 0, 0)]):
    masked, m = mscn.mask_images(ks[i + 1], h, with_(probs))
    cols.append(1.0 - np.asarray(m, np.float32))   # black = masked (per channel)
    cols.append(vis(masked))
  cols.append(vis(mscn.mask_images(ks[5], h, cfg)[0]))
  return cols


def save_gallery(path, cols, labels, scale: int) -> str:
  """The gallery as a titled matplotlib grid, cells ``0.35 * scale``
  inches (1.4 at the default 4)."""
  return plots.image_grid(path, cols, labels, cell_inches=0.35 * scale,
                          dpi=120, title_size=7)


def main(argv):
  del argv
  config = FLAGS.config
  cfg = config.mscn if config is not None else mscn.default_config(32)
  images = load_images(config, FLAGS.npz, FLAGS.split, FLAGS.num_images)
  cols = gallery_columns(jax.random.PRNGKey(FLAGS.seed), images, cfg)
  save_gallery(FLAGS.out, cols, COLUMNS, FLAGS.scale)
  summary = mscn.resolved_summary(cfg, images.shape[1])
  print(f"wrote {FLAGS.out}; {len(images)} images x "
        f"{len(cols)} columns: {', '.join(COLUMNS)}; mscn: {summary}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
