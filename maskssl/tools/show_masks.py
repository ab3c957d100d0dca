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

Uses matplotlib when it is installed; otherwise a Pillow PNG
with a 3x5 bitmap font for the column labels.
"""
from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from maskssl.data import images
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
  flags.DEFINE_integer("scale", 4, "Nearest-neighbour upscaling factor.")
  flags.DEFINE_integer("seed", 0, "PRNG seed for the masks.")

# 3x5 bitmap font (rows top to bottom, 3 bits each, MSB = left).
_FONT = {
    "a": "010101111101101", "b": "110101110101110", "c": "011100100100011",
    "d": "110101101101110", "e": "111100110100111", "f": "111100110100100",
    "g": "011100101101011", "h": "101101111101101", "i": "111010010010111",
    "j": "001001001101010", "k": "101101110101101", "l": "100100100100111",
    "m": "101111111101101", "n": "110101101101101", "o": "010101101101010",
    "p": "110101110100100", "q": "010101101110011", "r": "110101110101101",
    "s": "011100010001110", "t": "111010010010010", "u": "101101101101111",
    "v": "101101101101010", "w": "101101111111101", "x": "101101010101101",
    "y": "101101010010010", "z": "111001010100111", " ": "000000000000000",
    "+": "000010111010000", "-": "000000111000000", ".": "000000000000010",
    "0": "111101101101111", "1": "010110010010111", "2": "110001010100111",
    "3": "110001010001110", "4": "101101111001001", "5": "111100110001110",
    "6": "011100111101111", "7": "111001010010010", "8": "111101111101111",
    "9": "111101111001110",
}


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


def _text(label: str, width: int, height: int = 9, px: int = 1) -> np.ndarray:
  canvas = np.ones((height, width), np.float32)
  x = 2
  for ch in label.lower():
    g = _FONT.get(ch, _FONT[" "])
    bits = np.array([int(b) for b in g], np.float32).reshape(5, 3)
    bits = np.kron(bits, np.ones((px, px)))
    if x + bits.shape[1] > width:
      break
    y = (height - bits.shape[0]) // 2
    canvas[y:y + bits.shape[0], x:x + bits.shape[1]] -= bits
    x += bits.shape[1] + px
  return np.clip(canvas, 0, 1)


def compose(cols: list[np.ndarray], labels, scale: int, pad: int = 2
            ) -> np.ndarray:
  """(rows*cell + header, cols*cell) RGB float image."""
  n, hh, ww, _ = cols[0].shape
  ch, cw = hh * scale, ww * scale
  header = 12
  out = np.full((header + n * (ch + pad) + pad,
                 len(cols) * (cw + pad) + pad, 3), 0.6, np.float32)
  out[:header] = 1.0
  for j, col in enumerate(cols):
    x0 = pad + j * (cw + pad)
    lbl = _text(labels[j], cw + pad, header - 2)
    out[1:header - 1, x0:x0 + cw + pad][..., :] = lbl[:, :out.shape[1] - x0,
                                                      None]
    for i in range(n):
      y0 = header + pad + i * (ch + pad)
      img = np.kron(col[i], np.ones((scale, scale, 1)))
      out[y0:y0 + ch, x0:x0 + cw] = img
  return out


def write_png(path, rgb: np.ndarray) -> None:
  """Float RGB in [0, 1] -> 8-bit PNG (Pillow)."""
  images.write_png(str(path), (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def read_png(path) -> np.ndarray:
  """The uint8 (H, W, 3) of a PNG :func:`write_png` wrote."""
  return images.read_png(str(path))[..., :3]


def save_gallery(path, cols, labels, scale: int) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  try:
    import matplotlib  # noqa: F401
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    write_png(path, compose(cols, labels, scale))
    return "zlib"
  n = cols[0].shape[0]
  fig, axes = plt.subplots(n, len(cols), figsize=(1.4 * len(cols), 1.4 * n),
                           squeeze=False)
  for j, col in enumerate(cols):
    for i in range(n):
      ax = axes[i, j]
      ax.imshow(col[i], interpolation="nearest")
      ax.set_xticks([]), ax.set_yticks([])
      if i == 0:
        ax.set_title(labels[j], fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return "matplotlib"


def main(argv):
  del argv
  config = FLAGS.config
  cfg = config.mscn if config is not None else mscn.default_config(32)
  images = load_images(config, FLAGS.npz, FLAGS.split, FLAGS.num_images)
  cols = gallery_columns(jax.random.PRNGKey(FLAGS.seed), images, cfg)
  backend = save_gallery(FLAGS.out, cols, COLUMNS, FLAGS.scale)
  summary = mscn.resolved_summary(cfg, images.shape[1])
  print(f"wrote {FLAGS.out} ({backend}); {len(images)} images x "
        f"{len(cols)} columns: {', '.join(COLUMNS)}; mscn: {summary}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
