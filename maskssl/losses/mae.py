"""MAE reconstruction target and loss (spec sec. 3.3 and 4.1)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from maskssl.models.vit import patchify


def normalized_patch_targets(images01: jax.Array, patch_size: int,
                             eps: float = 1e-6) -> jax.Array:
  """Per-patch, per-channel normalised pixels, flattened pixel-major.

  ``images01``: (B, H, W, C) in [0, 1]. Returns (B, N, p*p*C) float32
  (float64 for float64 input) with
  ``(v - mean) / (sqrt(var_unbiased) + eps)`` over the p*p pixels of each
  patch and channel (eps outside the root; a constant patch gives exactly 0).
  No gradient flows through the target.
  """
  dt = jnp.promote_types(images01.dtype, jnp.float32)
  x = patchify(jax.lax.stop_gradient(images01).astype(dt),
               patch_size)                              # (B, N, p*p, C)
  mean = jnp.mean(x, axis=2, keepdims=True)
  var = jnp.var(x, axis=2, keepdims=True, ddof=1)
  t = (x - mean) / (jnp.sqrt(var) + eps)
  b, n = t.shape[:2]
  return t.reshape(b, n, -1)
