"""Masked reconstruction losses (spec sma.md section 4), batch-global means.

Both losses are ``sum(mask * l) / max(1, sum(mask))`` over the whole batch
(an example with more masked tokens weighs more), computed in float32 (float64 for float64 inputs) and
never by boolean gathering, so they are jit-friendly and finite when no
position is masked (then they are 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _masked_mean(per_pos: jax.Array, mask: jax.Array) -> jax.Array:
  m = mask.astype(jnp.float32)
  return jnp.sum(per_pos * m) / jnp.maximum(1.0, jnp.sum(m))


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """``(1 / (M C)) sum_{mask} ||pred - target||^2``.

  ``pred``, ``target``: ``(B, N, C)`` or ``(B, N)``; ``mask``: ``(B, N)`` bool.
  """
  pred = pred.astype(jnp.promote_types(pred.dtype, jnp.float32))  # f64 stays
  target = jax.lax.stop_gradient(target).astype(pred.dtype)
  if pred.ndim == mask.ndim:
    pred, target = pred[..., None], target[..., None]
  per_pos = jnp.mean(jnp.square(pred - target.reshape(pred.shape)), axis=-1)
  return _masked_mean(per_pos, mask)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array,
                         mask: jax.Array) -> jax.Array:
  """``(1 / M) sum_{mask} -log softmax(logits)[target]`` (float32 softmax).

  ``logits``: ``(B, N, V)``; ``targets``: int ``(B, N)``; ``mask``: ``(B, N)``.
  """
  logp = jax.nn.log_softmax(
      logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
  nll = -jnp.take_along_axis(logp, targets.astype(jnp.int32)[..., None],
                             axis=-1)[..., 0]
  return _masked_mean(nll, mask)
