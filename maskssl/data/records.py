"""Random-access, file-backed record sources for the grain loader.

Each source has ``len()``, ``source[i]`` (one record: a dict of numpy
arrays), ``describe(i)`` (``file[member]`` / ``file:line`` for messages) and
``meta``; it keeps only an index in memory (byte offsets, member offsets),
opens its files lazily in each process (so it pickles into grain worker
processes) and reads a record with one ``pread``:

* :class:`ArrayRecordSource` -- shards written by ``python -m
  maskssl.data.convert`` (or any ArrayRecord of :func:`pack_record` bytes);
* :class:`TfdsSource` -- ``tfds.data_source(name, split)`` (TFDS data sets
  prepared in array_record format; nothing is downloaded);
* :class:`ImageFiles` -- an image folder or a tar (WebDataset-style layout
  ``[split/]class/name.jpg``), decoded on read (Pillow);
* :class:`LineIndex` -- byte offsets of the lines of a text file (CSV rows,
  SMILES lines) and :func:`fasta_index` (FASTA records);
* :class:`NpzArrays` -- the arrays of an ``.npz`` (uncompressed members
  are read row by row from the file, compressed ones are loaded);
* :class:`Subset` / :class:`Mapped` -- an index subset / a per-record
  transform of another source.

``.gz`` text files are decompressed once into ``data.cache_dir`` (default
``$MASKSSL_CACHE`` or ``~/.cache/maskssl``) so that they can be indexed.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from maskssl.data.base import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLIT_DIRS = {"pretrain": "pretrain", "train": "train", "val": "val",
              "valid": "val", "validation": "val", "test": "test"}
META_FILE = "maskssl_records.json"


# ------------------------------------------------------------------ codec --
def pack_record(record: dict) -> bytes:
  """A dict of numpy arrays / numbers / str / bytes -> msgpack bytes."""
  import msgpack  # pylint: disable=import-outside-toplevel

  def enc(o):
    if isinstance(o, np.ndarray):
      o = np.ascontiguousarray(o)
      return msgpack.ExtType(1, msgpack.packb(
          [o.dtype.str, list(o.shape), o.tobytes()], use_bin_type=True))
    if isinstance(o, np.generic):
      return o.item()
    raise TypeError(f"cannot pack {type(o).__name__}")
  return msgpack.packb(record, default=enc, use_bin_type=True)


def unpack_record(data: bytes) -> dict:
  import msgpack  # pylint: disable=import-outside-toplevel

  def dec(code, payload):
    if code != 1:
      return msgpack.ExtType(code, payload)
    dtype, shape, raw = msgpack.unpackb(payload, raw=False)
    return np.frombuffer(raw, np.dtype(dtype)).reshape(shape)
  return msgpack.unpackb(data, ext_hook=dec, raw=False)


# --------------------------------------------------------------- decoding --
def decode_image_bytes(data: bytes, name: str, resize: Optional[int] = None,
                       crop: Optional[int] = None) -> np.ndarray:
  """Encoded image bytes -> uint8 (H, W, 3), exactly as
  :func:`maskssl.data.images.decode_image` decodes the same file."""
  from maskssl.data.images import decode_image_bytes as decode  # pylint: disable=import-outside-toplevel
  return decode(data, name, resize, crop)


def resize_center_crop(img: np.ndarray, size: int, name: str = "") -> np.ndarray:
  """Shorter side to ``size`` (bilinear), centre crop ``size`` x ``size``:
  a fixed host size for variable-size images (ImageNet)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  img = np.asarray(img)
  if img.ndim == 2:
    img = np.repeat(img[:, :, None], 3, 2)
  img = img[..., :3]
  h, w = img.shape[:2]
  if min(h, w) != size:
    s = size / min(h, w)
    im = Image.fromarray(img).resize((max(size, round(w * s)),
                                      max(size, round(h * s))),
                                     Image.BILINEAR)
    img = np.asarray(im, np.uint8)
  h, w = img.shape[:2]
  t, l = (h - size) // 2, (w - size) // 2
  return np.ascontiguousarray(img[t:t + size, l:l + size])


