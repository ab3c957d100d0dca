"""MSCN masking operations (Masked Siamese ConvNets, Jing, Zhu & LeCun 2022).

Composable, jit-friendly pure functions. Images are float32 NHWC; every mask is
a bool array of the image's shape ``(B, H, W, C)`` with ``True = masked``.
Stochastic ops have the signature ``(rng, images, cfg) -> masks / images`` and
are vectorised over the batch with ``jax.random`` (no Python loops over the
batch, no host-side mask generation, static shapes: variable per-sample counts
become boolean masks through ranks of uniform keys).

``cfg`` is the ``config.mscn`` group (see :func:`default_config`); every
value in it is a static Python value, closed over under ``jit``.

Pipeline (Jing, Zhu & LeCun, arXiv 2206.07700)::

    x in [0,1] -> [imagenet-normalise] -> HPF -> / hpf_scale          (both views)
    view A -> J copies, each: per-sample kind (focal/spatial/channel, jnp.where)
              -> mask -> fill with fresh N(0, noise_std^2) noise (or zeros)
    view B -> untouched (asymmetric), unless mask_both_views
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from maskssl.constants import IMAGENET_MEAN, IMAGENET_STD

KINDS = ("focal", "spatial", "channel")


def default_config(image_size: int | None = None) -> ml_collections.ConfigDict:
  """The ``mscn`` config group. Provenance tags ([R]/[A]) follow the spec.

  ``image_size`` only picks the grid default (7 at >= 128 px [R], 4 below
  [A]); HPF kernel/sigma left as ``None`` are resolved from the image size at
  trace time (sigma = 5 * H / 224, k = 2 * round(1.2 sigma) + 1 [A]).
  """
  c = ml_collections.ConfigDict()
  c.enabled = True            # master switch: False = plain siamese baseline
  # High-pass filter.
  c.hpf = True                # [P] HPF before masking
  c.hpf_kernel = None         # int or None (auto); 13 at 224 px [R]
  c.hpf_sigma = None          # float or None (auto); 5.0 at 224 px [R]
  c.hpf_scale = 0.08          # [R] divide x_hp by this (unit-ish scale)
  c.hpf_input = "unit"        # "unit" ([0,1] RGB, [R] RandomMask) | "imagenet_norm" ([R] WACV)
  c.hpf_at_eval = True        # [A] encode() applies the same preprocessing
  # Masks.
  c.grid = 7 if (image_size is None or image_size >= 128) else 4   # [R] / [A]
  c.ratio_lo = 0.05           # [R] per-image ratio ~ U[lo, hi]
  c.ratio_hi = 0.25           # [R]
  c.focal_keep = 200 / 224    # [R] side of the kept focal window / image side
  c.kind_probs = (0.2, 0.24, 0.56)   # [R] (focal, spatial, channel)
  # Fill.
  c.fill = "noise"            # "noise" | "zero"
  c.noise_std = 0.25          # [R] in hpf_scale = 0.08 space
  # Views.
  c.n_masked_views = 2        # [A] J masked copies of the anchor
  c.mask_both_views = False   # [P] asymmetric by default
  return c


# --------------------------------------------------------------------------
# High-pass filter
# --------------------------------------------------------------------------
def gaussian_kernel1d(kernel_size: int, sigma: float) -> np.ndarray:
  """Normalised 1-D Gaussian, w_i ~ exp(-0.5 (i/sigma)^2), i = -(k-1)/2..(k-1)/2
  (torchvision ``GaussianBlur`` convention), float64, sums to 1."""
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")
  half = (kernel_size - 1) / 2
  x = np.linspace(-half, half, kernel_size)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def resolve_hpf(cfg, image_size: int) -> tuple[int, float]:
  """(kernel_size, sigma) from cfg, filling ``None`` from the image size."""
  sigma = cfg.hpf_sigma
  if sigma is None:
    sigma = 5.0 * image_size / 224.0
  k = cfg.hpf_kernel
  if k is None:
    k = 2 * int(round(1.2 * sigma)) + 1
  return int(k), float(sigma)


def _depthwise_1d(x: jax.Array, w: np.ndarray, axis: int) -> jax.Array:
  """Reflect-padded depthwise 1-D convolution of NHWC ``x`` along H (1) or W (2)."""
  k = len(w)
  pad = (k - 1) // 2
  c = x.shape[-1]
  widths = [(0, 0)] * 4
  widths[axis] = (pad, pad)
  xp = jnp.pad(x, widths, mode="reflect")
  shape = (k, 1, 1, 1) if axis == 1 else (1, k, 1, 1)
  kern = jnp.broadcast_to(jnp.asarray(w, jnp.float32).reshape(shape),
                          shape[:3] + (c,))
  return lax.conv_general_dilated(
      xp, kern, window_strides=(1, 1), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
      precision=lax.Precision.HIGHEST)


def gaussian_blur(images: jax.Array, kernel_size: int, sigma: float) -> jax.Array:
  """Separable Gaussian blur (along H, then W), per channel, reflect padding
  (edge pixel not repeated, as torchvision). ``images``: (B, H, W, C)."""
  if kernel_size == 1:
    return images
  w = gaussian_kernel1d(kernel_size, sigma)
  pad = (kernel_size - 1) // 2
  if pad >= min(images.shape[1], images.shape[2]):
    raise ValueError(f"HPF kernel {kernel_size} too large for image "
                     f"{images.shape[1]}x{images.shape[2]} (reflect padding)")
  return _depthwise_1d(_depthwise_1d(images, w, 1), w, 2)


def high_pass(images: jax.Array, kernel_size: int, sigma: float,
              scale: float = 1.0) -> jax.Array:
  """``(x - G * x) / scale`` with a normalised Gaussian and reflect padding.

  The blur is applied to ``x - x[:, :1, :1, :]`` (a per-image, per-channel
  reference pixel), which is mathematically identical because the kernel sums
  to 1 but makes the output of a constant image exactly 0 in float32 (the
  float32 kernel sum is 1 only up to rounding).
  """
  x = images.astype(jnp.float32)
  xc = x - x[:, :1, :1, :]
  return (xc - gaussian_blur(xc, kernel_size, sigma)) / scale


def preprocess(images: jax.Array, cfg) -> jax.Array:
  """Images (uint8 in [0,255] or float in [0,1]) -> the network input space:
  optional ImageNet normalisation, then the HPF (if ``cfg.hpf``)."""
  x = images
  if x.dtype == jnp.uint8:
    x = x.astype(jnp.float32) / 255.0
  x = x.astype(jnp.float32)
  if cfg.hpf_input == "imagenet_norm":
    x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(
        IMAGENET_STD, jnp.float32)
  elif cfg.hpf_input != "unit":
    raise ValueError(f"mscn.hpf_input must be 'unit' or 'imagenet_norm', "
                     f"got {cfg.hpf_input!r}")
  if cfg.hpf:
    k, sigma = resolve_hpf(cfg, x.shape[1])
    x = high_pass(x, k, sigma, cfg.hpf_scale)
  return x


# --------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------
def ranks(x: jax.Array, axis: int = -1) -> jax.Array:
  """Rank of every entry along ``axis`` (0 = smallest); a permutation."""
  return jnp.argsort(jnp.argsort(x, axis=axis, stable=True), axis=axis,
                     stable=True)


def cell_ids(height: int, width: int, grid: int) -> np.ndarray:
  """(H, W) int array: grid cell index ``cy * G + cx`` of every pixel, with
  ``cy = (y * G) // H`` (works when H is not divisible by G)."""
  cy = (np.arange(height) * grid) // height
  cx = (np.arange(width) * grid) // width
  return cy[:, None] * grid + cx[None, :]


