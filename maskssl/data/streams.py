"""File-backed pretraining splits of the text data sets: HIGGS CSV rows,
SMILES lines, FASTA records, read one record at a time by the grain loader
(the in-memory readers are in tabular.py, molecules.py and proteins.py).

Used when the file is larger than ``data.in_memory_max_mb`` (32 MB)
or ``data.in_memory=False``; the shipped samples stay in memory. Only an
index stays in memory (12 bytes per line, plus 1 byte per HIGGS label);
``.gz`` files are decompressed once into ``data.cache_dir``. Records are
what the in-memory split holds at the same index, so the batches are the
same as loading the file whole (HIGGS: z-score statistics accumulated in
float64 in one pass over the file instead of numpy's pairwise sum over the
loaded array, equal to ~1e-15 relative).

* ``higgs``: ``data.path`` CSV / CSV.gz rows, a directory converted
  from one by ``python -m maskssl.data.convert``, or, without a path and
  with ``data.source="tfds"``, TFDS ``higgs`` through ``tfds.data_source``
  (``data.tfds_data_dir``; ``data.in_memory=True`` loads it whole instead)
  (header, ``label_column``, ``max_rows``, ``test_size`` / ``val_size`` /
  ``train_pool_size``, ``pretrain_extra``, ``test_path``, ``feature_norm``
  as in :mod:`maskssl.data.tabular`); the evaluation splits are read from
  the file by row too. Rows that are malformed (column count, non-numeric,
  non-finite, label not 0/1) are an error naming file and line, or with
  ``data.bad_records="skip"`` dropped with a counted warning naming them.
* ``moleculenet`` pretraining: the ``data.corpus`` files (one SMILES per
  line, first field, or a CSV column; ``corpus_max`` seeded sample;
  evaluated molecules removed; as :mod:`maskssl.data.molecules` reads
  them), packed (``data.pack``) exactly as :func:`maskssl.data.tokenizer.
  pack` packs them. A corpus entry may be a directory converted by
  ``python -m maskssl.data.convert`` (``{"smiles"}`` records, always read
  by record): the same rows as the file it came from.
* ``proteins`` pretraining: ``data.path`` FASTA records (letters upper-
  cased, ``*`` dropped, unknown letters -> ``X`` or an error as
  ``data.unknown``), or a converted directory of them (always read by
  record); duplicate IDs are not checked here.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import sys
from typing import Sequence

import numpy as np

from maskssl.data import records
from maskssl.data import tokenizer
from maskssl.data.base import ArrayDataset, DataError, split_indices
from maskssl.data.tabular import HiggsConfig, _is_float, train_rows


def _stat_key(path: str) -> tuple:
  st = os.stat(path)
  return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _warn_skipped(bad: list[str], what: str):
  if bad:
    print(f"warning: {what}: skipped {len(bad)} bad record(s) "
          f"(data.bad_records='skip'); first: {bad[0]}"
          + (f"; last: {bad[-1]}" if len(bad) > 1 else ""),
          file=sys.stderr, flush=True)


# ------------------------------------------------------------------ HIGGS --
class _Table:
  """A numeric CSV indexed by row: validated once, z-score sums kept."""

  def __init__(self, path: str, label_column: str, max_rows: int,
               bad_records: str, cache: str, num_features: int):
    self.path = path
    real = records.seekable(path, cache)
    self.lines = records.LineIndex(real)
    want = num_features + 1
    keep = np.ones(len(self.lines), bool)
    labels = np.zeros(len(self.lines), np.int8)
    shift = None
    s1 = np.zeros(num_features)
    s2 = np.zeros(num_features)
    bad = []

    def fail(j, msg):
      where = f"{path}:{self.lines.lineno(j)}"
      if bad_records == "error":
        raise DataError(f"{where}: {msg}")
      bad.append(f"{where}: {msg}")
      keep[j] = False

    if len(self.lines):   # a header: the first line, if not numeric
      cells = next(csv.reader([self.lines.line(0).decode("utf-8",
                                                          "replace")]))
      if self.lines.lineno(0) == 1 and not all(_is_float(c) for c in cells):
        head = np.ones(len(self.lines), bool)
        head[0] = False
        self.lines.select(head)
        keep, labels = keep[1:], labels[1:]
    for s, chunk in self.lines.chunks(4096):   # ~1.3 MB of HIGGS text
      try:
        a = np.loadtxt(io.BytesIO(b"\n".join(chunk)), delimiter=",",
                       dtype=np.float64, ndmin=2)
        ok = a.shape == (len(chunk), want)
      except ValueError:
        ok = False
      if not ok:   # find the bad lines one by one
        a = np.zeros((len(chunk), want))
        for k, line in enumerate(chunk):
          j = s + k
          cells = next(csv.reader([line.decode("utf-8", "replace")]))
          if all(not c.strip() for c in cells):
            keep[j] = False
            continue
          if len(cells) != want:
            fail(j, f"expected {want} comma-separated columns "
                 f"({num_features} features + label), found {len(cells)}")
            continue
          try:
            a[k] = [float(c) for c in cells]
          except ValueError:
            if self.lines.lineno(j) == 1 and keep[:j].sum() == 0:
              keep[j] = False   # header
              continue
            bad_cell = next(c for c in cells if not _is_float(c))
            fail(j, f"non-numeric cell {bad_cell!r}")
      rows = slice(s, s + len(chunk))
      fin = np.isfinite(a).all(1)
      for k in np.flatnonzero(~fin & keep[rows]):
        fail(s + k, "non-finite value")
      if label_column == "last":
        x, y = a[:, :-1], a[:, -1]
      else:
        x, y = a[:, 1:], a[:, 0]
      for k in np.flatnonzero(~np.isin(y, (0.0, 1.0)) & keep[rows]):
        fail(s + k, f"label is {y[k]:g}, not 0/1 (data.label_column="
             f"{label_column!r})")
      m = keep[rows]
      x32 = x[m].astype(np.float32).astype(np.float64)
      if shift is None and len(x32):
        shift = x32[0].copy()
      if len(x32):
        d = x32 - shift
        s1 += d.sum(0)
        s2 += (d * d).sum(0)
      labels[rows] = y.astype(np.int8)
    _warn_skipped(bad, path)
    self.skipped = len(bad)
    if not keep.all():
      self.lines.select(keep)
      labels = labels[keep]
    if max_rows and len(self.lines) > max_rows:
      # the sums must then cover the first max_rows rows only: recount
      self.lines.select(np.arange(len(self.lines)) < max_rows)
      labels = labels[:max_rows]
      shift, s1, s2 = self._sums(np.arange(max_rows), label_column)
    if not len(self.lines):
      raise DataError(f"{path}: no data rows")
    self.labels, self.label_column = labels, label_column
    self.shift = shift if shift is not None else np.zeros(num_features)
    self.s1, self.s2 = s1, s2

  def describe(self, r: int) -> str:
    return f"{self.path}:{self.lines.lineno(int(r))}"

  def _sums(self, rows, label_column):
    x = self.features(rows, label_column).astype(np.float64)
    shift = x[0].copy()
    d = x - shift
    return shift, d.sum(0), (d * d).sum(0)

  def __len__(self):
    return len(self.lines)

  def features(self, rows, label_column=None) -> np.ndarray:
    """float32 features of ``rows`` (parsed as read_csv parses them)."""
    label_column = label_column or self.label_column
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), len(self.shift)), np.float32)
    for k, r in enumerate(rows.tolist()):
      line = self.lines.line(r)
      try:
        v = np.array(line.split(b","), np.float64)
      except ValueError:
        v = np.array([float(c) for c in next(csv.reader(
            [line.decode("utf-8")]))], np.float64)
      out[k] = v[:-1] if label_column == "last" else v[1:]
    return out

  def stats_without(self, rows, extra) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean/std of every row except ``rows``, plus ``extra``."""
    s1, s2, n = self.s1.copy(), self.s2.copy(), len(self)
    if len(rows):
      d = self.features(rows).astype(np.float64) - self.shift
      s1 -= d.sum(0)
      s2 -= (d * d).sum(0)
      n -= len(rows)
    if len(extra):
      d = np.asarray(extra, np.float32).astype(np.float64) - self.shift
      s1 += d.sum(0)
      s2 += (d * d).sum(0)
      n += len(extra)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    return self.shift + mean, np.sqrt(var)