# -------------------------------------------------------------- file I/O --
class _File:
  """A read-only file descriptor opened lazily per process (pickles as its
  path; ``os.pread`` is thread-safe)."""

  def __init__(self, path: str):
    self.path = path
    self._fd, self._pid = None, None

  def __getstate__(self):
    return {"path": self.path}

  def __setstate__(self, s):
    self.__init__(s["path"])

  def pread(self, size: int, offset: int) -> bytes:
    if self._fd is None or self._pid != os.getpid():
      self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
    data = os.pread(self._fd, int(size), int(offset))
    if len(data) != size:
      raise DataError(f"{self.path}: short read at byte {offset} ({len(data)}"
                      f" of {size} bytes; file truncated?)")
    return data


def cache_dir(data_config=None) -> str:
  """``data_config.cache_dir`` (a :class:`~maskssl.data.base.LoaderConfig`),
  else ``$MASKSSL_CACHE``, else ``~/.cache/maskssl``."""
  own = data_config.cache_dir if data_config is not None else ""
  return own or os.environ.get("MASKSSL_CACHE", "") or os.path.join(
      os.path.expanduser("~"), ".cache", "maskssl")


def seekable(path: str, cache: str) -> str:
  """``path``, or for ``*.gz`` an uncompressed copy in ``cache`` (made once,
  keyed by the file's path, size and mtime)."""
  if not path.endswith(".gz"):
    return path
  st = os.stat(path)
  key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
                     .encode()).hexdigest()[:16]
  out = os.path.join(cache, f"{os.path.basename(path)[:-3]}.{key}")
  if os.path.exists(out):
    return out
  os.makedirs(cache, exist_ok=True)
  tmp = f"{out}.tmp{os.getpid()}"
  t0 = time.perf_counter()
  try:
    with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
      shutil.copyfileobj(src, dst, 1 << 22)
  except (OSError, EOFError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise DataError(f"{path}: cannot decompress ({type(e).__name__}: {e})"
                    ) from e
  os.replace(tmp, out)
  print(f"[data] decompressed {path} -> {out} ({time.perf_counter() - t0:.1f}"
        " s, once; data.cache_dir)", file=sys.stderr, flush=True)
  return out


# ------------------------------------------------------------- text lines --
class LineIndex:
  """Start offsets and lengths (without ``\\r\\n``) of the non-empty lines of
  a text file; 12 bytes per line in memory."""

  def __init__(self, path: str, chunk: int = 1 << 20):
    self.path = path
    size = os.path.getsize(path)
    # pass 1 counts the lines, pass 2 fills preallocated arrays: no growing
    # lists (the peak is the index itself plus one chunk)
    count = 0
    with open(path, "rb") as f:
      while True:
        buf = f.read(chunk)
        if not buf:
          break
        count += int(np.count_nonzero(np.frombuffer(buf, np.uint8) == 10))
        last = buf[-1]
    tail = 1 if size and last != 10 else 0   # last line without a newline
    st = np.empty(count + tail, np.int64)
    ln = np.empty(count + tail, np.int32)
    with open(path, "rb") as f:
      base, carry, last, k = 0, 0, 0, 0   # carry: start of the open line
      while True:
        buf = f.read(chunk)
        if not buf:
          break
        a = np.frombuffer(buf, np.uint8)
        loc = np.flatnonzero(a == 10)
        if len(loc):
          cr = np.empty(len(loc), bool)   # CRLF: drop the \r
          inner = loc > 0
          cr[inner] = a[loc[inner] - 1] == 13
          cr[~inner] = last == 13
          nl = loc + base
          s = st[k:k + len(loc)]
          s[0] = carry
          s[1:] = nl[:-1] + 1
          ln[k:k + len(loc)] = nl - s - cr
          k += len(loc)
          carry = int(nl[-1]) + 1
        last = int(a[-1])
        base += len(buf)
      if tail:
        st[k], ln[k] = carry, size - carry - (last == 13)
    self.starts, self.lengths = st, ln
    self.line_numbers, self.first_line = None, 1
    self.file = _File(path)
    keep = ln > 0
    if not keep.all():
      self.select(keep)

  def __len__(self) -> int:
    return len(self.starts)

  def line(self, i: int) -> bytes:
    return self.file.pread(int(self.lengths[i]), int(self.starts[i]))

  def lineno(self, i: int) -> int:
    """1-based line number of indexed line ``i`` in the file."""
    return int(self.line_numbers[i]) if self.line_numbers is not None \
        else int(i) + self.first_line

  def select(self, keep: np.ndarray):
    """Keep only the lines ``keep`` (bool mask), in order. Dropping a head
    and / or tail (a header, ``max_rows``) is a view: no n-sized copies."""
    keep = np.asarray(keep, bool)
    idx = np.flatnonzero(keep) if not keep.all() else None
    if idx is None:
      return
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx) or not len(idx):
      lo, hi = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)
      self.starts, self.lengths = self.starts[lo:hi], self.lengths[lo:hi]
      if self.line_numbers is not None:
        self.line_numbers = self.line_numbers[lo:hi]
      else:
        self.first_line += lo
      return
    ln = (self.line_numbers[idx] if self.line_numbers is not None
          else idx.astype(np.int64) + self.first_line)
    self.starts, self.lengths = self.starts[idx], self.lengths[idx]
    self.line_numbers = ln

  def chunks(self, size: int = 1 << 16):
    """(first index, [bytes of lines i .. i + size - 1])."""
    with open(self.path, "rb") as f:
      for s in range(0, len(self), size):
        e = min(len(self), s + size)
        lo = int(self.starts[s])
        f.seek(lo)
        blob = f.read(int(self.starts[e - 1] + self.lengths[e - 1]) - lo)
        yield s, [blob[a - lo:a - lo + n] for a, n in
                  zip(self.starts[s:e].tolist(), self.lengths[s:e].tolist())]