def mask_counts(rng: jax.Array, batch: int, cfg) -> jax.Array:
  """Masked-cell counts ``round(G^2 * rho_b)``, rho_b ~ U[ratio_lo, ratio_hi]."""
  if not 0.0 <= cfg.ratio_lo <= cfg.ratio_hi <= 1.0:
    raise ValueError(f"need 0 <= ratio_lo <= ratio_hi <= 1, got "
                     f"{cfg.ratio_lo}, {cfg.ratio_hi}")
  rho = jax.random.uniform(rng, (batch,), minval=cfg.ratio_lo,
                           maxval=cfg.ratio_hi)
  return jnp.round(rho * cfg.grid * cfg.grid).astype(jnp.int32)


def _cells_to_pixels(cells: jax.Array, height: int, width: int,
                     grid: int) -> jax.Array:
  """(..., G*G) bool -> (..., H, W) bool."""
  ids = jnp.asarray(cell_ids(height, width, grid))
  return cells[..., ids]


def grid_mask(rng: jax.Array, images: jax.Array, cfg) -> jax.Array:
  """``spatial`` kind: per image, ``round(G^2 rho_b)`` of the G x G cells chosen
  uniformly without replacement; shared by all channels. -> (B, H, W, C) bool."""
  b, h, w, c = images.shape
  k_rho, k_cells = jax.random.split(rng)
  cnt = mask_counts(k_rho, b, cfg)
  g2 = cfg.grid * cfg.grid
  cells = ranks(jax.random.uniform(k_cells, (b, g2))) < cnt[:, None]
  m = _cells_to_pixels(cells, h, w, cfg.grid)[..., None]
  return jnp.broadcast_to(m, (b, h, w, c))


