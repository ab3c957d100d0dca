"""Tabular (particle-physics) data: the embedded HIGGS sample, user CSVs and
TFDS ``higgs``, as one token per scalar feature.

Splits (deterministic in ``data.split_seed``):
  * ``test`` / ``val``: held out (``test_size`` / ``val_size`` rows);
  * ``pretrain``: every other row, labels unused (self-supervised), plus
    the rows of ``pretrain_extra``: ``"embedded"`` (14,988 more real HIGGS
    rows shipped with the package) or comma-separated CSV/CSV.gz paths in
    the same layout; extra rows equal to a held-out row are dropped;
  * ``train``: the labelled pool, the first ``train_pool_size`` rows of the
    pretraining rows in a seeded order; fine-tuning with N labels takes the
    first N of it.
``test_path``: a separate labelled CSV that replaces the held-out test rows
(which then join the pretraining split); users evaluate on their own data so.
Features are z-scored with per-feature statistics of the pretraining split
(``feature_norm="zscore"``, spec §4) or left as published (``"none"``).
Each example: ``x (28, 1) float32``, ``valid (28,) bool`` (all True),
``label int32``.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import os
import sys

import ml_collections
import numpy as np

from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import config_dict, parse_config, split_indices

NUM_FEATURES = 28
HIGGS_COLUMNS = (
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude",
    "missing_energy_phi", "jet_1_pt", "jet_1_eta", "jet_1_phi", "jet_1_btag",
    "jet_2_pt", "jet_2_eta", "jet_2_phi", "jet_2_btag", "jet_3_pt",
    "jet_3_eta", "jet_3_phi", "jet_3_btag", "jet_4_pt", "jet_4_eta",
    "jet_4_phi", "jet_4_btag", "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb",
    "m_wbb", "m_wwbb")


@dataclasses.dataclass(frozen=True)
class HiggsConfig(DataConfig):
  """``config.data`` of ``higgs`` (fields as in the module doc; also read
  by the file-backed source in :mod:`maskssl.data.streams`)."""
  name: str = "higgs"
  source: str = "embedded"   # "embedded" | "tfds" (without a path)
  path: str = ""             # CSV / CSV.gz or a converted directory
  tfds_data_dir: str = ""
  max_rows: int = 0          # read at most this many rows (0: all)
  split_seed: int = 0
  test_size: int = 1500
  val_size: int = 1000
  train_pool_size: int = 1500
  feature_norm: str = "zscore"   # "zscore" | "none"
  label_column: str = "last"     # "last" | "first" | "none"
  pretrain_extra: str = ""   # "embedded" and/or CSV paths, comma-separated
  test_path: str = ""


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(HiggsConfig, overrides))


# ---------------------------------------------------------------- readers --
def _embedded(name: str = "higgs_sample") -> tuple[np.ndarray, np.ndarray]:
  ref = importlib.resources.files("maskssl") / f"resources/{name}.npz"
  with importlib.resources.as_file(ref) as p, np.load(p) as z:
    return z["features"].astype(np.float32), z["label"].astype(np.int32)


def read_csv(path: str, num_features: int = NUM_FEATURES,
             label_column: str = "last", max_rows: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
  """Read ``num_features`` numeric features + a 0/1 label per row.

  ``label_column`` is "last" (HIGGS sample layout), "first" (UCI
  HIGGS.csv layout) or "none" (features only; labels come back as -1). A header row is skipped if its cells are not numbers.
  Errors name the file and the 1-based line.
  """
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file (data.path)")
  if label_column not in ("last", "first", "none"):
    raise DataError(f"data.label_column must be 'last', 'first' or 'none', "
                    f"got {label_column!r}")
  want = num_features + (label_column != "none")
  rows = []
  opener = open
  if path.endswith(".gz"):
    import gzip
    opener = gzip.open
  with opener(path, "rt", newline="") as f:
    for lineno, cells in enumerate(csv.reader(f), start=1):
      if not cells or all(not c.strip() for c in cells):
        continue
      if len(cells) != want:
        raise DataError(
            f"{path}:{lineno}: expected {want} comma-separated columns "
            f"({num_features} features"
            f"{'' if label_column == 'none' else ' + label'}), found "
            f"{len(cells)}")
      try:
        vals = [float(c) for c in cells]
      except ValueError:
        if lineno == 1 and not rows:
          continue  # header
        bad = next(c for c in cells if not _is_float(c))
        raise DataError(f"{path}:{lineno}: non-numeric cell {bad!r}") from None
      rows.append(vals)
      if max_rows and len(rows) >= max_rows:
        break
  if not rows:
    raise DataError(f"{path}: no data rows")
  a = np.asarray(rows, np.float64)
  if not np.isfinite(a).all():
    r, c = np.argwhere(~np.isfinite(a))[0]
    raise DataError(f"{path}: non-finite value in data row {r + 1}, "
                    f"column {c + 1}")
  if label_column == "none":
    return a.astype(np.float32), np.full(len(a), -1, np.int32)
  if label_column == "last":
    x, y = a[:, :-1], a[:, -1]
  else:
    x, y = a[:, 1:], a[:, 0]
  if not np.isin(y, (0.0, 1.0)).all():
    r = int(np.argmax(~np.isin(y, (0.0, 1.0))))
    raise DataError(f"{path}: label of data row {r + 1} is {y[r]:g}, not 0/1 "
                    f"(data.label_column={label_column!r})")
  return x.astype(np.float32), y.astype(np.int32)


def _is_float(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _tfds(tfds_data_dir: str, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:  # pragma: no cover - core dependency
    raise DataError("data.source='tfds' needs tensorflow-datasets") from e
  try:
    src = tfds.data_source("higgs", split="train",
                           data_dir=tfds_data_dir or None,
                           download=False)
  except Exception as e:
    raise DataError(
        "TFDS 'higgs' is not prepared locally in array_record format "
        f"({type(e).__name__}: {str(e)[:200]}). Prepare it once with "
        "`tfds build higgs --file_format=array_record` (needs the [tf] "
        "extra and network), or pass --config.data.path=HIGGS.csv") from e
  n = len(src) if not max_rows else min(len(src), int(max_rows))
  x = np.empty((n, NUM_FEATURES), np.float32)
  y = np.empty((n,), np.int32)
  chunk = 65536
  for s in range(0, n, chunk):
    recs = src.__getitems__(list(range(s, min(n, s + chunk))))
    for i, r in enumerate(recs):
      x[s + i] = [r[c] for c in HIGGS_COLUMNS]
      y[s + i] = int(r["class_label"])
  return x, y


@functools.lru_cache(maxsize=8)
def _load_all(source: str, path: str, label_column: str, max_rows: int,
              tfds_data_dir: str):
  if path:
    return read_csv(path, label_column=label_column, max_rows=max_rows)
  if source == "embedded":
    x, y = _embedded()
    return (x[:max_rows], y[:max_rows]) if max_rows else (x, y)
  if source == "tfds":
    return _tfds(tfds_data_dir, max_rows)
  raise DataError(f"data.source must be 'embedded' or 'tfds' (or set "
                  f"data.path), got {source!r}")


def held_parts(cfg: HiggsConfig, n: int, own_test: bool = True
               ) -> dict[str, np.ndarray]:
  """The held-out ``val`` (and ``test`` unless ``own_test`` is False) row
  indices of an ``n``-row table (also used by the file-backed source)."""
  test = int(cfg.test_size) if own_test else 0
  val = int(cfg.val_size)
  if test + val >= n:
    raise DataError(f"data set has {n} rows, too few for test_size={test} + "
                    f"val_size={val} and a pretraining split")
  parts = split_indices(n, dict(test=test / n, val=val / n),
                        cfg.split_seed)
  if not own_test:
    parts.pop("test", None)
  return parts


def train_rows(cfg: HiggsConfig, n: int, held: np.ndarray) -> np.ndarray:
  """The labelled pool: the first ``train_pool_size`` pretraining rows (all
  rows not in ``held``) in a seeded order."""
  keep = np.ones(n, bool)
  keep[held] = False
  pretrain = np.flatnonzero(keep)
  order = np.random.default_rng([int(cfg.split_seed), 1]).permutation(
      len(pretrain))
  return pretrain[order[:min(int(cfg.train_pool_size), len(pretrain))]]


def _splits(cfg, n: int, own_test: bool = True) -> dict[str, np.ndarray]:
  cfg = parse_config(HiggsConfig, cfg)
  parts = held_parts(cfg, n, own_test)
  held = np.concatenate([parts["val"], parts.get("test", [])]).astype(int)
  keep = np.ones(n, bool)
  keep[held] = False
  parts["pretrain"] = np.flatnonzero(keep)
  parts["train"] = train_rows(cfg, n, held)
  return parts


@functools.lru_cache(maxsize=8)
def _extra_rows(spec: str, label_column: str) -> np.ndarray:
  """Features of the ``pretrain_extra`` rows (labels are not used)."""
  parts = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    if item == "embedded":
      parts.append(_embedded("higgs_extra")[0])
    else:
      parts.append(read_csv(item, label_column=label_column)[0])
  return (np.concatenate(parts) if parts
          else np.zeros((0, NUM_FEATURES), np.float32))


def _drop_rows_in(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
  seen = {r.tobytes() for r in np.ascontiguousarray(ref)}
  keep = np.array([r.tobytes() not in seen for r in np.ascontiguousarray(x)],
                  bool)
  return x[keep]


def load_split(data_config, split: str) -> ArrayDataset:
  cfg = parse_config(HiggsConfig, data_config)
  label_column = cfg.label_column
  x, y = _load_all(cfg.source, cfg.path, label_column, int(cfg.max_rows),
                   cfg.tfds_data_dir)
  if x.shape[1] != NUM_FEATURES:
    raise DataError(f"expected {NUM_FEATURES} features, got {x.shape[1]}")
  test_path = cfg.test_path
  parts = _splits(cfg, len(x), own_test=not test_path)
  if split not in parts and not (split == "test" and test_path):
    raise DataError(f"unknown split {split!r}; use {sorted(parts)}")
  if test_path:
    tx, ty = _load_all("", test_path, label_column, 0, "")
    if tx.shape[1] != NUM_FEATURES:
      raise DataError(f"{test_path}: expected {NUM_FEATURES} features, got "
                      f"{tx.shape[1]}")
  held_x = x[np.concatenate([parts["val"], parts.get("test", [])]).astype(int)]
  if test_path:
    held_x = np.concatenate([held_x, tx])
    overlap = len(tx) - len(_drop_rows_in(tx, x))
    if overlap and split == "test":
      print(f"warning: {overlap} rows of data.test_path={test_path} also "
            "appear in data.path (they are not excluded from training)",
            file=sys.stderr)
  pre_x = x[parts["pretrain"]]
  extra = _extra_rows(cfg.pretrain_extra or "", label_column)
  n_extra = 0
  if len(extra):
    extra = _drop_rows_in(extra, held_x)
    n_extra = len(extra)
    pre_x = np.concatenate([pre_x, extra])
  if split == "pretrain":
    feats, labels = pre_x, np.full(len(pre_x), -1, np.int32)
    labels[:len(parts["pretrain"])] = y[parts["pretrain"]]
  elif split == "test" and test_path:
    feats, labels = tx, ty
  else:
    feats, labels = x[parts[split]], y[parts[split]]
  meta = dict(task="binary", num_classes=2, num_features=NUM_FEATURES,
              input_kind="continuous", columns=HIGGS_COLUMNS,
              pretrain_rows=len(pre_x), pretrain_extra_rows=n_extra)
  norm = cfg.feature_norm
  if norm == "zscore":
    # float64 statistics: float32 sums over ~20k rows are off by ~1e-4.
    ref64 = pre_x.astype(np.float64)
    mean, std = ref64.mean(0), ref64.std(0)
    std = np.where(std > 0, std, 1.0)
    feats = (feats - mean) / std
    meta.update(feature_mean=mean.tolist(), feature_std=std.tolist())
  elif norm != "none":
    raise DataError(f"data.feature_norm must be 'zscore' or 'none', got "
                    f"{norm!r}")
  arrays = dict(x=feats.astype(np.float32)[..., None],
                valid=np.ones(feats.shape, bool),
                label=labels.astype(np.int32))
  return ArrayDataset(arrays, meta)