def fasta_index(path: str) -> tuple[LineIndex, np.ndarray, np.ndarray]:
  """FASTA records: ``(lines, first line index, line count)`` per record;
  a sequence line before the first header is a DataError."""
  lines = LineIndex(path)
  if not len(lines):
    raise DataError(f"{path}: no FASTA records")
  first = np.empty(len(lines), np.uint8)
  for s, chunk in lines.chunks():
    first[s:s + len(chunk)] = [c[0] for c in chunk]
  heads = np.flatnonzero(first == ord(">"))
  real = first != ord(";")
  if not len(heads) or real[:heads[0]].any():
    j = int(np.flatnonzero(real)[0]) if real.any() else 0
    raise DataError(f"{path}:{lines.lineno(j)}: sequence line before the "
                    "first '>' header (not FASTA?)")
  counts = np.diff(np.concatenate([heads, [len(lines)]]))
  return lines, heads.astype(np.int64), counts.astype(np.int64)


# ----------------------------------------------------------- image files --
def _tar_members(path: str):
  """(names, data offsets, sizes) of the regular files of an uncompressed
  tar, from its 512-byte headers (tarfile as the fallback for pax/GNU long
  names and compressed tars)."""
  if path.lower().endswith((".gz", ".tgz", ".bz2", ".xz")):
    raise DataError(f"{path}: a compressed tar cannot be read randomly; use "
                    "an uncompressed .tar or convert it to ArrayRecord "
                    "(python -m maskssl.data.convert)")
  names, offs, sizes = [], [], []
  try:
    with open(path, "rb") as f:
      pos = 0
      while True:
        f.seek(pos)
        h = f.read(512)
        if len(h) < 512 or h == b"\0" * 512:
          break
        kind = h[156:157]
        if kind in (b"x", b"g", b"L", b"K"):
          raise tarfile.ReadError("extended headers")
        raw = h[124:136].strip(b"\0 ")
        size = int(raw, 8) if raw else 0
        name = h[0:100].rstrip(b"\0").decode("utf-8", "replace")
        if h[257:262] == b"ustar":
          prefix = h[345:500].rstrip(b"\0").decode("utf-8", "replace")
          name = f"{prefix}/{name}" if prefix else name
        if kind in (b"0", b"\0", b"7"):
          names.append(name)
          offs.append(pos + 512)
          sizes.append(size)
        pos += 512 + (size + 511) // 512 * 512
  except (tarfile.ReadError, ValueError):
    names, offs, sizes = [], [], []
    try:
      with tarfile.open(path) as tf:
        for m in tf:
          if m.isfile():
            names.append(m.name)
            offs.append(m.offset_data)
            sizes.append(m.size)
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataError(f"{path}: cannot read tar ({type(e).__name__}: {e})"
                      ) from e
  return names, np.asarray(offs, np.int64), np.asarray(sizes, np.int64)


