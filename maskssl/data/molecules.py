"""MoleculeNet (BBBP, ESOL, FreeSolv) as SMILES bytes for SMA (name
``"moleculenet"``).

Tokens are the byte tokenizer's ids (:mod:`maskssl.data.tokenizer`, 262
ids). Splits:

* ``pretrain``: unlabelled rows of SMILES **packed** with ``SEP`` into rows
  of ``data.max_len`` tokens (``data.pack``; the reference's
  ``merge_method=sep``). Source: ``data.path`` (a user file: one SMILES per
  line -- the first whitespace-separated field is used -- or a CSV with a
  ``smiles`` column) or, by default, the SMILES of the three embedded
  MoleculeNet CSVs minus the val/test molecules of ``data.task``
  (``data.pretrain_exclude_eval``, so no evaluated molecule is seen).
* ``train`` / ``val`` / ``test``: one SMILES per row (truncated to
  ``max_len - 1`` bytes + SEP), labels of ``data.task`` in {bbbp, esol,
  freesolv}, Bemis–Murcko scaffold split 80/10/10 (deterministic,
  :mod:`maskssl.data.scaffold`; ``data.scaffold_backend`` auto|rdkit|python).

SMILES whose scaffold cannot be computed (RDKit parse failures such as the
BBBP valence errors) are counted, reported once on stdout and in
``meta["skipped_smiles"]``, and skipped -- never a crash. Labels:
``bbbp`` -> int32 0/1, meta task ``"binary_mse"`` (the reference's MSE on
one logit, ``data.cls_loss="mse_quirk"``) or ``"binary"``
(``cls_loss="bce"``); ``esol``/``freesolv`` -> float32 targets in the
published units, meta task ``"regression"`` (scores: RMSE).

The CSVs ship in ``maskssl/resources/moleculenet_*.csv``; ``data.data_dir``
reads ``<dir>/{bbbp,esol,freesolv}.csv`` instead.
"""
from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import os
import sys

import ml_collections
import numpy as np

from maskssl.data import scaffold as scaffold_lib
from maskssl.data import tokenizer
from maskssl.data.base import ArrayDataset, DataError
from maskssl.config_utils import cfg_get

TASKS = {
    # name: (file stem, label column, kind)
    "bbbp": ("bbbp", "p_np", "binary"),
    "esol": ("esol", "measured log solubility in mols per litre",
             "regression"),
    "freesolv": ("freesolv", "expt", "regression"),
}
SPLITS = ("pretrain", "train", "val", "test")


def default_config(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      name="moleculenet", task="bbbp", data_dir="", path="", max_len=128,
      pack=True, pretrain_exclude_eval=True, scaffold_backend="auto",
      frac_train=0.8, frac_val=0.1, cls_loss="mse_quirk", max_pretrain=0))
  cfg.update(overrides)
  return cfg


_get = cfg_get


# ---------------------------------------------------------------- readers --
def _task_text(stem: str, data_dir: str) -> tuple[str, str]:
  if data_dir:
    path = os.path.join(data_dir, f"{stem}.csv")
    if not os.path.exists(path):
      raise DataError(f"{path}: no such file (data.data_dir)")
    with open(path, encoding="utf-8") as f:
      return f.read(), path
  ref = importlib.resources.files("maskssl") / f"resources/moleculenet_{stem}.csv"
  return ref.read_text(encoding="utf-8"), f"<embedded moleculenet_{stem}.csv>"


def read_labelled_csv(text: str, name: str, label_column: str
                      ) -> tuple[list[str], np.ndarray]:
  """SMILES and float labels from a CSV with a ``smiles`` column."""
  reader = csv.reader(io.StringIO(text))
  header = next(reader, None)
  if not header:
    raise DataError(f"{name}: empty CSV")
  cols = [h.strip() for h in header]
  lower = [c.lower() for c in cols]
  if "smiles" not in lower:
    raise DataError(f"{name}:1: no 'smiles' column in header {cols}")
  if label_column.lower() not in lower:
    raise DataError(f"{name}:1: no {label_column!r} column in header {cols}")
  si, li = lower.index("smiles"), lower.index(label_column.lower())
  smiles, labels = [], []
  for lineno, row in enumerate(reader, start=2):
    if not row or all(not c.strip() for c in row):
      continue
    if len(row) <= max(si, li):
      raise DataError(f"{name}:{lineno}: expected {len(cols)} columns, found "
                      f"{len(row)}")
    try:
      y = float(row[li])
    except ValueError:
      raise DataError(f"{name}:{lineno}: label {row[li]!r} is not a number"
                      ) from None
    smiles.append(row[si].strip())
    labels.append(y)
  if not smiles:
    raise DataError(f"{name}: no data rows")
  return smiles, np.asarray(labels, np.float64)