class _RowsTable(_Table):
  """A table read by record (converted shards, TFDS ``higgs``): validated in
  one pass (a record that is not ``num_features`` finite features and a 0/1
  label is an error naming it, or skipped with a counted warning), z-score
  sums kept; the same interface as _Table. Subclasses set ``path`` and read
  ``(features, label)`` pairs of raw rows with ``_fetch``."""

  label_column = "records"

  def _validate(self, n: int, bad_records: str, num_features: int,
                chunk: int = 4096):
    keep = np.ones(n, bool)
    labels = np.zeros(n, np.int8)
    self.shift, self.s1, self.s2 = None, np.zeros(num_features), np.zeros(
        num_features)
    self.rows_ = None
    bad = []
    for s in range(0, n, chunk):
      rows = range(s, min(n, s + chunk))
      for r, (x, y) in zip(rows, self._fetch(rows)):
        x = np.asarray(x)
        msg = (f"expected {num_features} features, found {x.size}"
               if x.size != num_features else "non-finite value"
               if not np.isfinite(x).all() else f"label is {y!r}, not 0/1"
               if y not in (0, 1, 0.0, 1.0) else None)
        if msg:
          if bad_records == "error":
            raise DataError(f"{self.describe_raw(r)}: {msg}")
          bad.append(f"{self.describe_raw(r)}: {msg}")
          keep[r] = False
          continue
        labels[r] = int(y)
        x64 = x.astype(np.float32).astype(np.float64)
        if self.shift is None:
          self.shift = x64.copy()
        d = x64 - self.shift
        self.s1 += d
        self.s2 += d * d
    _warn_skipped(bad, self.path)
    self.skipped = len(bad)
    self.rows_ = np.flatnonzero(keep) if not keep.all() else None
    self.labels = labels[keep] if self.rows_ is not None else labels
    self._n = int(keep.sum())
    if not self._n:
      raise DataError(f"{self.path}: no data rows")
    if self.shift is None:
      self.shift = np.zeros(num_features)

  def _fetch(self, rows) -> list:
    raise NotImplementedError

  def describe_raw(self, r: int) -> str:
    return self.src.describe(int(r))

  def __len__(self):
    return self._n

  def _raw(self, rows) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    return self.rows_[rows] if self.rows_ is not None else rows

  def describe(self, r: int) -> str:
    return self.describe_raw(int(self._raw([int(r)])[0]))

  def features(self, rows, label_column=None) -> np.ndarray:
    rows = self._raw(rows)
    if not len(rows):
      return np.zeros((0, len(self.shift)), np.float32)
    return np.stack([np.asarray(x, np.float32).reshape(-1)
                     for x, _ in self._fetch(rows.tolist())])


