"""Helpers shared by evaluators: batched, sharded inference over a split."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from maskssl import parallel
from maskssl.data.base import ArrayDataset


def eval_batch_size(requested: int, mesh) -> int:
  n = mesh.devices.size
  return max(n, (int(requested) // n) * n)


def apply_in_batches(fn: Callable, state, dataset: ArrayDataset,
                     batch_size: int, mesh, keys=None) -> np.ndarray:
  """``fn(state, batch) -> (B, ...)`` over the whole dataset, in order.

  The last batch is padded (static shapes; one compile) and the padding is
  dropped from the result. ``fn`` is jitted here; batches are sharded on the
  mesh's data axis. Single-process only (evaluation data is host-local).
  """
  bs = eval_batch_size(batch_size, mesh)
  n = len(dataset)
  arrays = {k: v for k, v in dataset.arrays.items()
            if keys is None or k in keys}
  jfn = _jitted(fn)
  outs = []
  for start in range(0, n, bs):
    idx = np.arange(start, start + bs)
    idx = np.minimum(idx, n - 1)
    batch = parallel.global_batch({k: v[idx] for k, v in arrays.items()},
                                  mesh)
    out = jax.device_get(jfn(state, batch))
    outs.append(np.asarray(out)[:min(bs, n - start)])
  return np.concatenate(outs, 0)


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable):
  return jax.jit(fn)
