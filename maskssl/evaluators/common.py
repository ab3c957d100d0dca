"""Helpers shared by evaluators: batched, sharded inference over a split."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from maskssl import parallel
from maskssl.data.base import ArrayDataset, host_slice


def eval_batch_size(requested: int, mesh) -> int:
  n = mesh.devices.size
  return max(n, (int(requested) // n) * n)


def apply_in_batches(fn: Callable, state, dataset: ArrayDataset,
                     batch_size: int, mesh, keys=None) -> np.ndarray:
  """``fn(state, batch) -> (B, ...)`` over the whole dataset, in order.

  The last batch is padded (static shapes; one compile) and the padding is
  dropped from the result. ``fn`` is jitted here; batches are sharded on the
  mesh's data axis. Multi-process: every process holds the whole dataset
  (evaluation splits are small and loaded identically everywhere), feeds
  its own slice of each batch, and gets the whole output back (the jitted
  ``fn`` returns replicated arrays), so every process returns the same
  result.
  """
  bs = eval_batch_size(batch_size, mesh)
  n = len(dataset)
  arrays = {k: v for k, v in dataset.arrays.items()
            if keys is None or k in keys}
  multi = jax.process_count() > 1
  jfn = _jitted(fn, parallel.replicated(mesh) if multi else None)
  sl = host_slice(bs, jax.process_index(), jax.process_count())
  outs = []
  for start in range(0, n, bs):
    idx = np.arange(start, start + bs)
    idx = np.minimum(idx, n - 1)[sl]
    batch = parallel.global_batch({k: v[idx] for k, v in arrays.items()},
                                  mesh)
    out = jax.device_get(jfn(state, batch))
    outs.append(np.asarray(out)[:min(bs, n - start)])
  return np.concatenate(outs, 0)


def features(encode: Callable, state, dataset: ArrayDataset,
             batch_size: int, mesh) -> np.ndarray:
  """``encode(state, batch)`` over a whole split: float32 ``(N, D)``."""
  feats = apply_in_batches(encode, state, dataset, batch_size, mesh)
  return np.asarray(feats, np.float32).reshape(len(dataset), -1)


def encode_features(method, state, dataset: ArrayDataset, batch_size: int,
                    mesh) -> np.ndarray:
  """:func:`features` of ``method.encode``."""
  return features(method.encode, state, dataset, batch_size, mesh)


class SplitFeatures:
  """Two labelled splits, loaded once (online evaluators run many times),
  and their ``encode`` features for a state."""

  def __init__(self, encode: Callable, data, splits, batch_size: int):
    self.encode, self.data, self.names = encode, data, tuple(splits)
    self.batch_size, self._splits = int(batch_size), None

  def splits(self):
    """The datasets, in the order of ``splits`` (loaded once)."""
    from maskssl.data import load_split  # pylint: disable=g-import-not-at-top
    if self._splits is None:
      self._splits = [load_split(self.data, s) for s in self.names]
    return self._splits

  def __call__(self, state):
    """``[(dataset, features (N, D)), ...]`` in the order of ``splits``."""
    mesh = parallel.make_mesh()
    return [(ds, features(self.encode, state, ds, self.batch_size, mesh))
            for ds in self.splits()]


def require(fns: dict, name: str, evaluator: str) -> Callable:
  """``fns[name]``, or a ConfigError naming what the evaluator needs."""
  if name not in fns:
    from maskssl.config_utils import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"evaluator {evaluator!r} needs the method's "
                      f"{name!r} function; this method provides "
                      f"{sorted(fns)}")
  return fns[name]


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable, out_sharding=None):
  if out_sharding is None:
    return jax.jit(fn)
  return jax.jit(fn, out_shardings=out_sharding)