class _RecordTable(_RowsTable):
  """A table converted by ``python -m maskssl.data.convert`` (records
  ``{"x": float32 features, "label"}``)."""

  def __init__(self, path: str, max_rows: int, bad_records: str,
               num_features: int):  # pylint: disable=super-init-not-called
    self.path = path
    self.src = records.ArrayRecordSource(path)
    n = min(len(self.src), max_rows) if max_rows else len(self.src)
    self._validate(n, bad_records, num_features)

  def _fetch(self, rows) -> list:
    return [(rec.get("x", ()), rec.get("label"))
            for rec in self.src.raw_records(list(rows))]


TFDS_HIGGS = "tfds:higgs"


class _TfdsTable(_RowsTable):
  """TFDS ``higgs`` by row through ``tfds.data_source`` (prepared in
  array_record format; random access, as the TFDS image sets) instead of
  loading its 11 M rows: features ``HIGGS_COLUMNS`` as float32 and
  ``class_label``, as :func:`maskssl.data.tabular._tfds` reads them."""

  def __init__(self, data_dir: str, max_rows: int, bad_records: str,
               num_features: int):  # pylint: disable=super-init-not-called
    self.src = records.TfdsSource("higgs", "train", data_dir)
    self.path = self.src.meta["source"]
    n = min(len(self.src), max_rows) if max_rows else len(self.src)
    self._validate(n, bad_records, num_features, chunk=65536)

  def _fetch(self, rows) -> list:
    from maskssl.data.tabular import HIGGS_COLUMNS  # pylint: disable=import-outside-toplevel
    return [(np.array([rec[c] for c in HIGGS_COLUMNS], np.float32),
             rec["class_label"]) for rec in self.src.read_many(list(rows))]


