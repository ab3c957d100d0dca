"""SD-MAE self-distillation loss (spec sec. 4.2).

``P_t = softmax((t - c) / tau_t)``, ``L = mean_b sum_k -P_t log softmax(s /
tau_s)``, center ``c <- m c + (1 - m) mean_b(P_t)`` (``center_on="probs"``,
parity) or of the teacher logits ``t`` (``"logits"``, DINO). The mean is over
the global batch: under ``jax.jit`` with a batch-sharded input, ``jnp.mean``
over axis 0 is the cross-device mean. The loss uses the pre-update center.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def self_distillation_loss(student: jax.Array, teacher: jax.Array,
                           center: jax.Array, *, teacher_temp: float = 0.04,
                           student_temp: float = 0.1,
                           center_momentum: float = 0.9,
                           center_on: str = "probs",
                           teacher_stop_grad: bool = False):
  """Returns ``(loss, new_center)``; student/teacher (B, K), center (1, K)."""
  # float32 at least (bf16 compute); float64 stays float64 (parity tests)
  dt = jnp.promote_types(jnp.promote_types(student.dtype, teacher.dtype),
                         jnp.float32)
  student = student.astype(dt)
  teacher = teacher.astype(dt)
  if teacher_stop_grad:
    teacher = jax.lax.stop_gradient(teacher)
  p_t = jax.nn.softmax((teacher - center) / teacher_temp, axis=-1)
  log_ps = jax.nn.log_softmax(student / student_temp, axis=-1)
  loss = jnp.mean(jnp.sum(-p_t * log_ps, axis=-1))
  if center_on == "probs":
    batch_stat = jnp.mean(p_t, axis=0, keepdims=True)
  elif center_on == "logits":
    batch_stat = jnp.mean(teacher, axis=0, keepdims=True)
  else:
    raise ValueError(
        f"center_on must be 'probs' or 'logits', got {center_on!r}")
  new_center = jax.lax.stop_gradient(
      center_momentum * center + (1 - center_momentum) * batch_stat)
  return loss, new_center
