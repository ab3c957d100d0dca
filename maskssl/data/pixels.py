"""Images as one token per pixel for SMA (name ``"cifar10_pixels"``).

An adapter over the ``cifar10`` data module (:mod:`maskssl.data.cifar`:
embedded real sample by default, or TFDS ``cifar10``, an ``.npz``, or a
directory of images -- the same ``data.source`` / ``data.path`` fields):
each uint8 image is resized to ``data.image_size`` (PIL-style antialiased
bilinear), normalised with the ImageNet mean/std and flattened row-major to
``x: (N, S*S, 3) float32`` (token index ``y*S + x``, spec §2.1), with
``valid`` all True and ``label`` int32.

The ``pretrain`` split applies RandomResizedCrop (scale ``data.crop_scale``
= (0.2, 1), the reference's crop) **offline**: ``data.num_crops``
independent crops per training image, drawn once from
``data.crop_seed`` (a documented deviation: the reference draws a new crop
every epoch; the shared SMA train step has no image augmentation hook).
``train``/``val``/``test`` use the whole image (no crop). ``val`` needs
``data.val_size > 0`` (held out from the training images, as in cifar10).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maskssl.data import augment
from maskssl.data import cifar
from maskssl.data.base import ArrayDataset, DataError, config_dict
from maskssl.data.base import parse_config

SPLITS = ("pretrain", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class PixelsConfig(cifar.Cifar10Config):
  """``config.data`` of ``cifar10_pixels``: the ``cifar10`` fields (the
  images) and the tokenisation (module doc)."""
  name: str = "cifar10_pixels"
  val_size: int = 200
  image_size: int = 32      # tokens = image_size ** 2
  num_crops: int = 2        # offline crops per pretraining image
  crop_scale: tuple = (0.2, 1.0)
  crop_seed: int = 0
  chunk: int = 512          # images per jitted tokenisation call


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(PixelsConfig, overrides))


@functools.partial(jax.jit, static_argnames=("size", "crop", "scale"))
def _to_tokens(images, rng, size: int, crop: bool, scale=(0.2, 1.0)):
  x = augment.to_float(images)
  b, h, w, _ = x.shape
  if crop:
    x = augment.random_resized_crop(rng, x, size, scale=scale)
  elif (h, w) != (size, size):
    z = jnp.zeros((b,), jnp.int32)
    x = augment.crop_resize(x, z, z, z + h, z + w, size)
  x = augment.normalize(x)
  return x.reshape(b, size * size, x.shape[-1])


def pixel_tokens(images: np.ndarray, size: int, crop: bool = False,
                 seed: int = 0, scale=(0.2, 1.0), chunk: int = 512
                 ) -> np.ndarray:
  """uint8 ``(N, H, W, C)`` -> float32 ``(N, size*size, C)`` tokens."""
  if images.ndim != 4:
    raise DataError(f"expected images (N, H, W, C), got shape {images.shape}")
  out = []
  base = jax.random.PRNGKey(seed)
  for s in range(0, len(images), chunk):
    part = images[s:s + chunk]
    pad = chunk - len(part) if len(images) > chunk else 0
    if pad:   # keep one compiled shape
      part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
    t = np.asarray(_to_tokens(part, jax.random.fold_in(base, s), size, crop,
                              tuple(scale)))
    out.append(t[:len(t) - pad] if pad else t)
  return np.concatenate(out).astype(np.float32)


def load_split(data_config, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  cfg = parse_config(PixelsConfig, data_config)
  src = cifar.load_split(cfg, split)
  images, labels = src.arrays["image"], src.arrays["label"]
  size, chunk = int(cfg.image_size), int(cfg.chunk)
  if split == "pretrain":
    scale = tuple(cfg.crop_scale)
    views = [pixel_tokens(images, size, True, int(cfg.crop_seed) * 1000 + c,
                          scale, chunk)
             for c in range(max(1, int(cfg.num_crops)))]
    x = np.concatenate(views)
    labels = np.tile(labels, len(views))
  else:
    x = pixel_tokens(images, size, False, chunk=chunk)
  meta = dict(src.meta, input_kind="continuous", c_in=int(x.shape[-1]),
              num_tokens=int(x.shape[1]), image_size=size)
  return ArrayDataset(dict(x=x, valid=np.ones(x.shape[:2], bool),
                           label=np.asarray(labels, np.int32)), meta)