@functools.lru_cache(maxsize=4)
def _table(key: tuple, label_column: str, max_rows: int, bad_records: str,
           cache: str) -> _Table:
  from maskssl.data import tabular  # pylint: disable=import-outside-toplevel
  if key[0] == TFDS_HIGGS:
    return _TfdsTable(key[1], max_rows, bad_records, tabular.NUM_FEATURES)
  if records.is_records_dir(key[0]):
    return _RecordTable(key[0], max_rows, bad_records, tabular.NUM_FEATURES)
  return _Table(key[0], label_column, max_rows, bad_records, cache,
                tabular.NUM_FEATURES)


class HiggsRows:
  """Pretraining rows of a HIGGS CSV: file rows ``rows`` (a sorted
  complement of the held-out rows), then the in-memory extra rows."""

  def __init__(self, table: _Table, held: np.ndarray, extra: np.ndarray,
               mean, std, meta: dict):
    self.table = table
    self.held = np.sort(np.asarray(held, np.int64))
    # row(i) = i + #held rows <= row: searchsorted on held - rank
    self._shifted = self.held - np.arange(len(self.held))
    self.n_file = len(table) - len(self.held)
    self.extra = np.asarray(extra, np.float32)
    self.mean, self.std = mean, std
    self.meta = meta

  def __len__(self):
    return self.n_file + len(self.extra)

  def rows(self, idx) -> np.ndarray:
    idx = np.asarray(idx, np.int64)
    return idx + np.searchsorted(self._shifted, idx, side="right")

  def describe(self, i: int) -> str:
    i = int(i)
    if i >= self.n_file:
      return f"<data.pretrain_extra>[{i - self.n_file}]"
    r = int(self.rows([i])[0])
    return self.table.describe(r)

  def read_batch(self, idx) -> dict:
    idx = np.asarray(idx, np.int64)
    infile = idx < self.n_file
    feats = np.empty((len(idx), self.table.shift.shape[0]), np.float32)
    labels = np.full(len(idx), -1, np.int32)
    if infile.any():
      rows = self.rows(idx[infile])
      order = np.argsort(rows)   # read the file forwards
      f = np.empty((len(rows), feats.shape[1]), np.float32)
      f[order] = self.table.features(rows[order])
      feats[infile] = f
      labels[infile] = self.table.labels[rows]
    if (~infile).any():
      feats[~infile] = self.extra[idx[~infile] - self.n_file]
    return _higgs_arrays(feats, labels, self.mean, self.std)

  def __getitem__(self, i: int) -> dict:
    return {k: v[0] for k, v in self.read_batch([i]).items()}


def _higgs_arrays(feats, labels, mean, std) -> dict:
  if mean is not None:
    feats = (feats - mean) / std     # float64, as tabular.load_split
  return dict(x=np.asarray(feats, np.float32)[..., None],
              valid=np.ones(feats.shape, bool),
              label=np.asarray(labels, np.int32))


def _higgs_tfds(cfg) -> bool:
  return not cfg.path and cfg.source == "tfds"


def _higgs_streaming(cfg) -> bool:
  path = cfg.path
  if records.is_records_dir(path):   # converted: always read by record
    return True
  if _higgs_tfds(cfg):   # TFDS data_source: by row unless in_memory=True
    return records.file_backed(cfg, auto=True)
  return bool(path) and records.file_backed(cfg, auto=records.big_file(
      cfg, path))