def channel_mask(rng: jax.Array, images: jax.Array, cfg) -> jax.Array:
  """``channel`` kind: as :func:`grid_mask`, but every channel draws its own
  cell set (same count per image). -> (B, H, W, C) bool."""
  b, h, w, c = images.shape
  k_rho, k_cells = jax.random.split(rng)
  cnt = mask_counts(k_rho, b, cfg)
  g2 = cfg.grid * cfg.grid
  cells = ranks(jax.random.uniform(k_cells, (b, c, g2))) < cnt[:, None, None]
  m = _cells_to_pixels(cells, h, w, cfg.grid)          # (B, C, H, W)
  return jnp.moveaxis(m, 1, -1)


def focal_size(cfg, height: int, width: int) -> tuple[int, int]:
  sh = int(round(cfg.focal_keep * height))
  sw = int(round(cfg.focal_keep * width))
  if not (1 <= sh <= height and 1 <= sw <= width):
    raise ValueError(f"focal_keep={cfg.focal_keep} gives a {sh}x{sw} window "
                     f"for a {height}x{width} image")
  return sh, sw


def focal_mask(rng: jax.Array, images: jax.Array, cfg) -> jax.Array:
  """``focal`` kind: keep one axis-aligned S x S window (S = round(focal_keep H),
  uniformly random integer corner) and mask everything outside."""
  b, h, w, c = images.shape
  sh, sw = focal_size(cfg, h, w)
  k_y, k_x = jax.random.split(rng)
  y0 = jax.random.randint(k_y, (b, 1, 1), 0, h - sh + 1)
  x0 = jax.random.randint(k_x, (b, 1, 1), 0, w - sw + 1)
  yy = jnp.arange(h)[None, :, None]
  xx = jnp.arange(w)[None, None, :]
  inside = (yy >= y0) & (yy < y0 + sh) & (xx >= x0) & (xx < x0 + sw)
  return jnp.broadcast_to((~inside)[..., None], (b, h, w, c))


def kind_probs(cfg) -> np.ndarray:
  p = np.asarray(cfg.kind_probs, np.float64)
  if p.shape != (len(KINDS),) or (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"mscn.kind_probs must be {len(KINDS)} non-negative "
                     f"weights for {KINDS}, got {cfg.kind_probs}")
  return p / p.sum()


def sample_kinds(rng: jax.Array, batch: int, cfg) -> jax.Array:
  """Per-sample kind index into :data:`KINDS`, drawn with ``kind_probs``
  (inverse CDF of one uniform per sample). -> (B,) int32."""
  p = kind_probs(cfg)
  cum = jnp.asarray(np.cumsum(p)[:-1], jnp.float32)
  u = jax.random.uniform(rng, (batch,))
  kind = jnp.sum(u[:, None] >= cum[None, :], axis=1).astype(jnp.int32)
  # Never pick a zero-probability kind, even at float edge cases.
  allowed = jnp.asarray(p > 0)
  first = int(np.argmax(p > 0))
  return jnp.where(allowed[kind], kind, first)