def _split_and_class(rel: str) -> tuple[str, str]:
  """``[split/]class/file`` -> (split or "", class or "")."""
  parts = [p for p in rel.split("/") if p and p != "."]
  if len(parts) >= 3 and parts[-3].lower() in SPLIT_DIRS:
    return SPLIT_DIRS[parts[-3].lower()], parts[-2]
  if len(parts) == 2 and parts[0].lower() in SPLIT_DIRS:
    return SPLIT_DIRS[parts[0].lower()], ""
  return "", parts[-2] if len(parts) >= 2 else ""


class ImageFiles:
  """The images of a folder or an uncompressed tar, listed (not decoded)
  at construction. Layout ``[split/]class/name.{jpg,png,...}``: the class
  is the parent folder (label = index in ``class_names`` when given, else
  in the sorted class names of the first split); ``split`` selects one
  split folder. Records: ``image`` uint8 (H, W, 3) (``resize`` shorter
  side, ``crop`` centre), ``label`` int32 (-1 without class folders)."""

  def __init__(self, path: str, split: str | None = None,
               class_names: Sequence[str] | None = None,
               resize: int | None = None, crop: int | None = None):
    self.path, self.resize, self.crop = path, resize, crop
    if not os.path.exists(path):
      raise DataError(f"{path}: no such file or directory")
    self.is_tar = os.path.isfile(path)
    if self.is_tar:
      names, offs, sizes = _tar_members(path)
    else:
      names = []
      for d, subdirs, files in os.walk(path):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        rel = os.path.relpath(d, path)
        names += [f if rel == "." else f"{rel}/{f}" for f in sorted(files)]
      offs = sizes = None
    keep = [i for i, n in enumerate(names)
            if n.lower().endswith(IMAGE_EXTENSIONS)
            and not os.path.basename(n).startswith(".")]
    info = [_split_and_class(names[i]) for i in keep]
    self.splits = sorted({s for s, _ in info if s})
    if split is not None:
      if split not in self.splits:
        raise DataError(f"{path}: no {split!r} split folder (has "
                        f"{self.splits or 'none'})")
      sel = [k for k, (s, _) in enumerate(info) if s == split]
      keep, info = [keep[k] for k in sel], [info[k] for k in sel]
    if not keep:
      raise DataError(f"{path}: no image files (*{'|*'.join(IMAGE_EXTENSIONS)})"
                      + (f" in split {split!r}" if split else ""))
    classes = sorted({c for _, c in info if c})
    if class_names is not None and set(classes) <= set(class_names):
      classes = list(class_names)
    self.class_names = classes
    cls = {c: k for k, c in enumerate(classes)}
    self.labels = np.asarray([cls.get(c, -1) if c else -1 for _, c in info],
                             np.int32)
    # folder order = sorted class folders, then sorted files (as
    # images.list_image_folder and torchvision ImageFolder)
    if not self.is_tar:
      order = sorted(range(len(keep)), key=lambda k: (
          self.labels[k], names[keep[k]]))
      keep = [keep[k] for k in order]
      self.labels = self.labels[order]
    self.names = np.asarray([names[i] for i in keep], dtype=object)
    if self.is_tar:
      self.offsets, self.sizes = offs[keep], sizes[keep]
      self.file = _File(path)
    self.meta = dict(source=path, label_names=list(classes),
                     num_classes=len(classes))

  def __len__(self) -> int:
    return len(self.names)

  def describe(self, i: int) -> str:
    return (f"{self.path}[{self.names[i]}]" if self.is_tar
            else os.path.join(self.path, self.names[i]))

  def raw(self, i: int) -> bytes:
    if self.is_tar:
      return self.file.pread(int(self.sizes[i]), int(self.offsets[i]))
    with open(os.path.join(self.path, self.names[i]), "rb") as f:
      return f.read()

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    if self.is_tar:
      img = decode_image_bytes(self.raw(i), self.describe(i), self.resize,
                               self.crop)
    else:
      from maskssl.data.images import decode_image  # pylint: disable=import-outside-toplevel
      img = decode_image(self.describe(i), self.resize, self.crop)
    return {"image": img, "label": self.labels[i]}


