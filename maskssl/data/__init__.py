"""Data-source registry: ``config.data.name`` -> module with ``load_split``.

Each module exposes ``load_split(data_config, split) -> ArrayDataset`` for
``split`` in {"pretrain", "train", "val", "test"} (a module may not have all).
Modules that can read a split from files without loading it (folders, tars,
ArrayRecord, TFDS ``data_source``, big CSV / SMILES / FASTA files) also
expose ``load_source(data_config, split)`` -> a random-access source for the
grain loader (:mod:`maskssl.data.grain_source`), or None when the split is
small enough to load (:func:`load_source` then falls back to ``load_split``).
"""
from __future__ import annotations

import importlib

from maskssl.data.base import ArrayDataset, DataError  # noqa: F401

_REGISTRY = {
    "higgs": "maskssl.data.tabular",
    "cifar10": "maskssl.data.cifar",
    "pcam": "maskssl.data.pcam",
    "moleculenet": "maskssl.data.molecules",
    "proteins": "maskssl.data.proteins",
    "cifar10_pixels": "maskssl.data.pixels",
    "imagenet2012": "maskssl.data.imagenet",
}
# file-backed readers kept beside the in-memory modules
_STREAMS = {"higgs", "moleculenet", "proteins"}


def _module(data_config):
  name = data_config.name
  if name not in _REGISTRY:
    raise DataError(f"Unknown data set {name!r}; known: {sorted(_REGISTRY)}")
  return importlib.import_module(_REGISTRY[name])


def _check(ds, name, split):
  if len(ds) == 0:
    raise DataError(f"data set {name!r} split {split!r} is empty")
  return ds


def load_split(data_config, split: str) -> ArrayDataset:
  module = _module(data_config)
  ds = None
  if data_config.name in _STREAMS:
    from maskssl.data import streams  # pylint: disable=import-outside-toplevel
    ds = streams.load_split(data_config, split)
  if ds is None:
    ds = module.load_split(data_config, split)
  return _check(ds, data_config.name, split)


def load_source(data_config, split: str):
  """``split`` for training: a file-backed source when the module has one
  for this config, else the in-memory :class:`ArrayDataset`."""
  module = _module(data_config)
  src = None
  if data_config.name in _STREAMS:
    from maskssl.data import streams  # pylint: disable=import-outside-toplevel
    src = streams.load_source(data_config, split)
  elif hasattr(module, "load_source"):
    src = module.load_source(data_config, split)
  if src is None:
    return load_split(data_config, split)
  return _check(src, data_config.name, split)
