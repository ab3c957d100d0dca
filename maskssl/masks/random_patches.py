"""Uniform random patch masking with an exact count per image (static shapes).

``random_patch_mask(rng, shape_or_valid, cfg)`` -> bool (B, N), True = masked.
Every row has exactly ``floor(cfg.mask_ratio * N)`` masked entries (or
``floor(r * n_valid)`` of its valid entries when a boolean ``valid`` array is
given; invalid entries are never masked). The recipe is the rank of i.i.d.
uniform noise, so each subset of that size is equally likely.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def num_masked(num_patches: int, mask_ratio: float) -> int:
  """``floor(r * N)`` as a Python int (guarded against 0.6*N float error)."""
  return int(math.floor(mask_ratio * num_patches + 1e-9))


def _ratio(cfg) -> float:
  if isinstance(cfg, (int, float)):
    return float(cfg)
  return float(cfg.get("mask_ratio", 0.75)) if hasattr(cfg, "get") else float(
      cfg.mask_ratio)


def random_patch_mask(rng: jax.Array, shape_or_valid, cfg) -> jax.Array:
  """Boolean (B, N) mask with exactly floor(r * N) (or floor(r * valid)) True."""
  r = _ratio(cfg)
  if isinstance(shape_or_valid, tuple):
    b, n = shape_or_valid
    noise = jax.random.uniform(rng, (b, n))
    ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
    return ranks < num_masked(n, r)
  valid = jnp.asarray(shape_or_valid, bool)
  b, n = valid.shape
  noise = jax.random.uniform(rng, (b, n))
  noise = jnp.where(valid, noise, 2.0)          # invalid entries rank last
  ranks = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  count = jnp.floor(r * valid.sum(axis=1) + 1e-6).astype(jnp.int32)
  return (ranks < count[:, None]) & valid


def mask_indices(mask: jax.Array, n_masked: int):
  """(ids_vis, ids_mask) from a mask with exactly ``n_masked`` True per row;
  each group in ascending patch index (stable argsort, spec sec. 3.1)."""
  order = jnp.argsort(mask, axis=1, stable=True)
  n_vis = mask.shape[1] - n_masked
  return order[:, :n_vis], order[:, n_vis:]
