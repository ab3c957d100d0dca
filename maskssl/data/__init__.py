"""Data-source registry: ``config.data.name`` -> module with ``load_split``.

Each module exposes ``load_split(data_config, split) -> ArrayDataset`` for
``split`` in {"pretrain", "train", "val", "test"} (a module may not have all).
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
}


def load_split(data_config, split: str) -> ArrayDataset:
  name = data_config.name
  if name not in _REGISTRY:
    raise DataError(f"Unknown data set {name!r}; known: {sorted(_REGISTRY)}")
  module = importlib.import_module(_REGISTRY[name])
  ds = module.load_split(data_config, split)
  if len(ds) == 0:
    raise DataError(f"data set {name!r} split {split!r} is empty")
  return ds
