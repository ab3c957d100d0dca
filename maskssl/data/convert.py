r"""Loose files -> ArrayRecord shards, for the grain loader.

    python -m maskssl.data.convert --src=FOLDER|TAR|CSV|FASTA|SMILES --out=DIR

* images: an image folder or an uncompressed tar, layout
  ``[split/]class/name.jpg`` -> one record per image
  ``{"image": <the file's bytes, not re-encoded>, "label", "name"}``, one
  group of shards per split folder (``all`` without split folders); class
  names (sorted folder names) go into the metadata;
* table: a CSV / CSV.gz of numbers (a non-numeric first line is the
  header) -> ``{"x": float32 features, "label"}`` (``--label_column``
  last|first|none);
* smiles: one SMILES per line (first field), or a CSV with a ``smiles``
  column (``--smiles_column``) -> ``{"smiles"}``, read as the molecule
  module reads ``data.corpus``; point ``--config.data.corpus=DIR`` at it;
* fasta: FASTA (``.gz`` allowed) -> ``{"id", "description", "sequence"}``
  (letters upper-cased, ``*`` dropped; unknown letters are mapped or
  rejected when read, by ``data.unknown``); ``--config.data.path=DIR`` of
  the proteins module.

``DIR`` gets ``<split>-NNNNN.array_record`` shards (``group_size:1``: one
``pread`` per record) and ``maskssl_records.json`` (kind, splits with
their shard files and counts, label names / columns, the source). Point a
data module at it with ``--config.data.path=DIR`` (cifar10, pcam,
imagenet2012: ``data.source=array_record``). Bad inputs follow
``--bad_records=error|skip`` as in training (skips are counted and named).
A record of a converted image is decoded exactly as the loose file is, so
training on ``DIR`` sees the same batches as training on the folder / tar.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import time
from typing import Iterator

import numpy as np

from maskssl.data.base import DataError
from maskssl.data import records as rec_lib

KINDS = ("images", "table", "smiles", "fasta")


class Progress:
  """``\\r[convert] 12,000/50,000 (24.0%) 3,100 rec/s`` on stderr."""

  def __init__(self, total: int | None, label: str, stream=None,
               enabled: bool = True):
    self.total, self.label, self.n = total, label, 0
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self._t0 = self._last = time.perf_counter()

  def update(self, k: int = 1):
    self.n += k
    now = time.perf_counter()
    if self.enabled and now - self._last > 0.5:
      self._last = now
      self._show(now)

  def _show(self, now, end=""):
    rate = self.n / max(now - self._t0, 1e-9)
    if self.total:
      frac = self.n / self.total
      bar = "#" * int(30 * frac)
      txt = (f"[convert] {self.label} [{bar:<30s}] {self.n:,}/{self.total:,}"
             f" ({100 * frac:.1f}%) {rate:,.0f} rec/s")
    else:
      txt = f"[convert] {self.label} {self.n:,} records {rate:,.0f} rec/s"
    self.stream.write("\r" + txt + end)
    self.stream.flush()

  def close(self):
    if self.enabled:
      self._show(time.perf_counter(), "\n")


def detect_kind(src: str) -> str:
  low = src.lower()
  stem = low[:-3] if low.endswith(".gz") else low
  if os.path.isdir(src) or stem.endswith(".tar"):
    return "images"
  if stem.endswith((".fasta", ".fa", ".faa", ".fas")):
    return "fasta"
  if stem.endswith((".smi", ".smiles")):
    return "smiles"
  if stem.endswith((".csv", ".tsv", ".txt")):
    with (gzip.open if low.endswith(".gz") else open)(
        src, "rt", encoding="utf-8", errors="replace") as f:
      first = next((l for l in f if l.strip()), "")
    if first.startswith(">"):
      return "fasta"
    cells = [c.strip().lower() for c in next(csv.reader([first]))] if first \
        else []
    if "smiles" in cells:
      return "smiles"
    try:
      [float(c) for c in cells]
      return "table"
    except ValueError:
      pass
    return "table" if len(cells) > 1 else "smiles"
  raise DataError(f"{src}: cannot tell the kind (folder / .tar / .csv / "
                  ".fasta / .smi); pass --kind")


def _open_text(path: str):
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


# ------------------------------------------------------------- readers --
def image_records(src: str, bad: list, bad_records: str
                  ) -> tuple[dict, dict]:
  """{split: iterator of records}, meta."""
  probe = rec_lib.ImageFiles(src)
  splits = probe.splits or ["all"]
  groups, names = {}, None
  for split in splits:
    files = probe if split == "all" else rec_lib.ImageFiles(
        src, split, class_names=names)
    names = names or files.class_names
    groups[split] = files
  meta = dict(kind="images", label_names=names, source=os.path.abspath(src))

  def gen(files) -> Iterator[dict]:
    for i in range(len(files)):
      data = files.raw(i)
      try:  # check it decodes: a corrupt file is found now, not in training
        rec_lib.decode_image_bytes(data, files.describe(i))
      except DataError as e:
        if bad_records == "error":
          raise DataError(f"bad record {e} (--bad_records=skip skips it)"
                          ) from e
        bad.append(str(e))
        continue
      yield dict(image=data, label=np.int32(files.labels[i]),
                 name=str(files.names[i]))
  return {s: (gen(f), len(f)) for s, f in groups.items()}, meta


def table_records(src: str, bad: list, bad_records: str,
                  label_column: str = "last") -> tuple[dict, dict]:
  if label_column not in ("last", "first", "none"):
    raise DataError(f"--label_column must be last|first|none, got "
                    f"{label_column!r}")
  meta = dict(kind="table", source=os.path.abspath(src),
              label_column=label_column)

  def gen():
    width = None
    with _open_text(src) as f:
      for lineno, cells in enumerate(csv.reader(f), start=1):
        if not cells or all(not c.strip() for c in cells):
          continue
        try:
          vals = np.asarray([float(c) for c in cells], np.float64)
          if width is not None and len(vals) != width:
            raise DataError(f"expected {width} columns, found {len(vals)}")
          if not np.isfinite(vals).all():
            raise DataError("non-finite value")
        except (ValueError, DataError) as e:
          if width is None and "columns" not in meta:
            meta["columns"] = [c.strip() for c in cells]  # header
            continue
          msg = (f"{src}:{lineno}: {e}" if isinstance(e, DataError) else
                 f"{src}:{lineno}: non-numeric cell")
          if bad_records == "error":
            raise DataError(f"bad record {msg} (--bad_records=skip skips "
                            "it)") from None
          bad.append(msg)
          continue
        width = len(vals)
        if label_column == "last":
          yield dict(x=vals[:-1].astype(np.float32), label=vals[-1])
        elif label_column == "first":
          yield dict(x=vals[1:].astype(np.float32), label=vals[0])
        else:
          yield dict(x=vals.astype(np.float32))
  return {"all": (gen(), None)}, meta


def smiles_records(src: str, bad: list, bad_records: str, column: str = ""
                   ) -> tuple[dict, dict]:
  """``{"smiles"}`` records, by the rules of
  :func:`maskssl.data.molecules.read_smiles_file` (so a converted corpus
  packs into the same rows as the file): CSV mode when the first non-blank
  line names ``column`` (default ``smiles``, any case; a bare ``SMILES``
  line, as in MOSES, too), else the first field of every line that is not
  blank or a ``#`` comment. Empty cells are skipped (counted in the
  metadata as ``empty``), as the reader skips them."""
  meta = dict(kind="smiles", source=os.path.abspath(src))
  want = (column or "smiles").lower()
  with _open_text(src) as f:
    first = next((l for l in f if l.strip()), "")
  cells = [c.strip() for c in next(csv.reader([first]))] if first else []
  col = None
  if want in [c.lower() for c in cells]:
    col = [c.lower() for c in cells].index(want)
    meta.update(header=first.strip(), smiles_column=cells[col])
  elif column:
    raise DataError(f"{src}:1: no {column!r} column in header {cells} "
                    "(--smiles_column)")

  def gen():
    with _open_text(src) as f:
      if col is None:
        for line in f:
          if line.strip() and not line.lstrip().startswith("#"):
            yield dict(smiles=line.split()[0])
        return
      # row numbers as the reader counts them (csv rows; row 1 = header)
      for lineno, row in enumerate(csv.reader(f), start=1):
        if lineno == 1 or not row or all(not c.strip() for c in row):
          continue
        if len(row) <= col:
          msg = f"{src}:{lineno}: no {want!r} column value"
          if bad_records == "error":
            raise DataError(f"bad record {msg} (--bad_records=skip skips "
                            "it)")
          bad.append(msg)
          continue
        s = row[col].strip()
        if s:
          yield dict(smiles=s)
        else:
          meta["empty"] = meta.get("empty", 0) + 1
  return {"all": (gen(), None)}, meta


def fasta_records(src: str, bad: list, bad_records: str
                  ) -> tuple[dict, dict]:
  meta = dict(kind="fasta", source=os.path.abspath(src))

  def gen():
    cur = None
    with _open_text(src) as f:
      for lineno, raw in enumerate(f, start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
          continue
        if line.startswith(">"):
          if cur is not None:
            yield from _fasta_done(cur, src, bad, bad_records)
          parts = line[1:].split(None, 1)
          cur = dict(id=parts[0] if parts else "", description=parts[1]
                     if len(parts) > 1 else "", seq=[], line=lineno)
          continue
        if cur is None:
          raise DataError(f"{src}:{lineno}: sequence line before the first "
                          "'>' header (not FASTA?)")
        cur["seq"].append("".join(line.split()).upper().rstrip("*"))
    if cur is not None:
      yield from _fasta_done(cur, src, bad, bad_records)
  return {"all": (gen(), None)}, meta


def _fasta_done(cur, src, bad, bad_records):
  seq = "".join(cur["seq"])
  if not cur["id"] or not seq:
    msg = (f"{src}:{cur['line']}: record {cur['id']!r} has "
           f"{'no ID' if not cur['id'] else 'an empty sequence'}")
    if bad_records == "error":
      raise DataError(f"bad record {msg}")
    bad.append(msg)
    return
  yield dict(id=cur["id"], description=cur["description"], sequence=seq)


# -------------------------------------------------------------- writer --
def _writer(path: str, options: str):
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  return ArrayRecordWriter(path, options)


def convert(src: str, out: str, kind: str = "auto",
            records_per_shard: int = 50_000, label_column: str = "last",
            bad_records: str = "error", progress: bool = True,
            smiles_column: str = "") -> dict:
  """Write ``out``; returns the metadata (also in ``out/META_FILE``)."""
  if not os.path.exists(src):
    raise DataError(f"--src {src!r} does not exist")
  if bad_records not in ("error", "skip"):
    raise DataError(f"--bad_records must be error|skip, got {bad_records!r}")
  kind = detect_kind(src) if kind == "auto" else kind
  if kind not in KINDS:
    raise DataError(f"--kind must be auto or one of {KINDS}, got {kind!r}")
  bad: list[str] = []
  if kind == "images":
    groups, meta = image_records(src, bad, bad_records)
  elif kind == "table":
    groups, meta = table_records(src, bad, bad_records, label_column)
  elif kind == "smiles":
    groups, meta = smiles_records(src, bad, bad_records, smiles_column)
  else:
    groups, meta = fasta_records(src, bad, bad_records)
  os.makedirs(out, exist_ok=True)
  # images are JPEG/PNG already: compressing again only costs reads
  options = "group_size:1," + ("uncompressed" if kind == "images"
                               else "zstd:3")
  t0 = time.perf_counter()
  meta["splits"] = {}
  for split, (records, total) in groups.items():
    files, count, w = [], 0, None
    bar = Progress(total, split, enabled=progress)
    for r in records:
      if w is None or count % records_per_shard == 0 and count:
        if w is not None:
          w.close()
        files.append(f"{split}-{len(files):05d}.array_record")
        w = _writer(os.path.join(out, files[-1]), options)
      w.write(rec_lib.pack_record(r))
      count += 1
      bar.update()
    if w is not None:
      w.close()
    bar.close()
    if not count:
      raise DataError(f"{src}: no records" + (f" in split {split!r}"
                                              if split != "all" else ""))
    meta["splits"][split] = dict(files=files, count=count)
  meta.update(skipped=len(bad), seconds=round(time.perf_counter() - t0, 2))
  if bad:
    print(f"[convert] skipped {len(bad)} bad record(s); first: {bad[0]}",
          file=sys.stderr, flush=True)
    meta["skipped_examples"] = bad[:20]
  with open(os.path.join(out, rec_lib.META_FILE), "w") as f:
    json.dump(meta, f, indent=2, default=rec_lib.json_default)
  return meta


def main(argv=None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  ap = argparse.ArgumentParser(
      prog="python -m maskssl.data.convert",
      description="Convert an image folder / tar, a CSV, a SMILES or FASTA "
      "file to ArrayRecord shards for the grain loader.")
  ap.add_argument("--src", required=True,
                  help="FOLDER | TAR | CSV[.gz] | FASTA[.gz] | SMILES file")
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--kind", default="auto", choices=("auto",) + KINDS)
  ap.add_argument("--records_per_shard", type=int, default=50_000)
  ap.add_argument("--label_column", default="last",
                  choices=("last", "first", "none"),
                  help="tables: where the label is (HIGGS.csv: first)")
  ap.add_argument("--smiles_column", default="",
                  help="SMILES CSVs: the column (default: a 'smiles' column, "
                  "any case); as data.corpus_column")
  ap.add_argument("--bad_records", default="error", choices=("error", "skip"))
  ap.add_argument("--quiet", action="store_true", help="no progress bar")
  a = ap.parse_args(argv)
  try:
    meta = convert(a.src, a.out, a.kind, a.records_per_shard, a.label_column,
                   a.bad_records, progress=not a.quiet,
                   smiles_column=a.smiles_column)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  counts = {s: v["count"] for s, v in meta["splits"].items()}
  print(f"wrote {a.out}: {meta['kind']} {counts}"
        + (f", {meta['skipped']} skipped" if meta.get("skipped") else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
