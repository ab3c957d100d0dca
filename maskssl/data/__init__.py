"""Data-source registry: ``config.data.name`` -> module with ``load_split``.

Each module exposes ``load_split(data_config, split) -> ArrayDataset`` for
``split`` in {"pretrain", "train", "val", "test"} (a module may not have all).
Modules that can read a split from files without loading it (folders, tars,
ArrayRecord, TFDS ``data_source``, big CSV / SMILES / FASTA files) also
expose ``load_source(data_config, split)`` -> a random-access source for the
grain loader (:mod:`maskssl.data.grain_source`), or None when the split is
small enough to load (:func:`load_source` then falls back to ``load_split``).

Each data set's ``config.data`` fields are a frozen dataclass in its module
(a :class:`~maskssl.data.base.DataConfig`: the loader fields, ``name``,
``pretrain_split`` and the module's own); :func:`data_schema` builds it
once, so a misspelled key is a ConfigError before any data is read.
"""
from __future__ import annotations

import dataclasses
import importlib

from maskssl.data.base import ArrayDataset, DataConfig, DataError  # noqa: F401
from maskssl.data.base import parse_config

_REGISTRY = {
    "higgs": "maskssl.data.tabular:HiggsConfig",
    "cifar10": "maskssl.data.cifar:Cifar10Config",
    "pcam": "maskssl.data.pcam:PCamConfig",
    "moleculenet": "maskssl.data.molecules:MoleculeNetConfig",
    "proteins": "maskssl.data.proteins:ProteinsConfig",
    "cifar10_pixels": "maskssl.data.pixels:PixelsConfig",
    "imagenet2012": "maskssl.data.imagenet:ImageNetConfig",
}
# file-backed readers kept beside the in-memory modules
_STREAMS = {"higgs", "moleculenet", "proteins"}


def _entry(name):
  if name not in _REGISTRY:
    raise DataError(f"Unknown data set {name!r}; known: {sorted(_REGISTRY)}")
  module, cls = _REGISTRY[name].split(":")
  module = importlib.import_module(module)
  return module, getattr(module, cls)


def data_schema(data_config, overrides=None,
                component: str = "config.data") -> DataConfig:
  """``data_config`` (+ ``overrides``, e.g. an evaluator's
  ``data_overrides``) as its data set's frozen schema. An unknown key is a
  ConfigError naming the key, ``component``, the data set and the allowed
  keys (with the closest one)."""
  if isinstance(data_config, DataConfig):
    if not overrides:
      return data_config
    data_config = dataclasses.asdict(data_config)
  kw = dict(data_config or {})
  kw.update(dict(overrides or {}))
  _, cls = _entry(kw.get("name"))
  return parse_config(cls, kw, f"{component} (data set {cls.name!r})")


def _check(ds, name, split):
  if len(ds) == 0:
    raise DataError(f"data set {name!r} split {split!r} is empty")
  return ds


def load_split(data_config, split: str) -> ArrayDataset:
  cfg = data_schema(data_config)
  module, _ = _entry(cfg.name)
  ds = None
  if cfg.name in _STREAMS:
    from maskssl.data import streams  # pylint: disable=import-outside-toplevel
    ds = streams.load_split(cfg, split)
  if ds is None:
    ds = module.load_split(cfg, split)
  return _check(ds, cfg.name, split)


def load_source(data_config, split: str):
  """``split`` for training: a file-backed source when the module has one
  for this config, else the in-memory :class:`ArrayDataset`."""
  cfg = data_schema(data_config)
  module, _ = _entry(cfg.name)
  src = None
  if cfg.name in _STREAMS:
    from maskssl.data import streams  # pylint: disable=import-outside-toplevel
    src = streams.load_source(cfg, split)
  elif hasattr(module, "load_source"):
    src = module.load_source(cfg, split)
  if src is None:
    return load_split(cfg, split)
  return _check(src, cfg.name, split)


def check_data_config(config) -> DataConfig:
  """The schema of ``config.data``, after checking it and every
  evaluator's ``data_overrides`` (``config.evals.<name>.data_overrides``):
  a misspelled data key fails before any compute."""
  schema = data_schema(config.data)
  for name, ecfg in (config.get("evals", None) or {}).items():
    overrides = ecfg.get("data_overrides", None)
    if overrides:
      data_schema(config.data, overrides,
                  f"config.evals.{name}.data_overrides")
  return schema
