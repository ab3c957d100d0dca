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
                    dtype=jnp.float32, kernel: str = "triangle",
                    a: float = -0.5):
  """``(out_size, in_size)`` weights resampling ``[start, start+length)`` to
  ``out_size`` samples as PIL's Resample.c ``precompute_coeffs`` does: the
  filter (``"triangle"``: bilinear; ``"cubic"``: bicubic with ``a``) is
  widened by the scale factor when downsampling (antialias), its taps are
  restricted to the crop and normalised. For upsampling, triangle is
  bilinear with ``align_corners=False`` and edge clamping."""
  start = jnp.asarray(start, dtype)
  length = jnp.asarray(length, dtype)
  scale = length / out_size
  support = jnp.maximum(scale, 1.0)
  centers = start + (jnp.arange(out_size, dtype=dtype) + 0.5) * scale
  pix = jnp.arange(in_size, dtype=dtype) + 0.5
  d = (pix[None, :] - centers[:, None]) / support
  if kernel == "triangle":
    wts = jnp.maximum(0.0, 1.0 - jnp.abs(d))
  elif kernel == "cubic":
    wts = _cubic(d, a)
  else:
    raise ValueError(f"unknown resampling kernel {kernel!r}")
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


# --------------------------------------------------------------------------
# Fine-tuning recipe of MAE (main_finetune.py, used by SD-MAE): timm's train
# transform (timm/data/transforms_factory.py, transforms_imagenet_train) is
# RandomResizedCropAndInterpolation (bicubic) -> RandomHorizontalFlip(0.5) ->
# RandAugment (timm/data/auto_augment.py) on the uint8 PIL image -> ToTensor,
# Normalize -> RandomErasing (timm/data/random_erasing.py); Mixup / CutMix
# (timm/data/mixup.py) then mixes the batch. The eval transform is
# Resize(int(size / crop_pct), bicubic) + CenterCrop(size).
#
# Where PIL works on uint8 these functions work on float32 arrays holding
# 8-bit levels (integers 0..255) and round / truncate as PIL does, so the
# point operations are exact and the resampling ones agree to 1 level. The
# public functions take and return [0, 1] floats (levels / 255).

import functools
import re as _re

import numpy as np

# timm transforms_factory: aa_params img_mean = round(255 * mean), the fill
# of the geometric ops MAE gets (auto_augment's own default is 128 grey)
RA_FILL = tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN)

# timm auto_augment.py _RAND_TRANSFORMS / _RAND_INCREASING_TRANSFORMS
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize",
            "Solarize", "SolarizeAdd", "Color", "Contrast", "Brightness",
            "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
    "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
    "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_LEVEL_DENOM = 10.0


def _to_levels(images01):
  return jnp.round(jnp.clip(to_float(images01), 0.0, 1.0) * 255.0)


def _cubic(x, a):
  """Cubic convolution kernel (PIL Resample.c ``bicubic_filter``, a=-0.5)."""
  x = jnp.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return jnp.where(x < 1.0, near, jnp.where(x < 2.0, far, 0.0))


def cubic_resample_matrix(start, length, in_size: int, out_size: int,
                          a: float = -0.5, dtype=jnp.float32):
  """PIL bicubic resize weights for the crop (:func:`resample_matrix`)."""
  return resample_matrix(start, length, in_size, out_size, dtype, "cubic", a)


def _two_pass_resize(levels, wy, wx):
  """PIL's separable resize: horizontal pass, rounded and clipped to uint8,
  then the vertical pass, rounded and clipped (Resample.c
  ``ImagingResampleInner``); the intermediate rounding matters where bicubic
  overshoots. ``levels`` (B, H, W, C), ``wy`` (B, S, H), ``wx`` (B, T, W)."""
  hp = jax.lax.Precision.HIGHEST
  q = lambda v: jnp.clip(jnp.round(v), 0.0, 255.0)  # noqa: E731
  tmp = q(jnp.einsum("bhwc,btw->bhtc", levels, wx, precision=hp))
  return q(jnp.einsum("bsh,bhtc->bstc", wy, tmp, precision=hp))