# ------------------------------------------------------------ ArrayRecord --
def read_records_meta(path: str) -> dict:
  f = os.path.join(path, META_FILE)
  if not os.path.isfile(f):
    raise DataError(f"{path}: no {META_FILE} (not written by python -m "
                    "maskssl.data.convert?)")
  with open(f) as fh:
    return json.load(fh)


def is_records_dir(path: str) -> bool:
  return bool(path) and os.path.isfile(os.path.join(path, META_FILE))


class ArrayRecordSource:
  """One split of a converted directory (``meta[splits][split][files]``),
  or explicit shard paths; records are :func:`unpack_record` dicts, with
  ``image`` bytes decoded (``resize``/``crop``)."""

  def __init__(self, path: str, split: str | None = None,
               files: Sequence[str] | None = None,
               resize: int | None = None, crop: int | None = None):
    import grain  # pylint: disable=import-outside-toplevel
    self.path, self.resize, self.crop = path, resize, crop
    self.meta = dict(read_records_meta(path)) if files is None else {}
    if files is None:
      splits = self.meta.get("splits", {})
      if split is None:
        split = "all" if "all" in splits else next(iter(splits), None)
      if split not in splits:
        raise DataError(f"{path}: no {split!r} split (has {sorted(splits)})")
      files = [os.path.join(path, f) for f in splits[split]["files"]]
    self.split = split
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise DataError(f"{path}: shard {missing[0]} is missing")
    self._src = grain.sources.ArrayRecordDataSource(list(files))
    self._len = len(self._src)

  def __len__(self) -> int:
    return self._len

  def describe(self, i: int) -> str:
    return f"{self.path}[{self.split}:{int(i)}]"

  def raw_record(self, i: int) -> dict:
    """The stored record (image bytes not decoded)."""
    return unpack_record(self._src[int(i)])

  def raw_records(self, rows: Sequence[int]) -> list[dict]:
    """The stored records ``rows`` in one batched read (not decoded); an
    unreadable one is a DataError naming it."""
    rows = [int(r) for r in rows]
    try:
      raw = self._src.__getitems__(rows)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f"{self.path}[{self.split}:{rows[0]}..{rows[-1]}]: "
                      f"cannot read records ({type(e).__name__}: {e})"
                      ) from e
    out = []
    for r, b in zip(rows, raw):
      try:
        out.append(unpack_record(b))
      except Exception as e:  # pylint: disable=broad-except
        raise DataError(f"{self.describe(r)}: cannot read record "
                        f"({type(e).__name__}: {e})") from e
    return out

  def __getitem__(self, i: int) -> dict:
    try:
      rec = unpack_record(self._src[int(i)])
    except DataError:
      raise
    except Exception as e:  # corrupt shard / record
      raise DataError(f"{self.describe(i)}: cannot read record "
                      f"({type(e).__name__}: {e})") from e
    img = rec.get("image")
    if isinstance(img, (bytes, bytearray)):
      rec["image"] = decode_image_bytes(img, self.describe(i), self.resize,
                                        self.crop)
    return rec


