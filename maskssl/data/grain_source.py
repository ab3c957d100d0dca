"""The one input pipeline: grain over a random-access source, by step.

Every training split is a *source*: ``len(source)`` records, ``source[i]``
one record (a dict of numpy arrays), optionally ``source.read_batch(idx)``
(a whole batch at once, for in-memory arrays) and ``source.describe(i)``
(where record ``i`` lives, for error messages). :class:`ArraySource` wraps
an in-memory :class:`~maskssl.data.base.ArrayDataset`; file-backed sources
(ArrayRecord, TFDS ``data_source``, image folders / tars, CSV rows, SMILES
lines, FASTA records, npz) are in :mod:`maskssl.data.records`.

The loader is a ``grain.MapDataset`` whose element ``t`` is this process's
slice of the global batch at step ``t``:

    indices(t) = batch_indices(len(source), batch_size, t, seed)[host_slice]

with the permutation rule of :mod:`maskssl.data.base` (epoch
``t // steps_per_epoch`` is ``default_rng([seed, epoch]).permutation(n)``),
so in-memory runs see exactly the batches they saw before grain, a file
source sees the same batches as the same records held in memory, and
resuming at step ``s`` is ``steps[s:]``: the step is the whole iterator
state, nothing else goes into the checkpoint. Each process reads only the
records of its own slice.

Prefetch: ``to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))``
computes the next batches in background threads while the current step
runs; ``workers > 0`` adds ``mp_prefetch`` (decoding in that many worker
processes; element ``t`` goes to worker ``t % workers``, the order is
unchanged). Augmentation stays on device, in the methods.

Bad records (a corrupt image, an unreadable record): ``bad_records="error"``
raises :class:`~maskssl.data.base.DataError` naming the file and index;
``"skip"`` replaces the record by the next readable one (``i + 1``, ...: the
batch keeps its shape and stays a function of (seed, t)) and reports it
(the loop warns with the name and counts ``data_skipped`` in the metrics).
A worker process that dies raises :class:`InputWorkerError`.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from maskssl.data.base import LOADER_FIELDS, ArrayDataset, DataError
from maskssl.data.base import LoaderConfig
from maskssl.data.base import epoch_permutation, host_slice, steps_per_epoch

BAD_KEY = "__bad_records__"   # per-batch list of skipped records
MAX_CONSECUTIVE_BAD = 64      # "skip" gives up after this many in a row


class InputWorkerError(RuntimeError):
  """An input worker process died (killed, out of memory, segfault)."""


# ---------------------------------------------------------------- sources --
class ArraySource:
  """An in-memory :class:`ArrayDataset` as a source (batches by fancy
  indexing, as before grain)."""

  in_memory = True

  def __init__(self, dataset: ArrayDataset):
    self.dataset = dataset
    self.meta = dataset.meta

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, i: int) -> dict:
    return {k: v[i] for k, v in self.dataset.arrays.items()}

  def read_batch(self, idx) -> dict:
    return self.dataset.batch(idx)

  def describe(self, i: int) -> str:
    return f"<in-memory>[{i}]"


def as_source(data):
  """ArrayDataset -> :class:`ArraySource`; sources pass through."""
  if isinstance(data, ArrayDataset):
    return ArraySource(data)
  if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
    raise TypeError(f"not a data source: {type(data).__name__}")
  return data


def is_in_memory(source) -> bool:
  return bool(getattr(source, "in_memory", False))


def describe(source, i: int) -> str:
  fn = getattr(source, "describe", None)
  return fn(int(i)) if fn else f"{type(source).__name__}[{int(i)}]"


def stack(records: Sequence[Mapping[str, Any]], where: str = "") -> dict:
  """Records (dicts of arrays / scalars) -> a batch dict."""
  out = {}
  for k in records[0]:
    try:
      out[k] = np.stack([np.asarray(r[k]) for r in records])
    except ValueError as e:  # ragged shapes: name the first odd record
      shapes = [np.shape(r[k]) for r in records]
      odd = next(j for j, s in enumerate(shapes) if s != shapes[0])
      raise DataError(f"{where}: field {k!r} has shape {shapes[odd]} in "
                      f"record {odd} of the batch but {shapes[0]} in the "
                      "first (set resize/crop or max_len in the data config)"
                      ) from e
  return out


# ------------------------------------------------------------ the loader --
@dataclasses.dataclass(frozen=True)
class LoaderOptions:
  """How batches are read (never what they contain)."""
  threads: int = LOADER_FIELDS["threads"]      # 0 = read inline
  prefetch: int = LOADER_FIELDS["prefetch"]    # batches computed ahead
  workers: int = LOADER_FIELDS["workers"]      # decoding processes
  bad_records: str = LOADER_FIELDS["bad_records"]  # "error" | "skip"

  def __post_init__(self):
    if self.bad_records not in ("error", "skip"):
      raise DataError(f"data.bad_records must be 'error' or 'skip', got "
                      f"{self.bad_records!r}")


def loader_options(data_config) -> LoaderOptions:
  """LoaderOptions from ``config.data`` (its ``threads``, ``prefetch``,
  ``workers``, ``bad_records``: a data set schema, a ConfigDict or None;
  absent fields keep the :class:`~maskssl.data.base.LoaderConfig`
  defaults). The data set's own keys are checked where it is loaded
  (:func:`maskssl.data.data_schema`)."""
  if not isinstance(data_config, LoaderConfig):
    data_config = LoaderConfig(**{k: data_config[k] for k in LOADER_FIELDS
                                  if k in (data_config or {})})
  return LoaderOptions(threads=int(data_config.threads),
                       prefetch=int(data_config.prefetch),
                       workers=int(data_config.workers),
                       bad_records=str(data_config.bad_records))


class _PermCache:
  """The last two epochs' permutations (a step needs one; threads near an
  epoch boundary need two)."""

  def __init__(self, n: int, seed: int):
    self.n, self.seed = n, seed
    self._cache: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    return dict(n=self.n, seed=self.seed)

  def __setstate__(self, s):
    self.__init__(s["n"], s["seed"])

  def get(self, epoch: int) -> np.ndarray:
    with self._lock:
      p = self._cache.get(epoch)
      if p is None:
        if self.n < 2 ** 31:
          # = epoch_permutation (Generator.shuffle draws the same swaps
          # for any dtype) at 4 bytes per example, without an int64 copy
          p = np.arange(self.n, dtype=np.int32)
          np.random.default_rng([self.seed, int(epoch)]).shuffle(p)
        else:
          p = epoch_permutation(self.n, self.seed, epoch)
        self._cache = {e: v for e, v in self._cache.items() if e >= epoch - 1}
        self._cache[epoch] = p
      return p


def read_records(source, idx, bad_records: str = "error") -> dict:
  """The batch of records ``idx`` (bad-record policy applied)."""
  fast = getattr(source, "read_batch", None)
  if fast is not None:
    return fast(np.asarray(idx))
  n = len(source)
  recs, bad = [], []
  for i in np.asarray(idx).tolist():
    j = i
    for _ in range(MAX_CONSECUTIVE_BAD):
      try:
        recs.append(source[j])
        break
      except DataError as e:
        err = e
      except Exception as e:  # pylint: disable=broad-except
        err = e             # PIL, array_record, codec errors, ...
      where = describe(source, j)
      if bad_records == "error":
        raise DataError(
            f"bad record {where}: {type(err).__name__}: {err} (set "
            "data.bad_records='skip' to skip such records with a warning)"
        ) from err
      bad.append(f"{where}: {type(err).__name__}: {err}")
      j = (j + 1) % n
    else:
      raise DataError(f"{MAX_CONSECUTIVE_BAD} consecutive bad records from "
                      f"{describe(source, i)} on; last: {bad[-1]}")
  batch = stack(recs, describe(source, idx[0]))
  if bad:
    batch[BAD_KEY] = bad
  return batch


def _worker_init(_index: int, _count: int):
  """In each input worker: leave SIGINT/SIGTERM to the trainer (it saves and
  then closes us), and die with the trainer (kill -9 leaves no orphans)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