def read_smiles_file(path: str) -> list[str]:
  """User pretraining SMILES: one per line (first field), or a CSV whose
  header has a ``smiles`` column. Blank lines and ``#`` comments are
  skipped."""
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file (data.path)")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  lines = text.splitlines()
  first = next((l for l in lines if l.strip()), "")
  if "," in first and "smiles" in [c.strip().lower() for c in
                                   next(csv.reader([first]))]:
    cols = [c.strip().lower() for c in next(csv.reader([first]))]
    si = cols.index("smiles")
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
      if lineno == 1 or not row or all(not c.strip() for c in row):
        continue
      if len(row) <= si:
        raise DataError(f"{path}:{lineno}: no smiles column value")
      if row[si].strip():
        out.append(row[si].strip())
  else:
    out = [l.split()[0] for l in lines
           if l.strip() and not l.lstrip().startswith("#")]
  if not out:
    raise DataError(f"{path}: no SMILES found")
  return out


@functools.lru_cache(maxsize=16)
def _labelled(task: str, data_dir: str, backend: str):
  """(smiles, labels, scaffolds, skipped) of one task, unparsable dropped."""
  if task not in TASKS:
    raise DataError(f"data.task must be one of {sorted(TASKS)}, got {task!r}")
  stem, col, _ = TASKS[task]
  text, name = _task_text(stem, data_dir)
  smiles, labels = read_labelled_csv(text, name, col)
  try:
    backend = scaffold_lib.resolve_backend(backend)
  except (ImportError, ValueError) as e:
    raise DataError(str(e)) from e
  keep, scafs, skipped = [], [], []
  for i, s in enumerate(smiles):
    sc = scaffold_lib.scaffold(s, backend)
    if sc is None:
      skipped.append(s)
    else:
      keep.append(i)
      scafs.append(sc)
  if skipped:
    print(f"[moleculenet] {name}: skipped {len(skipped)} of {len(smiles)} "
          f"SMILES that the {backend} scaffold back end cannot parse "
          f"(first: {skipped[0]!r})", file=sys.stderr, flush=True)
  return ([smiles[i] for i in keep], labels[keep], tuple(scafs),
          tuple(skipped), backend)


def _split_idx(cfg):
  task = _get(cfg, "task", "bbbp")
  smiles, labels, scafs, skipped, backend = _labelled(
      task, _get(cfg, "data_dir", ""), _get(cfg, "scaffold_backend", "auto"))
  parts = scaffold_lib.scaffold_split(scafs, float(_get(cfg, "frac_train", 0.8)),
                                      float(_get(cfg, "frac_val", 0.1)))
  return smiles, labels, parts, skipped, backend


def _pretrain_smiles(cfg) -> list[str]:
  path = _get(cfg, "path", "")
  if path:
    return read_smiles_file(path)
  data_dir = _get(cfg, "data_dir", "")
  exclude = set()
  if _get(cfg, "pretrain_exclude_eval", True):
    smiles, _, parts, _, _ = _split_idx(cfg)
    exclude = {smiles[i] for s in ("val", "test") for i in parts[s]}
  out = []
  for task in TASKS:
    stem, col, _ = TASKS[task]
    text, name = _task_text(stem, data_dir)
    out += [s for s in read_labelled_csv(text, name, col)[0]
            if s not in exclude]
  return out