# ------------------------------------------------------------------- TFDS --
class TfdsSource:
  """``tfds.data_source(name, split)`` (array_record, prepared locally),
  opened lazily in each process."""

  def __init__(self, name: str, split: str, data_dir: str = ""):
    self.name, self.split, self.data_dir = name, split, data_dir or None
    self._src, self._pid = None, None
    self._len = len(self._open())
    self.meta = dict(source=f"tfds:{name}/{split}")

  def __getstate__(self):
    return dict(name=self.name, split=self.split, data_dir=self.data_dir,
                _len=self._len, meta=self.meta)

  def __setstate__(self, s):
    self.__dict__.update(s)
    self._src, self._pid = None, None

  def _open(self):
    if self._src is None or self._pid != os.getpid():
      try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      except ImportError as e:
        raise DataError("TFDS sources need tensorflow-datasets") from e
      try:
        self._src = tfds.data_source(self.name, split=self.split,
                                     data_dir=self.data_dir, download=False)
      except Exception as e:
        raise DataError(
            f"TFDS {self.name!r} split {self.split!r} is not prepared in "
            f"array_record format (data_dir={self.data_dir or 'default'}): "
            f"{type(e).__name__}: {str(e)[:300]}. Prepare it once with `tfds "
            f"build {self.name} --file_format=array_record`, or convert your "
            "files with python -m maskssl.data.convert") from e
      self._pid = os.getpid()
    return self._src

  def __len__(self) -> int:
    return self._len

  def describe(self, i: int) -> str:
    return f"tfds:{self.name}/{self.split}[{int(i)}]"

  def __getitem__(self, i: int) -> dict:
    return dict(self._open()[int(i)])

  def read_many(self, rows: Sequence[int]) -> list[dict]:
    """Records ``rows`` in one batched read (``__getitems__``)."""
    src = self._open()
    rows = [int(r) for r in rows]
    many = getattr(src, "__getitems__", None)
    return [dict(r) for r in (many(rows) if many else map(src.__getitem__,
                                                           rows))]


# -------------------------------------------------------------------- npz --
class NpzArrays:
  """Named arrays of an ``.npz`` readable by row: uncompressed members are
  read from the file (``pread`` of the row's bytes), compressed ones are
  loaded into memory."""

  def __init__(self, path: str, keys: Sequence[str]):
    import zipfile  # pylint: disable=import-outside-toplevel
    self.path = path
    self.file = _File(path)
    self._info, self._loaded = {}, {}
    try:
      with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for k in keys:
          zi = z.getinfo(f"{k}.npy")
          if zi.compress_type != zipfile.ZIP_STORED:
            with np.load(path, allow_pickle=False) as npz:
              self._loaded[k] = npz[k]
            continue
          f.seek(zi.header_offset)
          head = f.read(30)
          nlen, xlen = int.from_bytes(head[26:28], "little"), int.from_bytes(
              head[28:30], "little")
          start = zi.header_offset + 30 + nlen + xlen
          f.seek(start)
          version = np.lib.format.read_magic(f)
          read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
          shape, fortran, dtype = read(f)
          if fortran or dtype.hasobject:
            with np.load(path, allow_pickle=False) as npz:
              self._loaded[k] = npz[k]
            continue
          self._info[k] = (f.tell(), tuple(shape), dtype)
    except KeyError as e:
      raise DataError(f"{path}: no array {e} in the .npz") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise DataError(f"{path}: cannot read .npz ({type(e).__name__}: {e})"
                      ) from e
    lens = {k: v[1][0] for k, v in self._info.items()}
    lens.update({k: len(v) for k, v in self._loaded.items()})
    if len(set(lens.values())) > 1:
      raise DataError(f"{path}: arrays have different lengths {lens}")
    self._len = next(iter(lens.values()))

  def __len__(self) -> int:
    return self._len

  def describe(self, i: int) -> str:
    return f"{self.path}[{int(i)}]"

  def row(self, key: str, i: int) -> np.ndarray:
    if key in self._loaded:
      return self._loaded[key][int(i)]
    off, shape, dtype = self._info[key]
    n = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    return np.frombuffer(self.file.pread(n, off + int(i) * n), dtype
                         ).reshape(shape[1:])

  def __getitem__(self, i: int) -> dict:
    keys = list(self._info) + list(self._loaded)
    return {k: self.row(k, i) for k in keys}