class HostBatches(grain.MapDataset):
  """Element ``t`` = this process's share of the global batch at step ``t``
  (``len`` = total steps; ``[start:]`` resumes)."""

  def __init__(self, source, batch_size: int, seed: int, total_steps: int,
               sl: slice, bad_records: str):
    super().__init__()
    self._source, self._bs, self._sl = source, batch_size, sl
    self._total, self._bad = total_steps, bad_records
    self._n = len(source)
    self._spe = steps_per_epoch(self._n, batch_size)
    self._perms = _PermCache(self._n, seed)

  def __len__(self):
    return self._total

  def __str__(self):
    return f"HostBatches(n={self._n}, batch={self._bs}, host={self._sl})"

  def global_indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(int(step), self._spe)
    return self._perms.get(epoch)[pos * self._bs:(pos + 1) * self._bs]

  def indices(self, step: int) -> np.ndarray:
    return self.global_indices(step)[self._sl]

  def __getitem__(self, step):
    if isinstance(step, slice):
      return self.slice(step)
    return read_records(self._source, self.indices(step), self._bad)


class BatchLoader:
  """``BatchLoader(source, batch_size, seed, total_steps)``; ``iterate(start)``
  yields this process's host batches of steps ``start, start + 1, ...``."""

  def __init__(self, source, batch_size: int, seed: int, total_steps: int,
               process_index: int = 0, process_count: int = 1,
               options: LoaderOptions | None = None):
    self.source = as_source(source)
    self.options = options or LoaderOptions()
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.sl = host_slice(self.batch_size, process_index, process_count)
    self.steps = HostBatches(self.source, self.batch_size, self.seed,
                               int(total_steps), self.sl,
                               self.options.bad_records)
    self.skipped = 0

  def __len__(self):
    return len(self.steps)

  def host_indices(self, step: int) -> np.ndarray:
    return self.steps.indices(step)

  def global_batch(self, step: int) -> dict:
    """The whole global batch of ``step`` (every process: init shapes)."""
    batch = read_records(self.source, self.steps.global_indices(step),
                         self.options.bad_records)
    batch.pop(BAD_KEY, None)
    return batch

  def iterate(self, start: int = 0) -> "_Iterator":
    o = self.options
    ds = self.steps[int(start):]
    workers = 0 if is_in_memory(self.source) else max(0, o.workers)
    read = grain.ReadOptions(num_threads=max(0, min(o.threads, o.prefetch)),
                             prefetch_buffer_size=max(0, o.prefetch))
    it_ds = ds.to_iter_dataset(read)
    if workers:
      from absl import flags  # pylint: disable=import-outside-toplevel
      if not flags.FLAGS.is_parsed():  # grain reads absl flags (library use)
        flags.FLAGS.mark_as_parsed()
      it_ds = it_ds.mp_prefetch(
          grain.MultiprocessingOptions(
              num_workers=workers,
              per_worker_buffer_size=max(1, o.prefetch)),
          worker_init_fn=_worker_init)
    return _Iterator(self, iter(it_ds), int(start), workers)


class _Iterator:
  """Host batches with the bad-record reports taken out (and counted)."""

  def __init__(self, loader: BatchLoader, it, start: int, workers: int):
    self._loader, self._it, self.step, self.workers = loader, it, start, workers
    self.skipped: list[str] = []

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    try:
      batch = next(self._it)
    except StopIteration:
      raise
    except RuntimeError as e:
      if "terminated unexpectedly" in str(e):
        raise InputWorkerError(
            f"an input worker process died while preparing the batch of "
            f"step {self.step} ({e}); data.workers={self.workers}. Out of "
            "memory? Lower data.workers or data.prefetch, or set "
            "data.workers=0 to decode in threads") from e
      raise
    bad = batch.pop(BAD_KEY, None)
    if bad:
      self.skipped.extend(bad)
      self._loader.skipped += len(bad)
    self.step += 1
    return batch

  def take_skipped(self) -> list[str]:
    out, self.skipped = self.skipped, []
    return out

  def close(self):
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def rss_bytes() -> int:
  """Peak resident set size of this process (bytes; Linux ru_maxrss)."""
  import resource  # pylint: disable=import-outside-toplevel
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_count() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1