@functools.lru_cache(maxsize=4)
def _higgs_parts(key: tuple):
  """Everything a split needs, computed once per process."""
  cfg, stat, cache = key
  from maskssl.data import tabular  # pylint: disable=import-outside-toplevel
  table = _table(stat, cfg.label_column, cfg.max_rows, cfg.bad_records, cache)
  test_path = cfg.test_path
  parts = tabular.held_parts(cfg, len(table), own_test=not test_path)
  held = np.concatenate([parts["val"], parts.get("test", [])]).astype(np.int64)
  held_x = table.features(np.sort(held))
  test = None
  if test_path:
    tx, ty = tabular._load_all("", test_path, cfg.label_column, 0, "")  # pylint: disable=protected-access
    test = (tx, ty)
    held_x = np.concatenate([held_x, tx])
  extra = tabular._extra_rows(cfg.pretrain_extra, cfg.label_column)  # pylint: disable=protected-access
  if len(extra):
    extra = tabular._drop_rows_in(extra, held_x)  # pylint: disable=protected-access
  mean = std = None
  if cfg.feature_norm == "zscore":
    mean, std = table.stats_without(held, extra)
    std = np.where(std > 0, std, 1.0)
  elif cfg.feature_norm != "none":
    raise DataError(f"data.feature_norm must be 'zscore' or 'none', got "
                    f"{cfg.feature_norm!r}")
  meta = dict(task="binary", num_classes=2,
              num_features=tabular.NUM_FEATURES, input_kind="continuous",
              columns=tabular.HIGGS_COLUMNS,
              pretrain_rows=len(table) - len(held) + len(extra),
              pretrain_extra_rows=len(extra), file_backed=True,
              skipped_rows=table.skipped)
  if mean is not None:
    meta.update(feature_mean=mean.tolist(), feature_std=std.tolist())
  return table, parts, held, extra, mean, std, meta, test


def _higgs_key(cfg: HiggsConfig) -> tuple:
  """What the splits depend on: the fields that shape them (the others at
  their defaults, so e.g. ``threads`` shares the cache entry), the file's
  stat (or the TFDS directory) and the cache directory."""
  shape = HiggsConfig(
      path=cfg.path, label_column=cfg.label_column,
      max_rows=int(cfg.max_rows or 0), bad_records=cfg.bad_records,
      test_size=int(cfg.test_size), val_size=int(cfg.val_size),
      split_seed=int(cfg.split_seed),
      train_pool_size=int(cfg.train_pool_size),
      test_path=cfg.test_path or "", pretrain_extra=cfg.pretrain_extra or "",
      feature_norm=cfg.feature_norm)
  stat = ((TFDS_HIGGS, cfg.tfds_data_dir or "") if _higgs_tfds(cfg)
          else _stat_key(cfg.path))
  return shape, stat, records.cache_dir(cfg)


def higgs_source(cfg, split: str):
  key = _higgs_key(cfg)
  table, parts, held, extra, mean, std, meta, test = _higgs_parts(key)
  if split == "pretrain":
    return HiggsRows(table, held, extra, mean, std, dict(meta))
  if split == "test" and test is not None:
    feats, labels = test
  elif split in parts or split == "train":
    rows = (parts[split] if split != "train" else
            train_rows(key[0], len(table), held))
    order = np.argsort(rows)
    feats = np.empty((len(rows), len(table.shift)), np.float32)
    feats[order] = table.features(rows[order])
    labels = table.labels[rows].astype(np.int32)
  else:
    raise DataError(f"unknown split {split!r}; use "
                    f"{sorted(set(parts) | {'pretrain', 'train'})}")
  return ArrayDataset(_higgs_arrays(feats, labels, mean, std), dict(meta))


# ----------------------------------------------------------------- SMILES --
def _cells(line: str) -> list[str]:
  """csv.reader's cells of one line (str.split when nothing is quoted)."""
  return line.split(",") if '"' not in line else next(csv.reader([line]))


