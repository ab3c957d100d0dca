"""The one compute-dtype-by-name helper (``config.model.compute_dtype``)."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

_NAMES = {None: jnp.float32, "float32": jnp.float32, "bfloat16": jnp.bfloat16,
          "bf16": jnp.bfloat16, "float16": jnp.float16,
          # float64 needs jax_enable_x64; it exists for the parity tests
          "float64": jnp.float64}


def dtype_from_name(name) -> Any:
  """``"float32"`` / ``"bfloat16"`` / ... / None (float32); a dtype passes."""
  if name is None or isinstance(name, str):
    if name not in _NAMES:
      raise ValueError(f"unknown compute_dtype {name!r}; use one of "
                       f"{sorted(k for k in _NAMES if k)}")
    return _NAMES[name]
  return name
