"""Array datasets with a deterministic, resumable batch order.

Small splits are an :class:`ArrayDataset`: a dict of equal-length numpy
arrays (host memory) plus metadata; large ones are random-access sources
read by the grain loader (:mod:`maskssl.data.grain_source`) with the same
order. The batch used at
global step ``t`` is a pure function of ``(seed, t)``: epoch ``e = t //
steps_per_epoch`` is a permutation drawn from ``numpy.random.default_rng
([seed, e])`` and step ``t`` takes its ``t % steps_per_epoch``-th slice. So a
resumed run sees exactly the batches an uninterrupted run sees, with no
iterator state to checkpoint. Multi-host runs take their process's
contiguous slice of each global batch (:func:`host_slice`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections
import numpy as np

from maskssl.config_utils import from_config


class DataError(ValueError):
  """Bad or missing input data; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
  """Input-pipeline fields of ``config.data``, shared by every data set
  (each data module's schema extends :class:`DataConfig`)."""
  threads: int = 2            # background threads preparing the next batches
  prefetch: int = 2           # batches prepared ahead of the step
  workers: int = 0            # decoding processes (0: threads only)
  bad_records: str = "error"  # or "skip": replace with a counted warning
  in_memory: Any = "auto"     # "auto" | True | False: load the training split
  in_memory_max_mb: float = 32  # auto: text files above this are read by record
  cache_dir: str = ""         # where .gz text is decompressed once


# The loader fields with their defaults: a config that includes them
# (``c.data = dict(..., **LOADER_FIELDS)``) lets ``--config.data.workers=4``
# etc. override them on the command line.
LOADER_FIELDS = {f.name: f.default for f in dataclasses.fields(LoaderConfig)}


@dataclasses.dataclass(frozen=True)
class DataConfig(LoaderConfig):
  """Fields of every ``config.data``: the data set (the registry name of
  :mod:`maskssl.data`) and the split pretraining reads. A data module's
  schema subclasses it; its fields are the allowed keys."""
  name: str = ""
  pretrain_split: str = "pretrain"


def parse_config(cls, data_config, component: str | None = None):
  """``data_config`` (a ConfigDict / dict, or already a ``cls``) as the
  frozen schema ``cls``: an unknown key is a ConfigError naming the key,
  the data set and the allowed keys."""
  if isinstance(data_config, cls):
    return data_config
  return from_config(cls, data_config,
                     component or f"config.data (data set {cls.name!r})")


def config_dict(cfg) -> ml_collections.ConfigDict:
  """A schema as a ConfigDict (what ``default_config`` functions return)."""
  return ml_collections.ConfigDict(dataclasses.asdict(cfg))


@dataclasses.dataclass
class ArrayDataset:
  arrays: dict[str, np.ndarray]
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.arrays:
      raise DataError("dataset has no arrays")
    lengths = {k: len(v) for k, v in self.arrays.items()}
    if len(set(lengths.values())) != 1:
      raise DataError(f"arrays have different lengths: {lengths}")

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def take(self, idx) -> "ArrayDataset":
    return ArrayDataset({k: v[idx] for k, v in self.arrays.items()},
                        dict(self.meta))

  def batch(self, idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in self.arrays.items()}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped)."""
  if num_examples < batch_size:
    raise DataError(
        f"dataset has {num_examples} examples, fewer than one batch of "
        f"{batch_size}; lower --config.batch_size or add data")
  return num_examples // batch_size


def epoch_permutation(num_examples: int, seed: int, epoch: int
                      ) -> np.ndarray:
  """The example order of ``epoch`` (the one rule every loader uses)."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(
      num_examples)


def batch_indices(num_examples: int, batch_size: int, step: int,
                  seed: int) -> np.ndarray:
  """Indices of the global batch at ``step`` (deterministic in seed, step)."""
  spe = steps_per_epoch(num_examples, batch_size)
  epoch, pos = divmod(int(step), spe)
  perm = epoch_permutation(num_examples, seed, epoch)
  return perm[pos * batch_size:(pos + 1) * batch_size]


def host_slice(global_batch_size: int, process_index: int,
               process_count: int) -> slice:
  """This process's contiguous share of a global batch."""
  if global_batch_size % process_count:
    raise DataError(f"batch size {global_batch_size} is not divisible by "
                    f"the process count {process_count}")
  per = global_batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def split_indices(n: int, fractions: Mapping[str, float], seed: int
                  ) -> dict[str, np.ndarray]:
  """Deterministic disjoint split of ``range(n)`` by fractions (in order)."""
  total = sum(fractions.values())
  if total > 1 + 1e-9:
    raise DataError(f"split fractions sum to {total} > 1: {dict(fractions)}")
  perm = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for name, frac in fractions.items():
    count = int(round(frac * n))
    out[name] = np.sort(perm[start:start + count])
    start += count
  return out


def cap_indices(n: int, cap: int, seed: int) -> np.ndarray:
  """``cap`` of ``range(n)`` chosen at random (seeded), in order; all of them
  when ``cap`` is 0 or >= n. Files and tars are often sorted by class, so
  the first ``cap`` would be one class."""
  if cap <= 0 or cap >= n:
    return np.arange(n)
  perm = np.random.default_rng([int(seed), 0x6361]).permutation(n)
  return np.sort(perm[:cap])