def _scan_smiles(path, lines, column, exclude):
  """As molecules.read_smiles_file: CSV mode when the first non-blank
  line names the column (default ``smiles``, any case), else the first
  field of each line that is not blank or a ``#`` comment."""
  n = len(lines)
  keep = np.zeros(n, bool)
  nbytes = np.zeros(n, np.int64)
  out = np.zeros(n, bool)
  col = None
  want = (column or "smiles").lower()
  first = True
  for s, chunk in lines.chunks():
    for k, raw in enumerate(chunk):
      j = s + k
      text = raw.decode("utf-8", "replace")
      if first and text.strip():
        first = False
        cells = [c.strip().lower() for c in next(csv.reader([text]))]
        if want in cells:
          col = cells.index(want)
        elif column:
          raise DataError(f"{path}:1: no {column!r} column in header "
                          f"{cells} (data.corpus_column)")
      if col is not None:
        if lines.lineno(j) == 1:
          continue
        row = _cells(text)
        if not row or all(not c.strip() for c in row):
          continue
        if len(row) <= col:
          raise DataError(f"{path}:{lines.lineno(j)}: no {want!r} column "
                          "value")
        field = row[col].strip()
      else:
        if not text.strip() or text.lstrip().startswith("#"):
          continue
        field = text.split()[0]
      if not field:
        continue
      keep[j] = True
      nbytes[j] = len(field.encode("utf-8"))
      out[j] = field in exclude
  return col, keep, nbytes, out


class _SmilesText:
  """The corpus SMILES of one text file (:func:`_scan_smiles` rules),
  indexed by line: ``nbytes`` / ``excluded`` per kept SMILES."""

  def __init__(self, path: str, column: str, exclude: frozenset, cache: str):
    self.path = path
    self.lines = records.LineIndex(records.seekable(path, cache))
    self.col, keep, nbytes, out = _scan_smiles(path, self.lines, column,
                                               exclude)
    self.lines.select(keep)
    self.nbytes, self.excluded = nbytes[keep], out[keep]

  def __len__(self):
    return len(self.lines)

  def where(self, k: int) -> str:
    return f"{self.path}:{self.lines.lineno(int(k))}"

  def smiles(self, k: int) -> str:
    raw = self.lines.line(int(k))
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{self.where(k)}: not UTF-8 ({e})") from None
    if self.col is not None:
      return _cells(text)[self.col].strip()
    return text.split()[0]


def converted_records(path: str, kind: str, what: str
                      ) -> records.ArrayRecordSource:
  """The records of a converted directory, which must hold ``kind``."""
  src = records.ArrayRecordSource(path)
  got = src.meta.get("kind")
  if got != kind:
    raise DataError(f"{path}: converted {got!r} records, not {kind!r} "
                    f"({what}; convert with python -m maskssl.data.convert "
                    f"--kind={kind})")
  return src


def _record_field(src, rows, field: str) -> list:
  """``field`` (a string) of records ``rows`` of an ArrayRecordSource."""
  rows = list(rows)
  out = []
  for r, rec in zip(rows, src.raw_records(rows)):
    v = rec.get(field)
    if not isinstance(v, str):
      raise DataError(f"{src.describe(r)}: {field!r} is "
                      f"{type(v).__name__}, not a string")
    out.append(v)
  return out


class SmilesRecords:
  """The SMILES of a directory converted by ``python -m maskssl.data.convert``
  (records ``{"smiles"}``, written by the reader's own rules): scanned once
  for the byte lengths and the excluded molecules, read by record."""

  def __init__(self, path: str, column: str, exclude: frozenset):
    self.path = path
    self.src = converted_records(path, "smiles", "data.corpus")
    conv = str(self.src.meta.get("smiles_column", "") or "")
    if column and column.lower() != (conv or "smiles").lower():
      raise DataError(f"{path}: converted from column {conv or 'smiles'!r}, "
                      f"not data.corpus_column={column!r} (convert again "
                      f"with --smiles_column={column})")
    n = len(self.src)
    keep = np.ones(n, bool)
    nbytes = np.zeros(n, np.int64)
    out = np.zeros(n, bool)
    for s in range(0, n, 4096):
      for k, smi in enumerate(_record_field(
          self.src, range(s, min(n, s + 4096)), "smiles")):
        keep[s + k] = bool(smi)
        nbytes[s + k] = len(smi.encode("utf-8"))
        out[s + k] = smi in exclude
    self.rows_ = np.flatnonzero(keep) if not keep.all() else None
    self.nbytes, self.excluded = nbytes[keep], out[keep]

  def __len__(self):
    return len(self.nbytes)

  def _row(self, k: int) -> int:
    return int(self.rows_[k]) if self.rows_ is not None else int(k)

  def where(self, k: int) -> str:
    return self.src.describe(self._row(k))

  def smiles(self, k: int) -> str:
    return _record_field(self.src, [self._row(k)], "smiles")[0]

  def all_smiles(self) -> list[str]:
    """Every kept SMILES, in order (the in-memory corpus)."""
    rows = self.rows_ if self.rows_ is not None else np.arange(len(self))
    out = []
    for s in range(0, len(rows), 4096):
      out += _record_field(self.src, rows[s:s + 4096], "smiles")
    return out