def load_split(cfg, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  max_len = int(_get(cfg, "max_len", 128))
  task = _get(cfg, "task", "bbbp")
  meta = dict(input_kind="bytes", vocab_size=tokenizer.VOCAB_SIZE,
              max_len=max_len, task_name=task)
  if split == "pretrain":
    smiles = _pretrain_smiles(cfg)
    if _get(cfg, "pack", True):
      tokens, valid = tokenizer.pack(smiles, max_len)
    else:
      tokens, valid = tokenizer.encode(smiles, max_len)
    limit = int(_get(cfg, "max_pretrain", 0) or 0)
    if limit:
      tokens, valid = tokens[:limit], valid[:limit]
    meta.update(num_smiles=len(smiles), packed=bool(_get(cfg, "pack", True)))
    return ArrayDataset(dict(tokens=tokens, valid=valid), meta)
  smiles, labels, parts, skipped, backend = _split_idx(cfg)
  idx = parts[split]
  if split == "train":   # a seeded order: "first N labels" is not biased
    idx = idx[np.random.default_rng(0).permutation(len(idx))]
  tokens, valid = tokenizer.encode([smiles[i] for i in idx], max_len)
  kind = TASKS[task][2]
  if kind == "binary":
    loss = _get(cfg, "cls_loss", "mse_quirk")
    if loss not in ("mse_quirk", "bce"):
      raise DataError(f"data.cls_loss must be 'mse_quirk' or 'bce', got "
                      f"{loss!r}")
    label = labels[idx].astype(np.int32)
    meta.update(task="binary_mse" if loss == "mse_quirk" else "binary",
                num_classes=2)
  else:
    label = labels[idx].astype(np.float32)
    meta.update(task="regression", num_classes=1)
  meta.update(skipped_smiles=len(skipped), scaffold_backend=backend,
              split_sizes={k: int(len(v)) for k, v in parts.items()})
  return ArrayDataset(dict(tokens=tokens, valid=valid, label=label), meta)


def read_smiles_records(path: str, label_column: str = ""
                        ) -> tuple[list[str], np.ndarray | None, str | None]:
  """Every molecule of a user file, in order, for embedding:
  ``(smiles, labels float64 or None, label column name or None)``.

  A CSV whose header has a ``smiles`` column (MoleculeNet layout): the label
  is ``label_column`` if given, else the first of the known task columns
  (``p_np``, ESOL's, ``expt``) or ``label``/``y``/``target`` present; an
  empty label cell is NaN. Otherwise one SMILES per line (first
  whitespace-separated field; blank and ``#`` lines skipped), no labels.
  An empty SMILES cell or a non-numeric label is a :class:`DataError`
  naming the file and line.
  """
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  try:
    with open(path, encoding="utf-8", newline="") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  first = next((l for l in text.splitlines() if l.strip()), "")
  cols = [c.strip() for c in next(csv.reader([first]))] if first else []
  lower = [c.lower() for c in cols]
  if "smiles" not in lower:
    if label_column:
      raise DataError(f"{path}:1: label column {label_column!r} needs a CSV "
                      "with a 'smiles' header column")
    return read_smiles_file(path), None, None
  si = lower.index("smiles")
  cands = ([label_column] if label_column else
           [c for _, c, _ in TASKS.values()] + ["label", "y", "target"])
  li = next((lower.index(c.lower()) for c in cands if c.lower() in lower),
            None)
  if label_column and li is None:
    raise DataError(f"{path}:1: no {label_column!r} column in header {cols}")
  smiles, labels = [], []
  header = True
  for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
    if not row or all(not c.strip() for c in row):
      continue
    if header:  # the first non-blank row
      header = False
      continue
    if len(row) <= max(si, li or 0):
      raise DataError(f"{path}:{lineno}: expected {len(cols)} columns, found "
                      f"{len(row)}")
    s = row[si].strip()
    if not s:
      raise DataError(f"{path}:{lineno}: empty SMILES cell")
    smiles.append(s)
    if li is not None:
      cell = row[li].strip()
      try:
        labels.append(float(cell) if cell else float("nan"))
      except ValueError:
        raise DataError(f"{path}:{lineno}: label {cell!r} (column "
                        f"{cols[li]!r}) is not a number") from None
  if not smiles:
    raise DataError(f"{path}: no data rows")
  if li is None:
    return smiles, None, None
  return smiles, np.asarray(labels, np.float64), cols[li]