def random_resized_crop_bicubic(rng, images01, size: int, scale=(0.08, 1.0),
                                ratio=(3.0 / 4.0, 4.0 / 3.0),
                                flip_p: float = 0.5):
  """timm ``RandomResizedCropAndInterpolation(size, bicubic)`` (torchvision's
  box sampling, :func:`crop_params`) + horizontal flip with ``flip_p``, per
  example, resampled as PIL does (8-bit output). [0, 1] in and out."""
  levels = _to_levels(images01)
  b, height, width, _ = levels.shape
  k_crop, k_flip = jax.random.split(rng)
  top, left, h, w = jax.vmap(
      lambda k: crop_params(k, height, width, scale, ratio))(
          jax.random.split(k_crop, b))
  wy = jax.vmap(lambda t, hh: cubic_resample_matrix(t, hh, height, size))(
      top, h)
  wx = jax.vmap(lambda l, ww: cubic_resample_matrix(l, ww, width, size))(
      left, w)
  if flip_p > 0:
    flip = jax.random.uniform(k_flip, (b,)) < flip_p
    wx = jnp.where(flip[:, None, None], wx[:, ::-1, :], wx)
  return _two_pass_resize(levels, wy, wx) / 255.0


def eval_resize_center_crop(images01, size: int, crop_pct: float = 0.0):
  """MAE main_finetune.py eval transform: ``Resize(int(size / crop_pct))``
  (shorter side, PIL bicubic) + ``CenterCrop(size)``; ``crop_pct`` 0 = MAE's
  rule (224/256 up to 224 px, else 1). [0, 1] in, 8-bit [0, 1] out."""
  levels = _to_levels(images01)
  b, height, width, _ = levels.shape
  if crop_pct <= 0:
    crop_pct = 224 / 256 if size <= 224 else 1.0
  short = int(size / crop_pct)
  # torchvision Resize(int): shorter side -> short, longer keeps the ratio
  if width <= height:
    rw, rh = short, int(short * height / width)
  else:
    rh, rw = short, int(short * width / height)
  top = int(round((rh - size) / 2.0))
  left = int(round((rw - size) / 2.0))
  wy = cubic_resample_matrix(0, height, height, rh)[top:top + size]
  wx = cubic_resample_matrix(0, width, width, rw)[left:left + size]
  out = _two_pass_resize(levels, jnp.broadcast_to(wy, (b,) + wy.shape),
                         jnp.broadcast_to(wx, (b,) + wx.shape))
  return out / 255.0


# ---- RandAugment ----------------------------------------------------------


def parse_rand_augment(spec: str) -> dict:
  """timm ``rand_augment_transform`` config string -> keyword arguments of
  :func:`rand_augment`: ``rand-m9-mstd0.5-inc1`` = 2 ops, magnitude 9,
  magnitude std 0.5, the 'increasing' op set. Sections: ``m``, ``n``,
  ``mstd`` (> 100: uniform in [0, m]), ``mmax``, ``inc``. (timm reads
  ``inc0`` as on, ``bool('0')``; here it is off.)"""
  parts = str(spec).split("-")
  if parts[0] != "rand":
    raise ValueError(f"RandAugment spec {spec!r} must start with 'rand'")
  kw = dict(num_ops=2, magnitude=_LEVEL_DENOM, magnitude_std=0.0,
            increasing=False, magnitude_max=_LEVEL_DENOM)
  for part in parts[1:]:
    cs = _re.split(r"(\d.*)", part)
    if len(cs) < 2:
      continue
    key, val = cs[:2]
    if key == "mstd":
      mstd = float(val)
      kw["magnitude_std"] = float("inf") if mstd > 100 else mstd
    elif key == "mmax":
      kw["magnitude_max"] = float(int(val))
    elif key == "inc":
      kw["increasing"] = bool(int(val))
    elif key == "m":
      kw["magnitude"] = float(int(val))
    elif key == "n":
      kw["num_ops"] = int(val)
    else:   # 'w' (weighted op choice) is not implemented
      raise ValueError(f"unknown or unsupported RandAugment section {part!r} "
                       f"in {spec!r}; known: m, n, mstd, mmax, inc")
  return kw