class SmilesRows:
  """The pretraining corpus of :mod:`maskssl.data.molecules` (``data.corpus``
  files: one SMILES per line, first field, or a CSV column, or directories
  of converted ``{"smiles"}`` records; ``corpus_max`` seeded sample; eval
  molecules removed), packed (or one per row) exactly as
  ``molecules.load_split`` packs them, tokenized on read."""

  def __init__(self, paths: Sequence[str], column: str, max_len: int,
               pack: bool, corpus_max: int, exclude: frozenset,
               limit: int, cache: str):
    self.max_len = max_len
    self.files, parts = [], []
    for fi, path in enumerate(paths):
      f = (SmilesRecords(path, column, exclude)
           if records.is_records_dir(path)
           else _SmilesText(path, column, exclude, cache))
      self.files.append(f)
      parts.append((np.full(len(f), fi, np.int16),
                    np.arange(len(f), dtype=np.int64), f.nbytes, f.excluded))
    fid = np.concatenate([p[0] for p in parts])
    pos = np.concatenate([p[1] for p in parts])
    nbytes = np.concatenate([p[2] for p in parts])
    excluded = np.concatenate([p[3] for p in parts])
    total = len(fid)
    if not total:
      raise DataError(f"{', '.join(paths)}: no SMILES found")
    if corpus_max and corpus_max < total:  # molecules' seeded sample
      pick = np.sort(np.random.default_rng(0).choice(total, corpus_max,
                                                     replace=False))
      fid, pos, nbytes, excluded = (fid[pick], pos[pick], nbytes[pick],
                                    excluded[pick])
    keep = ~excluded
    self.fid, self.pos, nbytes = fid[keep], pos[keep], nbytes[keep]
    if pack:   # tokenizer.pack's greedy rule on the encoded lengths
      lens = np.minimum(nbytes, max_len - 1) + 1
      starts, cur = [0], 0
      for j, n in enumerate(lens.tolist()):
        if cur and cur + n > max_len:
          starts.append(j)
          cur = 0
        cur += n
      starts.append(len(lens))
      self.bounds = np.asarray(starts, np.int64)
    else:
      self.bounds = np.arange(len(nbytes) + 1, dtype=np.int64)
    self.rows = len(self.bounds) - 1
    if limit:
      self.rows = min(self.rows, limit)
    self.meta = dict(input_kind="bytes", vocab_size=tokenizer.VOCAB_SIZE,
                     max_len=max_len, num_smiles=int(len(self.fid)),
                     packed=pack, file_backed=True, source=",".join(paths))

  def __len__(self):
    return self.rows

  def _where(self, j: int) -> str:
    return self.files[int(self.fid[j])].where(int(self.pos[j]))

  def describe(self, i: int) -> str:
    return self._where(int(self.bounds[int(i)]))

  def smiles(self, j: int) -> str:
    return self.files[int(self.fid[j])].smiles(int(self.pos[j]))

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    ids: list[int] = []
    for j in range(int(self.bounds[i]), int(self.bounds[i + 1])):
      ids += tokenizer.encode_ids(self.smiles(j), self.max_len)
    tokens = np.full(self.max_len, tokenizer.PAD, np.int32)
    tokens[:len(ids)] = ids[:self.max_len]
    return dict(tokens=tokens, valid=tokens != tokenizer.PAD)


# ------------------------------------------------------------------ FASTA --
def clean_sequence(seq: str, unknown: str, where: str) -> str:
  """A FASTA sequence (letters already upper-cased, ``*`` dropped) checked
  as :func:`maskssl.data.proteins.parse_fasta` checks it: empty is an
  error, unknown letters -> ``X`` (``unknown="x"``) or an error."""
  from maskssl.data.proteins import AMINO  # pylint: disable=import-outside-toplevel
  if not seq:
    raise DataError(f"{where}: record has an empty sequence")
  bad = set(seq) - set(AMINO)
  if bad:
    if unknown == "error":
      raise DataError(f"{where}: unknown residue letter {sorted(bad)[0]!r}")
    seq = "".join(ch if ch in AMINO else "X" for ch in seq)
  return seq