# ---------------------------------------------------------- combinators --
class Subset:
  """Records ``indices`` of ``source`` (a split carved from a larger set)."""

  def __init__(self, source, indices, meta: dict | None = None):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    self.meta = dict(getattr(source, "meta", {}) or {}, **(meta or {}))
    self.in_memory = bool(getattr(source, "in_memory", False))

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict:
    return self.source[int(self.indices[int(i)])]

  def describe(self, i: int) -> str:
    from maskssl.data.grain_source import describe  # pylint: disable=import-outside-toplevel
    return describe(self.source, int(self.indices[int(i)]))


class Mapped:
  """``fn(source[i])`` (``fn`` must pickle: a module-level function or a
  functools.partial of one)."""

  def __init__(self, source, fn: Callable[[dict], dict],
               meta: dict | None = None):
    self.source, self.fn = source, fn
    self.meta = dict(getattr(source, "meta", {}) or {}, **(meta or {}))

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    return self.fn(self.source[int(i)])

  def describe(self, i: int) -> str:
    from maskssl.data.grain_source import describe  # pylint: disable=import-outside-toplevel
    return describe(self.source, i)


def read_all(source, what: str = "", progress: bool = False) -> dict:
  """Every record of ``source`` stacked in memory (small splits that
  evaluators need); bad records raise."""
  from maskssl.data.grain_source import read_records  # pylint: disable=import-outside-toplevel
  n = len(source)
  if n == 0:
    raise DataError(f"{what or source}: no records")
  parts = []
  step = 4096
  for s in range(0, n, step):
    parts.append(read_records(source, np.arange(s, min(n, s + step))))
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def json_default(o: Any):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


# ------------------------------------------------------------ config glue --
def file_backed(data_config, auto: bool) -> bool:
  """Whether to read the training split through a file-backed source:
  ``data.in_memory`` True/False forces it, ``"auto"`` (default) -> ``auto``
  (the data module's choice: images and big text files from files, the
  embedded samples in memory)."""
  v = data_config.in_memory
  if v is None or (isinstance(v, str) and v.lower() in ("auto", "")):
    return bool(auto)
  if isinstance(v, str):
    return v.lower() in ("0", "false", "no", "off")
  return not bool(v)


def text_size(path: str) -> int:
  """Bytes of a text file, uncompressed (``.gz``: the size in its trailer,
  modulo 4 GiB)."""
  if path.endswith(".gz"):
    with open(path, "rb") as f:
      f.seek(-4, os.SEEK_END)
      return max(int.from_bytes(f.read(4), "little"), os.path.getsize(path))
  return os.path.getsize(path)


def big_file(data_config, *paths: str) -> bool:
  """Any of ``paths`` (uncompressed) larger than ``data.in_memory_max_mb``
  (default 32)."""
  limit = float(data_config.in_memory_max_mb) * 2 ** 20
  return any(p and os.path.isfile(p) and text_size(p) > limit
             for p in paths)


def image_label(rec: dict) -> dict:
  """An image record reduced to ``image`` uint8 and ``label`` int32."""
  img = np.asarray(rec["image"])
  if img.dtype != np.uint8:
    raise DataError(f"image has dtype {img.dtype}, expected uint8")
  if img.ndim == 2:
    img = np.repeat(img[:, :, None], 3, 2)
  elif img.shape[-1] == 1:
    img = np.repeat(img, 3, -1)
  return {"image": img[..., :3], "label": np.int32(rec.get("label", -1))}