def mixture_mask(rng: jax.Array, images: jax.Array, cfg
                 ) -> tuple[jax.Array, jax.Array]:
  """Per-sample mixture of mask kinds: all candidates are computed and the
  sample's kind is selected with ``jnp.where`` (no Python control flow).
  Returns ``(mask (B,H,W,C) bool, kinds (B,) int32)``."""
  b = images.shape[0]
  k_kind, k_f, k_s, k_c = jax.random.split(rng, 4)
  kind = sample_kinds(k_kind, b, cfg)
  candidates = (focal_mask(k_f, images, cfg), grid_mask(k_s, images, cfg),
                channel_mask(k_c, images, cfg))
  sel = kind[:, None, None, None]
  m = jnp.where(sel == 0, candidates[0],
                jnp.where(sel == 1, candidates[1], candidates[2]))
  return m, kind


def fill(rng: jax.Array, images: jax.Array, mask: jax.Array, cfg) -> jax.Array:
  """Replace masked entries by fresh i.i.d. N(0, noise_std^2) noise (one draw
  per sample, pixel and channel; the caller passes a fresh ``rng`` per step)
  or by zeros. Unmasked entries are returned bit for bit."""
  if cfg.fill == "noise":
    noise = cfg.noise_std * jax.random.normal(rng, images.shape, jnp.float32)
  elif cfg.fill == "zero":
    noise = jnp.zeros(images.shape, jnp.float32)
  else:
    raise ValueError(f"mscn.fill must be 'noise' or 'zero', got {cfg.fill!r}")
  return jnp.where(mask, noise.astype(images.dtype), images)


def mask_images(rng: jax.Array, images: jax.Array, cfg
                ) -> tuple[jax.Array, jax.Array]:
  """One masked copy: mixture mask + fill. Returns ``(masked, mask)``."""
  k_m, k_n = jax.random.split(rng)
  m, _ = mixture_mask(k_m, images, cfg)
  return fill(k_n, images, m, cfg), m


def mscn_views(rng: jax.Array, view_a: jax.Array, view_b: jax.Array, cfg
               ) -> dict[str, jax.Array]:
  """The full MSCN transform of two (already cropped) views in [0, 1].

  Returns a dict with ``anchors`` (J, B, H, W, C): J independently masked
  copies of HPF(view_a); ``masks`` (J, B, H, W, C) bool; ``target``
  (B, H, W, C): HPF(view_b), unmasked unless ``cfg.mask_both_views``; and
  ``target_mask`` (B, H, W, C) bool (all False when asymmetric).
  """
  ha = preprocess(view_a, cfg)
  hb = preprocess(view_b, cfg)
  j = int(cfg.n_masked_views)
  if j < 1:
    raise ValueError(f"mscn.n_masked_views must be >= 1, got {j}")
  keys = jax.random.split(jax.random.fold_in(rng, 0), j)
  anchors, masks = jax.vmap(lambda k: mask_images(k, ha, cfg))(keys)
  if cfg.mask_both_views:
    hb, mb = mask_images(jax.random.fold_in(rng, 1), hb, cfg)
  else:
    mb = jnp.zeros(hb.shape, bool)
  return dict(anchors=anchors, masks=masks, target=hb, target_mask=mb)


def resolved_summary(cfg, image_size: int) -> dict[str, Any]:
  """Human-readable resolved settings (for logs / docstrings)."""
  k, s = resolve_hpf(cfg, image_size)
  return dict(hpf=bool(cfg.hpf), hpf_kernel=k, hpf_sigma=round(s, 4),
              hpf_scale=cfg.hpf_scale, grid=cfg.grid,
              ratio=(cfg.ratio_lo, cfg.ratio_hi),
              focal_window=focal_size(cfg, image_size, image_size)[0],
              kind_probs=tuple(float(v) for v in kind_probs(cfg)),
              fill=cfg.fill, noise_std=cfg.noise_std,
              n_masked_views=cfg.n_masked_views,
              mask_both_views=bool(cfg.mask_both_views))


__all__ = [
    "KINDS", "default_config", "gaussian_kernel1d", "resolve_hpf",
    "gaussian_blur", "high_pass", "preprocess", "ranks", "cell_ids",
    "mask_counts", "grid_mask", "channel_mask", "focal_mask", "focal_size",
    "kind_probs", "sample_kinds", "mixture_mask", "fill", "mask_images",
    "mscn_views", "resolved_summary",
]