def rand_augment_level(name: str, magnitude, negate):
  """timm auto_augment.py ``LEVEL_TO_ARG[name](magnitude)``; ``negate`` is
  the draw of ``_randomly_negate`` (used by the signed ops only). Works on
  Python or traced numbers; integer arguments are returned as floats."""
  m = magnitude / _LEVEL_DENOM
  sign = jnp.where(negate, -1.0, 1.0)
  if name == "Rotate":
    return sign * (m * 30.0)
  if name == "Posterize":
    return jnp.floor(m * 4.0)
  if name == "PosterizeIncreasing":
    return 4.0 - jnp.floor(m * 4.0)
  if name == "Solarize":
    return jnp.floor(m * 256.0)
  if name == "SolarizeIncreasing":
    return 256.0 - jnp.floor(m * 256.0)
  if name == "SolarizeAdd":
    return jnp.floor(m * 110.0)
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return m * 1.8 + 0.1
  if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing"):
    return jnp.maximum(0.1, 1.0 + sign * (m * 0.9))
  if name in ("ShearX", "ShearY"):
    return sign * (m * 0.3)
  if name in ("TranslateXRel", "TranslateYRel"):
    return sign * (m * 0.45)
  if name in ("AutoContrast", "Equalize", "Invert"):
    return jnp.zeros(())
  raise ValueError(f"unknown RandAugment op {name!r}")


def _histogram(img_int):
  """Per-channel 256-bin histogram (C, 256) of an int (H, W, C) image."""
  c = img_int.shape[-1]
  flat = img_int.reshape(-1, c)
  return jnp.zeros((c, 256), jnp.int32).at[
      jnp.arange(c)[None, :], flat].add(1)


