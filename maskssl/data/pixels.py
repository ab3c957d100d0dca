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

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maskssl.data import augment
from maskssl.data import cifar
from maskssl.data.base import ArrayDataset, DataError
from maskssl.config_utils import cfg_get

SPLITS = ("pretrain", "train", "val", "test")


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = cifar.default_config(name="cifar10_pixels", image_size=32,
                             num_crops=2, crop_scale=(0.2, 1.0), crop_seed=0,
                             val_size=200, chunk=512)
  cfg.update(overrides)
  return cfg


_get = cfg_get


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


def load_split(cfg, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  src = cifar.load_split(cfg, split)
  images, labels = src.arrays["image"], src.arrays["label"]
  size = int(_get(cfg, "image_size", 32))
  chunk = int(_get(cfg, "chunk", 512))
  if split == "pretrain":
    scale = tuple(_get(cfg, "crop_scale", (0.2, 1.0)))
    views = [pixel_tokens(images, size, True,
                          int(_get(cfg, "crop_seed", 0)) * 1000 + c, scale,
                          chunk)
             for c in range(max(1, int(_get(cfg, "num_crops", 1))))]
    x = np.concatenate(views)
    labels = np.tile(labels, len(views))
  else:
    x = pixel_tokens(images, size, False, chunk=chunk)
  meta = dict(src.meta, input_kind="continuous", c_in=int(x.shape[-1]),
              num_tokens=int(x.shape[1]), image_size=size)
  return ArrayDataset(dict(x=x, valid=np.ones(x.shape[:2], bool),
                           label=np.asarray(labels, np.int32)), meta)
