"""MoleculeNet and users' assay tables as SMILES bytes for SMA (name
``"moleculenet"``).

Tokens are the byte tokenizer's ids (:mod:`maskssl.data.tokenizer`, 262
ids). Splits:

* ``pretrain``: unlabelled SMILES **packed** with ``SEP`` into rows of
  ``data.max_len`` tokens (``data.pack``; the reference's
  ``merge_method=sep``). Source: ``data.corpus`` -- SMILES files (one per
  line, first field; ``.smi`` / ``.txt``) or CSVs (column
  ``data.corpus_column``, default the ``smiles`` column, any case), plain or
  ``.gz``, comma-separated, or directories converted from such files by
  ``python -m maskssl.data.convert`` (the same SMILES, read by record);
  ``data.corpus_max`` keeps a seeded sample of that many SMILES (MOSES has
  1.6 M) -- or, by default, the SMILES of the seven embedded MoleculeNet
  tables. Val/test molecules of ``data.exclude_eval_of``
  (default: ``data.task``) are removed from the corpus
  (``data.pretrain_exclude_eval``), so no evaluated molecule is seen.
* ``train`` / ``val`` / ``test``: one SMILES per row (truncated to
  ``max_len - 1`` bytes + SEP), Bemis–Murcko scaffold split 80/10/10
  (deterministic, :mod:`maskssl.data.scaffold`; ``data.scaffold_backend``
  auto|rdkit|python). ``data.test_path``: a separate labelled table of the
  same layout is the test split, and the scaffold split is train/val only.

Tasks (``data.task``): MoleculeNet ``bbbp``, ``bace`` (binary, ROC-AUC),
``clintox`` (2 tasks), ``tox21`` (12 tasks, missing labels), multi-task
binary scored as the mean ROC-AUC over tasks with the loss masked where a
label is missing, and ``esol``, ``freesolv``, ``lipo`` (regression, RMSE in
the published units). Binary labels: meta task ``"binary_mse"`` (the
reference's MSE on one logit, ``data.cls_loss="mse_quirk"``) or
``"binary"`` (``"bce"``); multi-task: ``"multilabel"`` (masked BCE).
``data.path`` reads the task's table from a user file instead of the
embedded one; with ``data.task="classification"`` or ``"regression"`` it is
the user's own assay table: ``data.smiles_column``, ``data.label_columns``
(comma-separated; several classification columns make a multi-task set).

Bad rows: SMILES whose scaffold cannot be computed (RDKit parse failures such
as the BBBP valence errors) are counted, the first few named with file and
line on stderr and in ``meta["skipped_smiles"]``, and skipped; a row whose
(single) label is empty is skipped and counted; a label cell that is neither
a number nor empty is an error naming file and line.

The CSVs ship in ``maskssl/resources/moleculenet_*.csv[.gz]``;
``data.data_dir`` reads ``<dir>/<task>.csv`` instead.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import io
import os
import sys

import ml_collections
import numpy as np

from maskssl.data import scaffold as scaffold_lib
from maskssl.data import tokenizer
from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import config_dict, parse_config

TOX21 = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER",
         "NR-ER-LBD", "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE",
         "SR-MMP", "SR-p53")
TASKS = {
    # name: (file stem, label columns, kind)
    "bbbp": ("bbbp", ("p_np",), "binary"),
    "bace": ("bace", ("Class",), "binary"),
    "clintox": ("clintox", ("FDA_APPROVED", "CT_TOX"), "multilabel"),
    "tox21": ("tox21", TOX21, "multilabel"),
    "esol": ("esol", ("measured log solubility in mols per litre",),
             "regression"),
    "freesolv": ("freesolv", ("expt",), "regression"),
    "lipo": ("lipo", ("lipo",), "regression"),
}
USER_TASKS = ("classification", "regression")
SPLITS = ("pretrain", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class MoleculeNetConfig(DataConfig):
  """``config.data`` of ``moleculenet`` (fields as in the module doc; the
  pretraining corpus fields are also read by :mod:`maskssl.data.streams`)."""
  name: str = "moleculenet"
  task: str = "bbbp"          # a TASKS name, or "classification" | "regression"
  data_dir: str = ""          # <dir>/<task>.csv instead of the embedded tables
  path: str = ""              # the task's (or the user's own) table
  test_path: str = ""         # a separate labelled test table
  smiles_column: str = "smiles"
  label_columns: str = ""     # comma-separated (own tables)
  corpus: str = ""            # pretraining SMILES files, comma-separated
  corpus_column: str = ""     # CSV column of the corpus (default: smiles)
  corpus_max: int = 0         # seeded sample of the corpus (0: all)
  exclude_eval_of: tuple = ()  # tasks whose val/test molecules are dropped
  max_len: int = 128
  pack: bool = True           # pretraining rows packed with SEP
  pretrain_exclude_eval: bool = True
  scaffold_backend: str = "auto"  # auto | rdkit | python
  frac_train: float = 0.8
  frac_val: float = 0.1
  cls_loss: str = "mse_quirk"  # binary tasks: "mse_quirk" | "bce"
  max_pretrain: int = 0       # first N pretraining rows (0: all)


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(MoleculeNetConfig, overrides))


# ---------------------------------------------------------------- readers --
def _read_text(path: str, what: str) -> str:
  """A UTF-8 text file, plain or ``.gz``; errors name the file."""
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file ({what})")
  try:
    if path.endswith(".gz"):
      import gzip
      with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()
    with open(path, encoding="utf-8", newline="") as f:
      return f.read()
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: cannot read ({e})") from None


def _task_text(stem: str, data_dir: str) -> tuple[str, str]:
  if data_dir:
    for ext in (".csv", ".csv.gz"):
      path = os.path.join(data_dir, stem + ext)
      if os.path.exists(path):
        return _read_text(path, "data.data_dir"), path
    raise DataError(f"{os.path.join(data_dir, stem)}.csv: no such file "
                    "(data.data_dir)")
  root = importlib.resources.files("maskssl") / "resources"
  for ext in (".csv", ".csv.gz"):
    ref = root / f"moleculenet_{stem}{ext}"
    if ref.is_file():
      data = ref.read_bytes()
      if ext.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
      return data.decode("utf-8"), f"<embedded moleculenet_{stem}{ext}>"
  raise DataError(f"no embedded MoleculeNet table {stem!r}")


def _column(cols: list[str], want: str, name: str) -> int:
  lower = [c.lower() for c in cols]
  if want.lower() not in lower:
    raise DataError(f"{name}:1: no {want!r} column in header {cols}")
  return lower.index(want.lower())


def label_cell(cell: str, where: str, column: str) -> float:
  """A label cell: a number, or NaN when empty (a missing label); anything
  else is an error naming ``where`` (file:line) and the column."""
  cell = cell.strip()
  try:
    return float(cell) if cell else float("nan")
  except ValueError:
    raise DataError(f"{where}: label {cell!r} (column {column!r}) is not a "
                    "number") from None


def read_table(text: str, name: str, label_columns, smiles_column="smiles"):
  """``(smiles, labels (N, T) float64 with NaN = empty cell, line numbers)``
  of a CSV with a SMILES column and ``label_columns`` (any case). A cell
  that is neither a number nor empty is an error naming file and line."""
  reader = csv.reader(io.StringIO(text))
  header = next(reader, None)
  if not header:
    raise DataError(f"{name}: empty CSV")
  cols = [h.strip() for h in header]
  si = _column(cols, smiles_column, name)
  lis = [_column(cols, c, name) for c in label_columns]
  smiles, labels, lines = [], [], []
  for lineno, row in enumerate(reader, start=2):
    if not row or all(not c.strip() for c in row):
      continue
    if len(row) <= max([si] + lis):
      raise DataError(f"{name}:{lineno}: expected {len(cols)} columns, found "
                      f"{len(row)}")
    ys = [label_cell(row[li], f"{name}:{lineno}", cols[li]) for li in lis]
    smiles.append(row[si].strip())
    labels.append(ys)
    lines.append(lineno)
  if not smiles:
    raise DataError(f"{name}: no data rows")
  return smiles, np.asarray(labels, np.float64).reshape(len(smiles), -1), lines


def read_labelled_csv(text: str, name: str, label_column: str
                      ) -> tuple[list[str], np.ndarray]:
  """SMILES and float labels of one column (empty cells are errors)."""
  smiles, y, lines = read_table(text, name, (label_column,))
  if np.isnan(y).any():
    raise DataError(f"{name}:{lines[int(np.argmax(np.isnan(y[:, 0])))]}: "
                    f"empty {label_column!r} label")
  return smiles, y[:, 0]


def read_smiles_file(path: str, column: str = "") -> list[str]:
  """Corpus SMILES: one per line (first field; blank lines and ``#``
  comments skipped), or a CSV whose header has ``column`` (default: a
  ``smiles`` column, any case). ``.gz`` files are read compressed. A
  directory converted by ``python -m maskssl.data.convert`` (``{"smiles"}``
  records, written by these rules) gives the SMILES of its file."""
  from maskssl.data import records  # pylint: disable=import-outside-toplevel
  if records.is_records_dir(path):
    from maskssl.data import streams  # pylint: disable=import-outside-toplevel
    corpus = streams.SmilesRecords(path, column, frozenset())
    if not len(corpus):
      raise DataError(f"{path}: no SMILES found")
    return corpus.all_smiles()
  text = _read_text(path, "data.corpus")
  first = next((l for l in text.splitlines() if l.strip()), "")
  cols = [c.strip() for c in next(csv.reader([first]))] if first else []
  want = column or "smiles"
  if want.lower() in [c.lower() for c in cols]:
    si = _column(cols, want, path)
    out = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
      if lineno == 1 or not row or all(not c.strip() for c in row):
        continue
      if len(row) <= si:
        raise DataError(f"{path}:{lineno}: no {want!r} column value")
      if row[si].strip():
        out.append(row[si].strip())
  elif column:
    raise DataError(f"{path}:1: no {column!r} column in header {cols} "
                    "(data.corpus_column)")
  else:
    out = [l.split()[0] for l in text.splitlines()
           if l.strip() and not l.lstrip().startswith("#")]
  if not out:
    raise DataError(f"{path}: no SMILES found")
  return out


def _task_spec(cfg) -> tuple[str, str, tuple[str, ...], str]:
  """``(text, name, label columns, kind)`` of the labelled table."""
  task, path = cfg.task, cfg.path
  cols = tuple(c.strip() for c in str(cfg.label_columns or "").split(",")
               if c.strip())
  if task in USER_TASKS:
    if not path or not cols:
      raise DataError(f"data.task={task!r} (your own assay table) needs "
                      "data.path=TABLE.csv and data.label_columns=a,b,...")
    if task == "regression" and len(cols) > 1:
      raise DataError("data.task='regression' takes one label column, got "
                      f"{list(cols)}")
    kind = "regression" if task == "regression" else (
        "binary" if len(cols) == 1 else "multilabel")
    return _read_text(path, "data.path"), path, cols, kind
  if task not in TASKS:
    raise DataError(f"data.task must be one of {sorted(TASKS)} or "
                    f"{list(USER_TASKS)}, got {task!r}")
  stem, task_cols, kind = TASKS[task]
  if path:
    return _read_text(path, "data.path"), path, cols or task_cols, kind
  return (*_task_text(stem, cfg.data_dir), cols or task_cols, kind)


def _report_skipped(name, what, items, total):
  if items:
    first = ", ".join(f"line {l}: {s!r}" for l, s in items[:3])
    print(f"[moleculenet] {name}: skipped {len(items)} of {total} rows "
          f"{what} (first: {first})", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=32)
def _parsed(text: str, name: str, cols: tuple, kind: str, smiles_column: str,
            backend: str):
  """(smiles, labels, scaffolds, skipped, backend) of a table; rows whose
  SMILES cannot be parsed, or whose single label is empty, are dropped."""
  smiles, labels, lines = read_table(text, name, cols, smiles_column)
  try:
    backend = scaffold_lib.resolve_backend(backend)
  except (ImportError, ValueError) as e:
    raise DataError(str(e)) from e
  keep, scafs, skipped, unlabelled = [], [], [], []
  for i, s in enumerate(smiles):
    if kind != "multilabel" and np.isnan(labels[i, 0]):
      unlabelled.append((lines[i], s))
      continue
    if kind == "multilabel" and np.isnan(labels[i]).all():
      unlabelled.append((lines[i], s))
      continue
    sc = scaffold_lib.scaffold(s, backend) if s else None
    if sc is None:
      skipped.append((lines[i], s))
    else:
      keep.append(i)
      scafs.append(sc)
  _report_skipped(name, f"whose SMILES the {backend} scaffold back end "
                  "cannot parse", skipped, len(smiles))
  _report_skipped(name, "without a label", unlabelled, len(smiles))
  y = labels[keep] if kind == "multilabel" else labels[keep, 0]
  return ([smiles[i] for i in keep], y, tuple(scafs),
          tuple(s for _, s in skipped), backend)


def _labelled(cfg, test: bool = False):
  text, name, cols, kind = _task_spec(cfg)
  if test:
    path = cfg.test_path
    text, name = _read_text(path, "data.test_path"), path
  return _parsed(text, name, cols, kind, cfg.smiles_column,
                 cfg.scaffold_backend), kind


def _split_idx(cfg):
  cfg = parse_config(MoleculeNetConfig, cfg)
  (smiles, labels, scafs, skipped, backend), _ = _labelled(cfg)
  ft, fv = float(cfg.frac_train), float(cfg.frac_val)
  if cfg.test_path:  # own test file: split train/val only
    ft, fv = ft / (ft + fv), fv / (ft + fv)
  parts = scaffold_lib.scaffold_split(scafs, ft, fv)
  return smiles, labels, parts, skipped, backend


def _eval_smiles(cfg) -> set[str]:
  """Val/test molecules of ``data.exclude_eval_of`` (default data.task)."""
  cfg = parse_config(MoleculeNetConfig, cfg)
  tasks = tuple(cfg.exclude_eval_of or ()) or (cfg.task,)
  out = set()
  for task in tasks:
    sub = cfg
    if task != cfg.task:
      sub = dataclasses.replace(cfg, task=task, path="", label_columns="")
    smiles, _, parts, _, _ = _split_idx(sub)
    out |= {smiles[i] for s in ("val", "test") for i in parts.get(s, ())}
    if sub.test_path:
      out |= set(_labelled(sub, test=True)[0][0])
  return out


def _pretrain_smiles(cfg) -> list[str]:
  corpus = cfg.corpus
  if corpus:
    smiles = []
    for path in (p.strip() for p in corpus.split(",") if p.strip()):
      smiles += read_smiles_file(path, cfg.corpus_column)
  else:
    smiles = []
    for stem, cols, _ in TASKS.values():
      text, name = _task_text(stem, cfg.data_dir)
      smiles += read_table(text, name, ())[0]
  limit = int(cfg.corpus_max or 0)
  if limit and limit < len(smiles):  # seeded sample, file order kept
    pick = np.sort(np.random.default_rng(0).choice(len(smiles), limit,
                                                   replace=False))
    smiles = [smiles[i] for i in pick]
  if cfg.pretrain_exclude_eval:
    exclude = _eval_smiles(cfg)
    smiles = [s for s in smiles if s not in exclude]
  return smiles


def load_split(data_config, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  cfg = parse_config(MoleculeNetConfig, data_config)
  max_len, task = int(cfg.max_len), cfg.task
  meta = dict(input_kind="bytes", vocab_size=tokenizer.VOCAB_SIZE,
              max_len=max_len, task_name=task)
  if split == "pretrain":
    smiles = _pretrain_smiles(cfg)
    if cfg.pack:
      tokens, valid = tokenizer.pack(smiles, max_len)
    else:
      tokens, valid = tokenizer.encode(smiles, max_len)
    limit = int(cfg.max_pretrain or 0)
    if limit:
      tokens, valid = tokens[:limit], valid[:limit]
    meta.update(num_smiles=len(smiles), packed=bool(cfg.pack))
    return ArrayDataset(dict(tokens=tokens, valid=valid), meta)
  smiles, labels, parts, skipped, backend = _split_idx(cfg)
  _, kind = _labelled(cfg)
  if split == "test" and cfg.test_path:
    (smiles, labels, _, skipped_t, _), _ = _labelled(cfg, test=True)
    idx = np.arange(len(smiles))
    skipped = tuple(skipped) + tuple(skipped_t)
  else:
    idx = parts[split]
  if split == "train":   # a seeded order: "first N labels" is not biased
    idx = idx[np.random.default_rng(0).permutation(len(idx))]
  tokens, valid = tokenizer.encode([smiles[i] for i in idx], max_len)
  _, cols, _ = (None, *_task_spec(cfg)[2:3], None)
  if kind == "binary":
    loss = cfg.cls_loss
    if loss not in ("mse_quirk", "bce"):
      raise DataError(f"data.cls_loss must be 'mse_quirk' or 'bce', got "
                      f"{loss!r}")
    label = labels[idx].astype(np.int32)
    meta.update(task="binary_mse" if loss == "mse_quirk" else "binary",
                num_classes=2)
  elif kind == "multilabel":  # NaN = missing label, masked in loss/metric
    label = labels[idx].astype(np.float32)
    meta.update(task="multilabel", num_classes=label.shape[1],
                label_names=list(cols))
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
           [c for _, cs, _ in TASKS.values() for c in cs] +
           ["label", "y", "target"])
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
      labels.append(label_cell(row[li], f"{path}:{lineno}", cols[li]))
  if not smiles:
    raise DataError(f"{path}: no data rows")
  if li is None:
    return smiles, None, None
  return smiles, np.asarray(labels, np.float64), cols[li]