@functools.lru_cache(maxsize=None)
def _autocontrast_double_misses() -> np.ndarray:
  """Sorted keys ``lo << 16 | hi << 8 | v`` where PIL's double
  ``int(v * scale + offset)`` (scale = 255 / (hi - lo), offset = -lo *
  scale) is one below the exact ``(v - lo) * 255 // (hi - lo)`` (12,094 of
  the 2.8 M triples, all at exact integers, e.g. often v = hi -> 254)."""
  keys = []
  for d in range(1, 256):
    lo = np.arange(0, 256 - d, dtype=np.float64)[:, None]
    off = np.arange(d + 1)[None, :]
    scale = 255.0 / d
    pil = np.trunc((lo + off) * scale + (-lo * scale))
    lo_i, off_i = np.nonzero(pil != (off * 255) // d)
    keys.append((lo_i << 16) | ((lo_i + d) << 8) | (lo_i + off_i))
  return np.sort(np.concatenate(keys)).astype(np.int32)


def _autocontrast_lut(hist):
  """PIL ``ImageOps.autocontrast`` (cutoff 0) per channel: lowest / highest
  used level -> 0 / 255, as PIL's double arithmetic rounds it (the exact
  value, minus one at the points of :func:`_autocontrast_double_misses`)."""
  lv = jnp.arange(256, dtype=jnp.int32)
  used = hist > 0
  lo = jnp.argmax(used, axis=1).astype(jnp.int32)[:, None]
  hi = (255 - jnp.argmax(used[:, ::-1], axis=1)).astype(jnp.int32)[:, None]
  d = jnp.maximum(hi - lo, 1)
  lut = jnp.maximum(lv[None] - lo, 0) * 255 // d
  misses = jnp.asarray(_autocontrast_double_misses())
  key = (lo << 16) | (hi << 8) | lv[None]
  pos = jnp.clip(jnp.searchsorted(misses, key), 0, misses.shape[0] - 1)
  inside = (lv[None] >= lo) & (lv[None] <= hi)
  lut = jnp.clip(lut - ((misses[pos] == key) & inside), 0, 255)
  return jnp.where(hi > lo, lut, lv[None])


def _equalize_lut(hist):
  """PIL ``ImageOps.equalize`` per channel (integer arithmetic as PIL)."""
  lv = jnp.arange(256, dtype=jnp.int32)
  used = hist > 0
  last = 255 - jnp.argmax(used[:, ::-1], axis=1)
  total = hist.sum(1)
  step = (total - jnp.take_along_axis(hist, last[:, None], 1)[:, 0]) // 256
  cum = jnp.cumsum(hist, axis=1) - hist              # exclusive
  safe = jnp.maximum(step, 1)[:, None]
  lut = jnp.minimum((safe // 2 + cum) // safe, 255)
  keep = (used.sum(1) <= 1) | (step == 0)
  return jnp.where(keep[:, None], lv[None], lut)


def _lut_for(name, hist, level):
  lv = jnp.arange(256, dtype=jnp.int32)[None]
  c = hist.shape[0]
  if name == "AutoContrast":
    return _autocontrast_lut(hist)
  if name == "Equalize":
    return _equalize_lut(hist)
  if name == "Invert":
    lut = 255 - lv
  elif name.startswith("Posterize"):
    # keep the top `bits` bits; bits 0 -> black (Pillow < 10; newer Pillow
    # refuses bits 0, which timm reaches at magnitude 10)
    shift = (8 - level).astype(jnp.int32)
    lut = jnp.where(shift >= 8, 0, lv & jnp.left_shift(jnp.int32(-1), shift))
    lut = jnp.where(level >= 8, lv, lut)
  elif name.startswith("Solarize") and name != "SolarizeAdd":
    lut = jnp.where(lv < level, lv, 255 - lv)
  elif name == "SolarizeAdd":     # timm solarize_add, thresh 128
    lut = jnp.where(lv < 128, jnp.minimum(255, lv + level.astype(jnp.int32)),
                    lv)
  else:
    raise ValueError(name)
  return jnp.broadcast_to(lut, (c, 256)).astype(jnp.int32)


def _luma_int(img_int):
  """PIL RGB -> L (Convert.c ``L24``: fixed-point ITU-R 601, rounded)."""
  r, g, b = img_int[..., 0], img_int[..., 1], img_int[..., 2]
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def _smooth_int(img_int):
  """PIL ``ImageFilter.SMOOTH`` (3x3 [1 1 1; 1 5 1; 1 1 1] / 13, rounded;
  the one-pixel border is copied, Filter.c)."""
  h, w = img_int.shape[:2]
  p = img_int
  s = 4 * p[1:-1, 1:-1]
  for dy in range(3):
    for dx in range(3):
      s = s + p[dy:dy + h - 2, dx:dx + w - 2]
  inner = (2 * s + 13) // 26
  return p.at[1:-1, 1:-1].set(inner)


def _degenerate_for(name, img_int):
  """The image ImageEnhance blends with (Color / Contrast / Brightness /
  Sharpness)."""
  if name.startswith("Color"):
    return jnp.broadcast_to(_luma_int(img_int)[..., None], img_int.shape)
  if name.startswith("Contrast"):
    lum = _luma_int(img_int)
    n = lum.size
    mean = (2 * jnp.sum(lum) + n) // (2 * n)        # int(mean + 0.5)
    return jnp.broadcast_to(mean, img_int.shape)
  if name.startswith("Brightness"):
    return jnp.zeros_like(img_int)
  if name.startswith("Sharpness"):
    if min(img_int.shape[:2]) < 3:
      return img_int
    return _smooth_int(img_int)
  raise ValueError(name)


def pil_blend(degenerate, img, factor):
  """``Image.blend(degenerate, img, factor)`` on 8-bit levels (Blend.c:
  float32 ``in1 + alpha * (in2 - in1)``, truncated, clipped)."""
  f = jnp.asarray(factor, jnp.float32)
  d = degenerate.astype(jnp.float32)
  out = d + f * (img.astype(jnp.float32) - d)
  return jnp.clip(jnp.trunc(out), 0.0, 255.0)


def _affine_for(name, level, height: int, width: int):
  """The 6 PIL ``Image.AFFINE`` coefficients (input = M @ (x+.5, y+.5, 1))
  of a geometric op."""
  one, zero = jnp.ones(()), jnp.zeros(())
  level = jnp.asarray(level, jnp.float32)
  if name == "Rotate":
    # PIL Image.rotate(expand=False): about the centre (w/2, h/2)
    ang = -jnp.deg2rad(jnp.mod(level, 360.0))
    c, s = jnp.cos(ang), jnp.sin(ang)
    cx, cy = width / 2.0, height / 2.0
    return jnp.stack([c, s, c * -cx + s * -cy + cx,
                      -s, c, -s * -cx + c * -cy + cy])
  if name == "ShearX":
    return jnp.stack([one, level, zero, zero, one, zero])
  if name == "ShearY":
    return jnp.stack([one, zero, zero, level, one, zero])
  if name == "TranslateXRel":
    return jnp.stack([one, zero, level * width, zero, one, zero])
  if name == "TranslateYRel":
    return jnp.stack([one, zero, zero, zero, one, level * height])
  raise ValueError(name)


def pil_affine(img, coeffs, fill=RA_FILL):
  """PIL ``Image.transform(size, AFFINE, coeffs, BICUBIC, fillcolor=fill)``
  on one (H, W, C) image of 8-bit levels (Geometry.c: sample points outside
  the image get ``fill``; inside, 4x4 cubic taps with a = -1, edge-clamped,
  truncated)."""
  h, w, ch = img.shape
  m = coeffs
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                        jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
  xin = m[0] * xs + m[1] * ys + m[2]
  yin = m[3] * xs + m[4] * ys + m[5]
  inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
  xs0, ys0 = xin - 0.5, yin - 0.5
  x0, y0 = jnp.floor(xs0), jnp.floor(ys0)
  dx, dy = (xs0 - x0)[..., None], (ys0 - y0)[..., None]
  x0 = x0.astype(jnp.int32) - 1
  y0 = y0.astype(jnp.int32) - 1
  flat = img.reshape(h * w, ch).astype(jnp.float32)

  def bicubic(v1, v2, v3, v4, d):     # Geometry.c BICUBIC macro (a = -1)
    p2 = -v1 + v3
    p3 = 2.0 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))

  rows = []
  for j in range(4):
    yy = jnp.clip(y0 + j, 0, h - 1) * w
    taps = [flat[yy + jnp.clip(x0 + i, 0, w - 1)] for i in range(4)]
    rows.append(bicubic(*taps, dx))
  v = bicubic(*rows, dy)
  v = jnp.clip(jnp.trunc(v), 0.0, 255.0)
  return jnp.where(inside[..., None], v, jnp.asarray(fill, jnp.float32))


def rand_augment_op(img, op, magnitude, negate=False, *,
                    increasing: bool = True, fill=RA_FILL):
  """One RandAugment op on one (H, W, C) image of 8-bit levels (float):
  ``op`` indexes :data:`RAND_INCREASING_OPS` (or :data:`RAND_OPS`),
  ``magnitude`` is the (already sampled, clipped) timm magnitude and
  ``negate`` the sign draw. Returns 8-bit levels (float32).

  ``op``, ``magnitude`` and ``negate`` may be traced. The ops fall in three
  families (per-channel LUTs, blends with a degenerate image, bicubic affine
  warps); ``lax.switch`` picks the family member's parameters and each
  family's pixel work runs once, so under ``vmap`` (where every branch of a
  switch runs) an image costs three ops, not fifteen."""
  names = RAND_INCREASING_OPS if increasing else RAND_OPS
  h, w, _ = img.shape
  img_int = jnp.round(img).astype(jnp.int32)
  op = jnp.asarray(op, jnp.int32)
  magnitude = jnp.asarray(magnitude, jnp.float32)
  families = {"lut": [], "blend": [], "affine": []}
  fam_of, idx_of = [], []
  for n in names:
    if n in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
      f = "affine"
    elif n.startswith(("Color", "Contrast", "Brightness", "Sharpness")):
      f = "blend"
    else:
      f = "lut"
    fam_of.append(("lut", "blend", "affine").index(f))
    idx_of.append(len(families[f]))
    families[f].append(n)
  fam = jnp.asarray(fam_of, jnp.int32)[op]
  sub = jnp.asarray(idx_of, jnp.int32)[op]

  def level(n):
    return rand_augment_level(n, magnitude, negate)

  hist = _histogram(img_int)
  lut = jax.lax.switch(
      sub, [lambda hh, n=n: _lut_for(n, hh, level(n))
            for n in families["lut"]], hist)
  c = img_int.shape[-1]
  lut_out = jnp.take_along_axis(lut, img_int.reshape(-1, c).T, axis=1)
  lut_out = lut_out.T.reshape(img.shape).astype(jnp.float32)

  degenerate, factor = jax.lax.switch(
      sub, [lambda x, n=n: (_degenerate_for(n, x), level(n))
            for n in families["blend"]], img_int)
  blend_out = pil_blend(degenerate, img_int, factor)

  coeffs = jax.lax.switch(
      sub, [lambda n=n: _affine_for(n, level(n), h, w)
            for n in families["affine"]])
  affine_out = pil_affine(img_int, coeffs, fill)
  return jnp.select([fam == 0, fam == 1], [lut_out, blend_out], affine_out)


def rand_augment(rng, images01, num_ops: int = 2, magnitude: float = 9,
                 magnitude_std: float = 0.5, increasing: bool = True, *,
                 magnitude_max: float = _LEVEL_DENOM, prob: float = 0.5,
                 fill=RA_FILL):
  """timm ``RandAugment`` per example (auto_augment.py ``RandAugment`` /
  ``AugmentOp``): ``num_ops`` ops drawn uniformly with replacement, each
  applied with ``prob`` (timm ``rand_augment_ops``: 0.5) at a magnitude
  drawn from N(magnitude, magnitude_std) (uniform in [0, magnitude] for an
  infinite std), clipped to [0, magnitude_max]; signed ops flip sign with
  p = 0.5. Geometric ops resample bicubically (MAE passes
  ``interpolation='bicubic'``) and fill with ``fill``. [0, 1] images in,
  8-bit [0, 1] images out (PIL works on uint8)."""
  names = RAND_INCREASING_OPS if increasing else RAND_OPS
  levels = _to_levels(images01)
  b = levels.shape[0]
  k_u, k_m = jax.random.split(rng)
  # per image and op: which op, applied?, sign; then the magnitude
  u = jax.random.uniform(k_u, (b, num_ops, 3))
  op = jnp.minimum(jnp.floor(u[..., 0] * len(names)).astype(jnp.int32),
                   len(names) - 1)
  applied = u[..., 1] < prob
  negate = u[..., 2] > 0.5
  if math.isinf(magnitude_std):
    mag = jax.random.uniform(k_m, (b, num_ops), minval=0.0, maxval=magnitude)
  elif magnitude_std > 0:
    mag = magnitude + magnitude_std * jax.random.normal(k_m, (b, num_ops))
  else:
    mag = jnp.full((b, num_ops), magnitude, jnp.float32)
  mag = jnp.clip(mag, 0.0, magnitude_max)

  def one(img, draws):
    def layer(x, d):     # one traced op chain step (scan: traced once)
      o, a, m, n = d
      y = rand_augment_op(x, o, m, n, increasing=increasing, fill=fill)
      return jnp.where(a, y, x), None
    return jax.lax.scan(layer, img, draws)[0]

  out = jax.vmap(one)(levels, (op, applied, mag, negate))
  return out / 255.0


# ---- Random erasing and Mixup / CutMix ------------------------------------


def random_erasing(rng, images, probability: float = 0.25,
                   min_area: float = 0.02, max_area: float = 1 / 3,
                   min_aspect: float = 0.3, max_aspect: Optional[float] = None,
                   mode: str = "pixel", mean=None, std=None,
                   attempts: int = 10):
  """timm ``RandomErasing`` (random_erasing.py, count 1) per example: with
  ``probability``, the first of ``attempts`` boxes (area fraction
  U(min_area, max_area), log-uniform aspect) with ``h < H and w < W`` is
  filled with N(0, 1) noise per pixel (``mode='pixel'``), per channel
  (``'rand'``) or zeros (``'const'``). timm erases normalised tensors; with
  ``mean`` / ``std`` the images are un-normalised and the fill is
  ``mean + std * noise``, the same image after normalisation."""
  b, height, width, c = images.shape
  max_aspect = max_aspect or 1.0 / min_aspect
  log_ar = (math.log(min_aspect), math.log(max_aspect))
  dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) \
      else jnp.float32
  images = images.astype(dtype)

  k_box, k_draw, k_fill = jax.random.split(rng, 3)
  ub = jax.random.uniform(k_box, (b, attempts, 2))
  ud = jax.random.uniform(k_draw, (b, 3))          # erase?, top, left
  if mode == "pixel":
    noise = jax.random.normal(k_fill, images.shape, dtype)
  elif mode == "rand":
    noise = jnp.broadcast_to(jax.random.normal(k_fill, (b, 1, 1, c), dtype),
                             images.shape)
  elif mode == "const":
    noise = jnp.zeros_like(images)
  else:
    raise ValueError(f"random erasing mode {mode!r}: pixel, rand or const")
  if mean is not None:
    noise = jnp.asarray(mean, dtype) + jnp.asarray(std, dtype) * noise

  def one(img, ub, ud, fill):
    area = height * width * (min_area + (max_area - min_area) * ub[:, 0])
    ar = jnp.exp(log_ar[0] + (log_ar[1] - log_ar[0]) * ub[:, 1])
    h = jnp.round(jnp.sqrt(area * ar)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / ar)).astype(jnp.int32)
    ok = (w < width) & (h < height)
    first = jnp.argmax(ok)
    h, w = h[first], w[first]
    top = jnp.floor(ud[1] * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(ud[2] * (width - w + 1)).astype(jnp.int32)
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    box = (((rows >= top) & (rows < top + h))[:, None]
           & ((cols >= left) & (cols < left + w))[None, :])
    erase = jnp.any(ok) & (ud[0] < probability)
    return jnp.where((box & erase)[..., None], fill, img)

  return jax.vmap(one)(images, ub, ud, noise)


def smooth_targets(labels_onehot, smoothing: float):
  """timm mixup.py ``mixup_target`` smoothing: off = s / C, on = 1 - s + s/C."""
  y = jnp.asarray(labels_onehot, jnp.float32)
  return y * (1.0 - smoothing) + smoothing / y.shape[-1]


def mixup_cutmix(rng, images, labels_onehot, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 prob: float = 1.0, smoothing: float = 0.1,
                 correct_lam: bool = True):
  """timm ``Mixup(mode='batch')`` (mixup.py): with probability ``prob`` the
  batch is mixed with its reverse (``x.flip(0)``), by CutMix (lam ~
  Beta(cutmix_alpha), chosen with ``switch_prob`` when both are on; the box
  of ``rand_bbox`` and lam corrected to 1 - box area / image area) or Mixup
  (lam ~ Beta(mixup_alpha)). Targets: ``lam * y + (1 - lam) * y.flip(0)``
  after label smoothing. Returns ``(images, soft_targets, lam)``.

  One lam per call: the reference draws one per GPU batch."""
  b, height, width = images.shape[:3]
  k_u, k_lam = jax.random.split(rng)
  images = jnp.asarray(images, jnp.float32)
  y = smooth_targets(labels_onehot, smoothing)
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return images, y, jnp.float32(1.0)
  u = jax.random.uniform(k_u, (4,))       # apply?, cutmix?, box centre
  apply = u[0] < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cut = u[1] < switch_prob
  else:
    use_cut = jnp.asarray(cutmix_alpha > 0)
  alpha = jnp.where(use_cut, cutmix_alpha, mixup_alpha)
  lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
  # rand_bbox: cut side int(H * sqrt(1 - lam)), centre uniform, clipped
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  cy = jnp.minimum(jnp.floor(u[2] * height).astype(jnp.int32), height - 1)
  cx = jnp.minimum(jnp.floor(u[3] * width).astype(jnp.int32), width - 1)
  yl = jnp.clip(cy - cut_h // 2, 0, height)
  yh = jnp.clip(cy + cut_h // 2, 0, height)
  xl = jnp.clip(cx - cut_w // 2, 0, width)
  xh = jnp.clip(cx + cut_w // 2, 0, width)
  if correct_lam:
    lam_box = 1.0 - ((yh - yl) * (xh - xl)).astype(jnp.float32) / (
        height * width)
  else:
    lam_box = lam
  rows, cols = jnp.arange(height), jnp.arange(width)
  box = (((rows >= yl) & (rows < yh))[:, None]
         & ((cols >= xl) & (cols < xh))[None, :])
  flipped = images[::-1]
  extra = (1,) * (images.ndim - 3)
  cut = jnp.where(box.reshape((1, height, width) + extra), flipped, images)
  mixed = images * lam + flipped * (1.0 - lam)
  out = jnp.where(use_cut, cut, mixed)
  lam = jnp.where(use_cut, lam_box, lam)
  out = jnp.where(apply, out, images)
  lam = jnp.where(apply, lam, 1.0)
  targets = y * lam + y[::-1] * (1.0 - lam)
  return out, targets, lam


__all__ += ["RA_FILL", "RAND_OPS", "RAND_INCREASING_OPS",
            "cubic_resample_matrix", "random_resized_crop_bicubic",
            "eval_resize_center_crop", "parse_rand_augment",
            "rand_augment_level", "rand_augment_op", "rand_augment",
            "pil_blend", "pil_affine", "random_erasing", "smooth_targets",
            "mixup_cutmix"]