class FastaRows:
  """FASTA records of a file, or of a directory converted by ``python -m
  maskssl.data.convert`` (records ``{"id", "description", "sequence"}``),
  tokenized on read (not packed)."""

  def __init__(self, path: str, max_len: int, unknown: str, limit: int,
               cache: str):
    if unknown not in ("x", "error"):
      raise DataError(f"unknown-letter policy must be 'x' or 'error', got "
                      f"{unknown!r}")
    self.path, self.max_len, self.unknown = path, max_len, unknown
    self.src = None
    if records.is_records_dir(path):
      self.src = converted_records(path, "fasta", "data.path")
      n = len(self.src)
    else:
      self.lines, self.heads, self.counts = records.fasta_index(
          records.seekable(path, cache))
      n = len(self.heads)
    self.rows = min(n, limit) if limit else n
    self.meta = dict(input_kind="bytes", vocab_size=tokenizer.VOCAB_SIZE,
                     max_len=max_len, source=path, file_backed=True)

  def __len__(self):
    return self.rows

  def describe(self, i: int) -> str:
    if self.src is not None:
      return self.src.describe(int(i))
    return f"{self.path}:{self.lines.lineno(int(self.heads[int(i)]))}"

  def sequence(self, i: int) -> str:
    if self.src is not None:
      return clean_sequence(_record_field(self.src, [int(i)], "sequence")[0],
                            self.unknown, self.describe(i))
    h, c = int(self.heads[i]), int(self.counts[i])
    parts = []
    for j in range(h + 1, h + c):
      line = self.lines.line(j).decode("utf-8").strip()
      if not line or line.startswith(";"):
        continue
      parts.append("".join(line.split()).upper().rstrip("*"))
    return clean_sequence("".join(parts), self.unknown, self.describe(i))

  def __getitem__(self, i: int) -> dict:
    tokens, valid = tokenizer.encode([self.sequence(int(i))], self.max_len)
    return dict(tokens=tokens[0], valid=valid[0])


# -------------------------------------------------------------- registry --
def load_source(cfg, split: str):
  """A file-backed split for ``cfg.name``, or None (load it in memory);
  ``cfg``: the data set's schema (:func:`maskssl.data.data_schema`)."""
  name, path = cfg.name, cfg.path
  if name == "higgs":
    return higgs_source(cfg, split) if _higgs_streaming(cfg) else None
  if split != "pretrain":
    return None
  if name == "moleculenet":
    corpus = [p.strip() for p in str(cfg.corpus or "").split(",")
              if p.strip()]
    # converted directories are always read by record (like HIGGS shards)
    if not corpus or not records.file_backed(cfg, auto=records.big_file(
        cfg, *corpus) or any(map(records.is_records_dir, corpus))):
      return None
    from maskssl.data import molecules  # pylint: disable=import-outside-toplevel
    exclude = frozenset(molecules._eval_smiles(cfg)  # pylint: disable=protected-access
                        if cfg.pretrain_exclude_eval else ())
    src = SmilesRows(corpus, cfg.corpus_column or "", int(cfg.max_len),
                     bool(cfg.pack), int(cfg.corpus_max or 0), exclude,
                     int(cfg.max_pretrain or 0), records.cache_dir(cfg))
    src.meta["task_name"] = cfg.task
    return src
  if not path or not records.file_backed(cfg, auto=records.big_file(
      cfg, path) or records.is_records_dir(path)):
    return None
  if name == "proteins":
    return FastaRows(path, int(cfg.max_len), cfg.unknown,
                     int(cfg.max_pretrain or 0), records.cache_dir(cfg))
  return None


def load_split(cfg, split: str):
  """Evaluation splits read from the file (HIGGS), or None."""
  if cfg.name == "higgs" and _higgs_streaming(cfg):
    return higgs_source(cfg, split)
  return None
