"""On-device image augmentations (SimCLR recipe), vectorised with jax.random.

Everything here is a pure, jit-friendly function of a PRNG key and a batch of
images, with static shapes; each example gets its own key (``split(rng, B)``),
so views are independent across examples and across calls.

Input: ``uint8`` NHWC images (or float in [0, 1]); output: ``float32`` NHWC,
normalised with ``(x - mean) / std`` (ImageNet statistics by default).

The SimCLR recipe (lightly ``SimCLRCollateFunction``, as used by MetaMask):

1. ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`` with
   torchvision's sampling rule (10 tries, then a centre-crop fallback) and
   PIL-style bilinear resampling (triangle filter, antialiased when
   downsampling, samples restricted to the crop);
2. horizontal flip with p = 0.5;
3. ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` applied with p = 0.8, its four
   operations in a random order per example (torchvision semantics, float
   images clipped to [0, 1]);
4. grayscale with p = 0.2 (ITU-R 601 luma, replicated to 3 channels);
5. normalisation.

Blocks are exposed separately (:func:`random_resized_crop`,
:func:`color_jitter`, :func:`random_grayscale`, :func:`normalize`) for
methods that need a different pipeline (e.g. crop + flip only). The crop and
flip are implemented as two per-example interpolation matrices
``out = Wy @ img @ Wx^T`` (a flip reverses ``Wx``), which is cheap for
CIFAR/ImageNet crop sizes and differentiable.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from maskssl.constants import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN,
                               IMAGENET_STD)
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """SimCLR augmentation settings (defaults: lightly SimCLR at 32 px)."""
  size: int = 32
  scale: Sequence[float] = (0.08, 1.0)
  ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0)
  flip_p: float = 0.5
  jitter_p: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.1
  grayscale_p: float = 0.2
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  normalize: bool = True


def augment_config(cfg: Optional[Any] = None, **overrides) -> AugmentConfig:
  """``AugmentConfig`` from None / a dict / a ConfigDict (unknown keys
  raise), with keyword overrides."""
  if isinstance(cfg, AugmentConfig):
    base = dataclasses.asdict(cfg)
  elif cfg is None:
    base = {}
  else:
    base = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  base.update(overrides)
  fields = {f.name for f in dataclasses.fields(AugmentConfig)}
  unknown = set(base) - fields
  if unknown:
    raise ValueError(f"unknown augmentation fields {sorted(unknown)}; "
                     f"known: {sorted(fields)}")
  for k in ("scale", "ratio", "mean", "std"):
    if k in base:
      base[k] = tuple(float(v) for v in base[k])
  return AugmentConfig(**base)


def to_float(images) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images01, mean=IMAGENET_MEAN, std=IMAGENET_STD):
  mean = jnp.asarray(mean, images01.dtype)
  std = jnp.asarray(std, images01.dtype)
  return (images01 - mean) / std


# --------------------------------------------------------------------------
# Random resized crop (+ flip)


def crop_params(rng, height: int, width: int, scale=(0.08, 1.0),
                ratio=(3.0 / 4.0, 4.0 / 3.0), tries: int = 10):
  """torchvision ``RandomResizedCrop.get_params`` for one image.

  Returns int32 ``(top, left, h, w)``. Draws ``tries`` candidates at once and
  takes the first that fits; if none does, falls back to the centre crop
  with the aspect ratio clamped to ``ratio``.
  """
  k_area, k_ratio, k_i, k_j = jax.random.split(rng, 4)
  area = float(height * width)
  target = area * jax.random.uniform(k_area, (tries,), minval=scale[0],
                                     maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (tries,), minval=math.log(ratio[0]),
                             maxval=math.log(ratio[1]))
  aspect = jnp.exp(log_r)
  w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
  ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = jnp.argmax(ok)
  any_ok = jnp.any(ok)
  w_t, h_t = w[first], h[first]
  top_t = jnp.floor(jax.random.uniform(k_i) * (height - h_t + 1)).astype(jnp.int32)
  left_t = jnp.floor(jax.random.uniform(k_j) * (width - w_t + 1)).astype(jnp.int32)
  # Fallback (static numbers).
  in_ratio = width / height
  if in_ratio < min(ratio):
    fw = width
    fh = int(round(fw / min(ratio)))
  elif in_ratio > max(ratio):
    fh = height
    fw = int(round(fh * max(ratio)))
  else:
    fw, fh = width, height
  ft, fl = (height - fh) // 2, (width - fw) // 2
  pick = lambda a, b: jnp.where(any_ok, a, jnp.int32(b))  # noqa: E731
  return pick(top_t, ft), pick(left_t, fl), pick(h_t, fh), pick(w_t, fw)


def resample_matrix(start, length, in_size: int, out_size: int,
                    dtype=jnp.float32):
  """``(out_size, in_size)`` weights resampling ``[start, start+length)`` to
  ``out_size`` samples: PIL-style triangle (bilinear) filter, widened by the
  scale factor when downsampling (antialias), normalised, restricted to the
  crop. For upsampling this is bilinear with ``align_corners=False`` and
  edge clamping."""
  start = jnp.asarray(start, dtype)
  length = jnp.asarray(length, dtype)
  scale = length / out_size
  support = jnp.maximum(scale, 1.0)
  centers = start + (jnp.arange(out_size, dtype=dtype) + 0.5) * scale
  pix = jnp.arange(in_size, dtype=dtype) + 0.5
  wts = jnp.maximum(0.0, 1.0 - jnp.abs(pix[None, :] - centers[:, None]) / support)
  inside = (pix >= start) & (pix < start + length)
  wts = wts * inside[None, :]
  return wts / jnp.maximum(jnp.sum(wts, axis=1, keepdims=True), 1e-12)


def crop_resize(images01, top, left, h, w, size: int, flip=None):
  """Crop boxes (per example) resized to ``size x size``; ``flip`` (bool per
  example, optional) mirrors horizontally. ``images01``: float (B, H, W, C)."""
  _, height, width, _ = images01.shape
  dtype = images01.dtype
  wy = jax.vmap(lambda t, hh: resample_matrix(t, hh, height, size, dtype))(top, h)
  wx = jax.vmap(lambda l, ww: resample_matrix(l, ww, width, size, dtype))(left, w)
  if flip is not None:
    wx = jnp.where(flip[:, None, None], wx[:, ::-1, :], wx)
  hp = jax.lax.Precision.HIGHEST
  tmp = jnp.einsum("bsh,bhwc->bswc", wy, images01, precision=hp)
  return jnp.einsum("bswc,btw->bstc", tmp, wx, precision=hp)


def random_resized_crop(rng, images01, size: int, scale=(0.08, 1.0),
                        ratio=(3.0 / 4.0, 4.0 / 3.0), flip_p: float = 0.0):
  """Per-example RandomResizedCrop (+ horizontal flip with ``flip_p``)."""
  b, height, width, _ = images01.shape
  k_crop, k_flip = jax.random.split(rng)
  top, left, h, w = jax.vmap(
      lambda k: crop_params(k, height, width, scale, ratio))(
          jax.random.split(k_crop, b))
  flip = jax.random.uniform(k_flip, (b,)) < flip_p if flip_p > 0 else None
  return crop_resize(images01, top, left, h, w, size, flip)


# --------------------------------------------------------------------------
# Colour


def grayscale(images01):
  """ITU-R 601 luma, (..., 1)."""
  luma = jnp.asarray(_LUMA, images01.dtype)
  return jnp.sum(images01 * luma, axis=-1, keepdims=True)


def rgb_to_hsv(rgb):
  """torchvision ``_rgb2hsv`` on (..., 3) floats in [0, 1]."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = jnp.max(rgb, axis=-1)
  minc = jnp.min(rgb, axis=-1)
  eqc = maxc == minc
  cr = maxc - minc
  s = cr / jnp.where(eqc, 1.0, maxc)
  crd = jnp.where(eqc, 1.0, cr)
  rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
  hr = jnp.where(maxc == r, bc - gc, 0.0)
  hg = jnp.where((maxc == g) & (maxc != r), 2.0 + rc - bc, 0.0)
  hb = jnp.where((maxc != g) & (maxc != r), 4.0 + gc - rc, 0.0)
  h = jnp.mod((hr + hg + hb) / 6.0 + 1.0, 1.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv):
  """torchvision ``_hsv2rgb``."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = jnp.mod(i.astype(jnp.int32), 6)
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  r = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [v, q, p, p, t], s * 0 + v)
  g = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [t, v, v, q, p], p)
  b = jnp.select([i == 0, i == 1, i == 2, i == 3, i == 4], [p, p, t, v, v], q)
  return jnp.stack([r, g, b], axis=-1)


def adjust_brightness(img, f):
  return jnp.clip(img * f, 0.0, 1.0)


def adjust_contrast(img, f):
  mean = jnp.mean(grayscale(img))
  return jnp.clip(f * img + (1.0 - f) * mean, 0.0, 1.0)


def adjust_saturation(img, f):
  return jnp.clip(f * img + (1.0 - f) * grayscale(img), 0.0, 1.0)


def adjust_hue(img, shift):
  hsv = rgb_to_hsv(img)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 1.0))
  return hsv_to_rgb(hsv)


def _jitter_one(rng, img, brightness, contrast, saturation, hue):
  """ColorJitter on one (H, W, 3) image, ops in a random order."""
  k_perm, kb, kc, ks, kh = jax.random.split(rng, 5)

  def factor(k, s):
    return jax.random.uniform(k, (), img.dtype, max(0.0, 1.0 - s), 1.0 + s)

  fb, fc, fs = factor(kb, brightness), factor(kc, contrast), factor(ks, saturation)
  fh = jax.random.uniform(kh, (), img.dtype, -hue, hue)
  ops = []
  if brightness > 0:
    ops.append(lambda x: adjust_brightness(x, fb))
  if contrast > 0:
    ops.append(lambda x: adjust_contrast(x, fc))
  if saturation > 0:
    ops.append(lambda x: adjust_saturation(x, fs))
  if hue > 0:
    ops.append(lambda x: adjust_hue(x, fh))
  if not ops:
    return img
  order = jax.random.permutation(k_perm, len(ops))
  for pos in range(len(ops)):
    img = jax.lax.switch(order[pos], ops, img)
  return img


def color_jitter(rng, images01, brightness=0.4, contrast=0.4, saturation=0.4,
                 hue=0.1, p: float = 0.8):
  """torchvision ``RandomApply([ColorJitter(b, c, s, h)], p)`` per example."""
  b = images01.shape[0]
  k_apply, k_jit = jax.random.split(rng)
  jittered = jax.vmap(
      lambda k, x: _jitter_one(k, x, brightness, contrast, saturation, hue))(
          jax.random.split(k_jit, b), images01)
  apply = jax.random.uniform(k_apply, (b,)) < p
  return jnp.where(apply[:, None, None, None], jittered, images01)


def random_grayscale(rng, images01, p: float = 0.2):
  """Per-example grayscale (3 equal channels) with probability ``p``."""
  b = images01.shape[0]
  apply = jax.random.uniform(rng, (b,)) < p
  gray = jnp.broadcast_to(grayscale(images01), images01.shape)
  return jnp.where(apply[:, None, None, None], gray, images01)


# --------------------------------------------------------------------------
# Pipelines


def simclr_augment(rng, images, cfg: Optional[Any] = None) -> jax.Array:
  """One SimCLR view of a batch: (B, H, W, 3) uint8 -> (B, S, S, 3) float32."""
  cfg = augment_config(cfg)
  k_crop, k_jit, k_gray = jax.random.split(rng, 3)
  x = to_float(images)
  x = random_resized_crop(k_crop, x, cfg.size, cfg.scale, cfg.ratio, cfg.flip_p)
  if cfg.jitter_p > 0:
    x = color_jitter(k_jit, x, cfg.brightness, cfg.contrast, cfg.saturation,
                     cfg.hue, cfg.jitter_p)
  if cfg.grayscale_p > 0:
    x = random_grayscale(k_gray, x, cfg.grayscale_p)
  if cfg.normalize:
    x = normalize(x, cfg.mean, cfg.std)
  return x


def two_views(rng, images, cfg: Optional[Any] = None):
  """Two independent SimCLR views ``(x0, x1)`` of the same batch."""
  k0, k1 = jax.random.split(rng)
  return simclr_augment(k0, images, cfg), simclr_augment(k1, images, cfg)


def eval_preprocess(images, cfg: Optional[Any] = None) -> jax.Array:
  """Test transform: to float, resize to ``cfg.size`` if needed (PIL-style
  bilinear), normalise."""
  cfg = augment_config(cfg)
  x = to_float(images)
  b, h, w, _ = x.shape
  if (h, w) != (cfg.size, cfg.size):
    zeros = jnp.zeros((b,), jnp.int32)
    x = crop_resize(x, zeros, zeros, jnp.full((b,), h), jnp.full((b,), w),
                    cfg.size)
  if cfg.normalize:
    x = normalize(x, cfg.mean, cfg.std)
  return x


__all__ = ["AugmentConfig", "augment_config", "simclr_augment", "two_views",
           "eval_preprocess", "random_resized_crop", "crop_params",
           "crop_resize", "resample_matrix", "color_jitter",
           "random_grayscale", "grayscale", "normalize", "to_float",
           "rgb_to_hsv", "hsv_to_rgb", "adjust_brightness",
           "adjust_contrast", "adjust_saturation", "adjust_hue",
           "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD"]
