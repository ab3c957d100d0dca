"""Protein sequences as byte tokens for SMA (name ``"proteins"``).

The same byte tokenizer as molecules (:mod:`maskssl.data.tokenizer`): one
token per residue letter + ``SEP``, right-padded to ``data.max_len`` (1,024
in the reference; longer sequences are truncated to their first
``max_len - 1`` residues). Rows are not packed (spec §7.1.8).

Tasks (``data.task``):

* ``"deeploc"``: subcellular localisation, 10 classes, accuracy
  (meta task ``"multiclass"``). ``train``/``val`` = the DeepLoc training
  sequences with ``data.val_fraction`` held out (seeded by
  ``data.split_seed``), ``test`` = the DeepLoc test sequences.
* ``"gb1"``: FLIP GB1 ``sampled`` fitness regression, Spearman rho (meta
  task ``"regression"``; RMSE is reported too). ``train`` = set "train"
  without the validation flag, ``val`` = flagged rows, ``test`` = set "test".
* ``"remote_homology"``: TAPE fold classification, 1,195 classes, top-1
  accuracy (TAPE's metric; test = ``test_fold_holdout``), and
  ``"stability"``: TAPE stability regression, Spearman rho. TAPE's own
  train/valid/test splits, read from ``<data.data_dir>/tape/<task>/
  {train,valid,test}.csv.gz`` (columns ``seq,label``; not shipped).

``pretrain`` = unlabelled sequences: ``data.path`` (a user FASTA, or a
directory converted from one by ``python -m maskssl.data.convert``) or the
training sequences (never val/test) of ``data.pretrain_tasks`` (default:
the task itself). ``data.test_path``: a labelled FASTA / CSV of the same
kind replaces the test split. Sequences longer than ``max_len - 1``
residues are cropped to their first ``max_len - 1`` (spec: keep the first
``N_max - 1`` tokens, then SEP); the count is in ``meta["cropped"]`` and
reported on stderr.

Default data: compact subsets embedded in ``maskssl/resources`` (see
``PROTEINS_SOURCE.md``); ``data.data_dir`` points at a directory with
``deeploc_subset/`` and ``flip_gb1/sampled.csv`` (the full shared copies).

FASTA reader (:func:`read_fasta`): multi-line records; lower case is
upper-cased; whitespace and a trailing ``*`` are dropped; letters outside
the 25-letter IUPAC protein alphabet become ``X`` (``unknown="x"``, the
default, counted in the result) or raise (``unknown="error"``); an empty
record, a sequence line before the first header, a duplicate ID or a file
without records raise :class:`DataError` naming the file and line.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.resources
import io
import os
import sys

import ml_collections
import numpy as np

from maskssl.data import tokenizer
from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import config_dict, parse_config

AMINO = "ACDEFGHIKLMNPQRSTVWYBZXUO"
DEEPLOC_CLASSES = ("Cell.membrane", "Cytoplasm", "Endoplasmic.reticulum",
                   "Extracellular", "Golgi.apparatus", "Lysosome/Vacuole",
                   "Mitochondrion", "Nucleus", "Peroxisome", "Plastid")
SPLITS = ("pretrain", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ProteinsConfig(DataConfig):
  """``config.data`` of ``proteins`` (fields as in the module doc; ``path``,
  ``max_len``, ``unknown``, ``max_pretrain`` are also read by
  :mod:`maskssl.data.streams`)."""
  name: str = "proteins"
  task: str = "deeploc"     # deeploc | gb1 | remote_homology | stability
  data_dir: str = ""        # the full shared copies (and TAPE)
  path: str = ""            # pretraining FASTA (or a converted directory)
  max_len: int = 1024
  val_fraction: float = 0.1  # DeepLoc: held out from its training set
  split_seed: int = 0
  unknown: str = "x"        # letters outside the alphabet: "x" | "error"
  max_train: int = 0        # first N of each split (0: all)
  max_eval: int = 0
  max_pretrain: int = 0
  pretrain_tasks: tuple = ()  # tasks whose training sequences pretrain
  test_path: str = ""       # a labelled FASTA / CSV replacing the test split


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(ProteinsConfig, overrides))


# ------------------------------------------------------------------ FASTA --
def parse_fasta(text: str, name: str = "<fasta>", unknown: str = "x"
                ) -> tuple[list[str], list[str], list[str], int]:
  """``(ids, descriptions, sequences, n_unknown)`` of a FASTA text."""
  if unknown not in ("x", "error"):
    raise DataError(f"unknown-letter policy must be 'x' or 'error', got "
                    f"{unknown!r}")
  ids, descs, seqs = [], [], []
  cur: list[str] | None = None
  header_line = 0
  seen = set()
  n_unknown = 0
  allowed = set(AMINO)

  def close():
    if cur is not None and not "".join(cur):
      raise DataError(f"{name}:{header_line}: record {ids[-1]!r} has an empty "
                      "sequence")
    if cur is not None:
      seqs.append("".join(cur))

  for lineno, raw in enumerate(text.splitlines(), start=1):
    line = raw.strip()
    if not line or line.startswith(";"):
      continue
    if line.startswith(">"):
      close()
      parts = line[1:].split(None, 1)
      if not parts:
        raise DataError(f"{name}:{lineno}: header without an ID")
      if parts[0] in seen:
        raise DataError(f"{name}:{lineno}: duplicate record ID {parts[0]!r}")
      seen.add(parts[0])
      ids.append(parts[0])
      descs.append(parts[1] if len(parts) > 1 else "")
      cur, header_line = [], lineno
      continue
    if cur is None:
      raise DataError(f"{name}:{lineno}: sequence line before the first "
                      "'>' header (not FASTA?)")
    s = "".join(line.split()).upper().rstrip("*")
    bad = [c for c in s if c not in allowed]
    if bad:
      if unknown == "error":
        raise DataError(f"{name}:{lineno}: unknown residue letter "
                        f"{bad[0]!r} in record {ids[-1]!r}")
      n_unknown += len(bad)
      s = "".join(c if c in allowed else "X" for c in s)
    cur.append(s)
  close()
  if not ids:
    raise DataError(f"{name}: no FASTA records")
  return ids, descs, seqs, n_unknown


def read_fasta(path: str, unknown: str = "x"):
  """:func:`parse_fasta` of a file (``.gz`` allowed), or of a directory
  converted from one by ``python -m maskssl.data.convert`` (the same
  records: letters checked by ``unknown``, duplicate IDs rejected)."""
  from maskssl.data import records  # pylint: disable=import-outside-toplevel
  if records.is_records_dir(path):
    return _read_fasta_records(path, unknown)
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  return parse_fasta(text, path, unknown)


def _read_fasta_records(path: str, unknown: str):
  from maskssl.data import records, streams  # pylint: disable=import-outside-toplevel
  if unknown not in ("x", "error"):
    raise DataError(f"unknown-letter policy must be 'x' or 'error', got "
                    f"{unknown!r}")
  src = streams.converted_records(path, "fasta", "data.path")
  ids, descs, seqs, seen, n_unknown = [], [], [], set(), 0
  for s in range(0, len(src), 4096):
    rows = range(s, min(len(src), s + 4096))
    for i, rec in zip(rows, src.raw_records(rows)):
      rid, where = str(rec.get("id", "")), src.describe(i)
      if rid in seen:
        raise DataError(f"{where}: duplicate record ID {rid!r}")
      seen.add(rid)
      raw = str(rec.get("sequence", ""))
      n_unknown += sum(c not in AMINO for c in raw)
      ids.append(rid)
      descs.append(str(rec.get("description", "")))
      seqs.append(streams.clean_sequence(raw, unknown, where))
  if not ids:
    raise DataError(f"{path}: no FASTA records")
  return ids, descs, seqs, n_unknown


def _resource_text(fname: str) -> str:
  ref = importlib.resources.files("maskssl") / f"resources/{fname}"
  with importlib.resources.as_file(ref) as p:
    with gzip.open(p, "rt", encoding="utf-8") as f:
      return f.read()


# ------------------------------------------------------------------ tasks --
@functools.lru_cache(maxsize=8)
def _deeploc(data_dir: str, unknown: str):
  out = {}
  for part in ("train", "test"):
    if data_dir:
      d = os.path.join(data_dir, "deeploc_subset")
      fa = os.path.join(d, "deeploc_train_sub5k_fixed.fasta" if part == "train"
                        else "deeploc_test_fixed.fasta")
      ids, _, seqs, _ = read_fasta(fa, unknown)
      lab_path = os.path.join(d, f"deeploc_{part}.csv")
      if not os.path.exists(lab_path):
        raise DataError(f"{lab_path}: no such file")
      with open(lab_path, newline="") as f:
        labels = {r["Label"]: r["Class"] for r in csv.DictReader(f)}
      pairs = [(s, labels[i]) for i, s in zip(ids, seqs) if i in labels]
    else:
      name = f"deeploc_{part}_subset.fasta.gz"
      ids, descs, seqs, _ = parse_fasta(_resource_text(name), name, unknown)
      pairs = list(zip(seqs, descs))
    cls = {c: k for k, c in enumerate(DEEPLOC_CLASSES)}
    for s, c in pairs:
      if c not in cls:
        raise DataError(f"DeepLoc {part}: unknown class {c!r}; known: "
                        f"{DEEPLOC_CLASSES}")
    out[part] = ([s for s, _ in pairs],
                 np.asarray([cls[c] for _, c in pairs], np.int32))
  return out


@functools.lru_cache(maxsize=8)
def _gb1(data_dir: str):
  if data_dir:
    path = os.path.join(data_dir, "flip_gb1", "sampled.csv")
    if not os.path.exists(path):
      raise DataError(f"{path}: no such file")
    with open(path, newline="") as f:
      text, name = f.read(), path
  else:
    name = "flip_gb1_sampled_subset.csv.gz"
    text = _resource_text(name)
  out = {"train": ([], []), "val": ([], []), "test": ([], [])}
  for lineno, r in enumerate(csv.DictReader(io.StringIO(text)), start=2):
    try:
      y = float(r["target"])
      seq = r["sequence"].strip().upper()
    except (KeyError, TypeError, ValueError):
      raise DataError(f"{name}:{lineno}: expected columns sequence,target,"
                      "set,validation with a numeric target") from None
    split = ("test" if r["set"] == "test" else
             "val" if (r.get("validation") or "").strip() == "True" else
             "train")
    out[split][0].append(seq)
    out[split][1].append(y)
  return {k: (v[0], np.asarray(v[1], np.float32)) for k, v in out.items()}


TAPE_TASKS = {"remote_homology": "multiclass", "stability": "regression"}
TAPE_SPLITS = {"train": "train", "val": "valid", "test": "test"}


@functools.lru_cache(maxsize=4)
def _tape(data_dir: str, task: str):
  if not data_dir:
    raise DataError(f"data.task={task!r} reads TAPE's splits from "
                    f"<data.data_dir>/tape/{task}/ (not shipped): set "
                    "data.data_dir, e.g. ../shared/data")
  out = {}
  for split, fname in TAPE_SPLITS.items():
    path = os.path.join(data_dir, "tape", task, f"{fname}.csv.gz")
    if not os.path.exists(path):
      raise DataError(f"{path}: no such file (data.data_dir)")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
      rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["seq", "label"]:
      raise DataError(f"{path}:1: expected the header seq,label")
    seqs, labels = [], []
    for lineno, r in enumerate(rows[1:], start=2):
      if len(r) != 2:
        raise DataError(f"{path}:{lineno}: expected 2 columns, found {len(r)}")
      try:
        y = float(r[1])
      except ValueError:
        raise DataError(f"{path}:{lineno}: label {r[1]!r} is not a number"
                        ) from None
      seqs.append(r[0].strip().upper())
      labels.append(y)
    dtype = np.int32 if TAPE_TASKS[task] == "multiclass" else np.float32
    out[split] = (seqs, np.asarray(labels).astype(dtype))
  return out


def _labelled(cfg):
  """{split: (sequences, labels)}, meta."""
  task, data_dir = cfg.task, cfg.data_dir
  if task == "deeploc":
    d = _deeploc(data_dir, cfg.unknown)
    seqs, labels = d["train"]
    n = len(seqs)
    perm = np.random.default_rng(int(cfg.split_seed)).permutation(n)
    nval = int(round(float(cfg.val_fraction) * n))
    val, tr = np.sort(perm[:nval]), perm[nval:]   # train: shuffled order
    parts = dict(train=([seqs[i] for i in tr], labels[tr]),
                 val=([seqs[i] for i in val], labels[val]), test=d["test"])
    meta = dict(task="multiclass", num_classes=len(DEEPLOC_CLASSES),
                label_names=DEEPLOC_CLASSES)
  elif task == "gb1":
    parts = dict(_gb1(data_dir))
    meta = dict(task="regression", num_classes=1)
  elif task in TAPE_TASKS:
    parts = dict(_tape(data_dir, task))
    meta = (dict(task="multiclass", num_classes=1195)
            if task == "remote_homology" else
            dict(task="regression", num_classes=1))
  else:
    raise DataError(f"data.task must be one of deeploc, gb1, "
                    f"{', '.join(TAPE_TASKS)}; got {task!r}")
  test_path = cfg.test_path
  if test_path:
    _, seqs, labels, _ = read_sequence_records(
        test_path, cfg.unknown, meta.get("label_names"))
    if labels is None:
      raise DataError(f"{test_path}: data.test_path needs labels (a label / "
                      "target column, or DeepLoc-style FASTA descriptions)")
    parts["test"] = (seqs, np.asarray(labels).astype(parts["train"][1].dtype))
  return parts, meta


def _encode(seqs, max_len: int, what: str, meta: dict):
  """Byte tokens; counts (and reports) the sequences that are cropped."""
  cropped = sum(len(s) > max_len - 1 for s in seqs)
  if cropped:
    print(f"[proteins] {what}: cropped {cropped} of {len(seqs)} sequences "
          f"longer than {max_len - 1} residues to their first {max_len - 1}",
          file=sys.stderr, flush=True)
  meta.update(cropped=int(cropped), num_sequences=len(seqs))
  return tokenizer.encode(seqs, max_len)


def load_split(data_config, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  cfg = parse_config(ProteinsConfig, data_config)
  max_len = int(cfg.max_len)
  meta = dict(input_kind="bytes", vocab_size=tokenizer.VOCAB_SIZE,
              max_len=max_len, task_name=cfg.task)
  if split == "pretrain":
    path = cfg.path
    if path:
      _, _, seqs, n_unk = read_fasta(path, cfg.unknown)
      meta.update(unknown_letters=n_unk, source=path)
    else:
      seqs = []
      tasks = tuple(cfg.pretrain_tasks or ()) or (cfg.task,)
      for t in tasks:
        sub = dataclasses.replace(cfg, task=t, test_path="")
        seqs += _labelled(sub)[0]["train"][0]
      meta.update(pretrain_tasks=list(tasks))
    limit = int(cfg.max_pretrain or 0)
    seqs = seqs[:limit] if limit else seqs
    tokens, valid = _encode(seqs, max_len, "pretrain", meta)
    return ArrayDataset(dict(tokens=tokens, valid=valid), meta)
  parts, tmeta = _labelled(cfg)
  seqs, labels = parts[split]
  limit = int((cfg.max_train if split == "train" else cfg.max_eval) or 0)
  if limit:
    seqs, labels = seqs[:limit], labels[:limit]
  tokens, valid = _encode(seqs, max_len, split, meta)
  meta.update(tmeta)
  return ArrayDataset(dict(tokens=tokens, valid=valid, label=labels), meta)


# ----------------------------------------------------- embedding records --
def read_sequence_records(path: str, unknown: str = "x",
                          label_names=None):
  """Every sequence of a user file, in order, for embedding:
  ``(ids, sequences, labels or None, label names or None)``.

  * FASTA (``.fasta``/``.fa``/``.faa``, ``.gz`` allowed, or any file whose
    first line starts with ``>``): ids are the record IDs; the description
    is the label when every description is one of ``label_names`` (the
    embedded DeepLoc layout ``>id Class``).
  * CSV / TSV with a ``sequence`` or ``seq`` column (FLIP, TAPE): ids from
    an ``id``/``name``/``accession`` column, else ``row<N>`` (1-based data
    row); label from ``target``/``label``/``class``/``y``: numbers as float,
    else class names (indexed in ``label_names`` when they are all in it,
    else in their sorted order).

  Letters are upper-cased and checked as :func:`parse_fasta` does
  (``unknown``). Bad rows raise :class:`DataError` naming file and line.
  """
  from maskssl.data import records  # pylint: disable=import-outside-toplevel
  if records.is_records_dir(path):   # converted FASTA
    return _fasta_labels(*read_fasta(path, unknown)[:3], label_names)
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rt", encoding="utf-8", newline="") as f:
      text = f.read()
  except (UnicodeDecodeError, OSError) as e:
    raise DataError(f"{path}: cannot read text ({type(e).__name__}: {e})"
                    ) from None
  stem = path[:-3] if path.endswith(".gz") else path
  first = next((l for l in text.splitlines() if l.strip()), "")
  if stem.lower().endswith((".fasta", ".fa", ".faa", ".fas")) or \
      first.startswith(">"):
    return _fasta_labels(*parse_fasta(text, path, unknown)[:3], label_names)
  delim = "\t" if stem.lower().endswith(".tsv") else ","
  reader = csv.reader(io.StringIO(text), delimiter=delim)
  header = next(reader, None)
  cols = [c.strip() for c in header] if header else []
  lower = [c.lower() for c in cols]
  si = next((lower.index(c) for c in ("sequence", "seq") if c in lower), None)
  if si is None:
    raise DataError(f"{path}:1: not FASTA and no 'sequence'/'seq' column in "
                    f"the header {cols}")
  ii = next((lower.index(c) for c in ("id", "name", "accession")
             if c in lower), None)
  li = next((lower.index(c) for c in ("target", "label", "class", "y")
             if c in lower), None)
  allowed = set(AMINO)
  ids, seqs, cells = [], [], []
  for lineno, row in enumerate(reader, start=2):
    if not row or all(not c.strip() for c in row):
      continue
    if len(row) <= max(si, ii or 0, li or 0):
      raise DataError(f"{path}:{lineno}: expected {len(cols)} columns, found "
                      f"{len(row)}")
    s = "".join(row[si].split()).upper().rstrip("*")
    if not s:
      raise DataError(f"{path}:{lineno}: empty sequence")
    bad = [c for c in s if c not in allowed]
    if bad and unknown == "error":
      raise DataError(f"{path}:{lineno}: unknown residue letter {bad[0]!r}")
    seqs.append("".join(c if c in allowed else "X" for c in s))
    ids.append(row[ii].strip() if ii is not None else f"row{len(seqs)}")
    if li is not None:
      cells.append((lineno, row[li].strip()))
  if not seqs:
    raise DataError(f"{path}: no data rows")
  if li is None:
    return ids, seqs, None, None
  try:
    return ids, seqs, np.asarray([float(c) for _, c in cells], np.float64), None
  except ValueError:
    pass
  found = sorted({c for _, c in cells})
  names = (list(label_names) if label_names and set(found) <= set(label_names)
           else found)
  return ids, seqs, np.asarray([names.index(c) for _, c in cells],
                               np.int32), names


def _fasta_labels(ids, descs, seqs, label_names):
  """FASTA records for embedding: the description is the label when every
  description is one of ``label_names`` (the DeepLoc layout)."""
  labels = names = None
  if label_names and all(d in label_names for d in descs):
    names = list(label_names)
    labels = np.asarray([names.index(d) for d in descs], np.int32)
  return ids, seqs, labels, names
