r"""Embed your own data with a trained encoder (like ``lightly-embed``)::

    python -m maskssl.embed --workdir=RUN [--step=N] \
        [--data.path=FILE_OR_DIR] [--data.<key>=VALUE ...] [--split=test] \
        --out=emb.npy|emb.csv [--batch_size=256]

The run is restored with :func:`maskssl.load` (newest checkpoint, or
``--step``) and every example of ``--data.path`` is preprocessed exactly as
in training, then encoded with the method's eval-mode ``encode``:

* HIGGS (``higgs``): a CSV as ``maskssl.data.tabular.read_csv`` reads it
  (28 features + a 0/1 label; ``--data.label_column=first`` for UCI
  HIGGS.csv, ``none`` for features only) or an ``.npz`` with ``features``
  [+ ``label``], z-scored with the run's **pretraining** statistics
  (``enc.preprocessing``), never the new file's. id = 0-based data row.
* Images (``cifar10``, ``pcam``: ResNet / ViT runs; ``cifar10_pixels``: SMA
  one token per pixel): a folder (recursive), a ``.tar[.gz]`` of JPEG/PNG,
  an ``.npz`` (``images``/``labels``, ``<split>_images``, CIFAR rows
  ``<split>_data``) or one image file. Labels from the class folder names
  (CIFAR / the run's class names when they match). ResNet/ViT runs: images
  of another size are resized (shorter side, bilinear) and centre-cropped to
  the run's input size; pixel runs: tokens by the training path
  (``maskssl.data.pixels.pixel_tokens``: resize to ``data.image_size``,
  ImageNet normalisation). id = relative path / member name / ``split/i``.
* SMILES (``moleculenet``): a CSV with a ``smiles`` column (label: the
  task's column, ``--data.label_column=...`` to choose) or one SMILES per
  line; byte tokens, ``data.max_len``, one molecule per row (not packed).
  id = the SMILES.
* Proteins (``proteins``): FASTA or a CSV/TSV with a ``sequence``/``seq``
  column; byte tokens, ``data.max_len``. id = the record ID.

Without ``--data.path`` the run's own configured data is embedded: the
``--split`` split(s) (default ``test``; a comma list, or ``all`` = train,
val, test where they exist) through ``enc.load_data``, ids ``split/i``
(``pretrain`` is allowed too, but for ``cifar10_pixels`` it holds the
offline crops and for ``moleculenet`` packed rows, not one row per example).
``--data.<key>=VALUE`` overrides the run's data config (unknown keys are
errors; values are parsed as the key's type).

Output:
* ``emb.npy``: float32 ``(N, D)``, and beside it ``emb.ids.csv`` with the
  header ``id[,label[,label_name]]`` and one row per embedding row;
* ``emb.csv``: one row per example, ``id[,label[,label_name]],e0..e{D-1}``
  (floats with 9 significant digits: float32 round-trips exactly).

A progress bar goes to stderr (tqdm when installed). Bad input (missing
file, unreadable image, unparsable row) exits with status 2 and a message
naming the file and line / member.
"""
from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import json
import os
import sys
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from maskssl.config_utils import ConfigError
from maskssl.data.base import DataError


@dataclasses.dataclass
class Records:
  """What to embed: ids, labels and the preprocessed inputs in chunks."""
  ids: list
  labels: Optional[np.ndarray]
  label_names: Optional[list]
  chunks: Callable[[int, int], dict]  # (lo, hi) -> encode inputs of rows
  source: str = ""

  def __len__(self):
    return len(self.ids)


# ------------------------------------------------------------- per domain --
def _label_names(enc) -> Optional[list]:
  prep = enc.preprocessing
  names = prep.get("label_names") or prep.get("class_names")
  if names:
    return list(names)
  name = enc.config.data.get("name")
  if name == "proteins" and enc.data_config().task == "deeploc":
    from maskssl.data.proteins import DEEPLOC_CLASSES
    return list(DEEPLOC_CLASSES)
  if name in ("cifar10", "cifar10_pixels"):
    from maskssl.data.cifar import LABEL_NAMES
    return list(LABEL_NAMES)
  return None


def _arrays_records(arrays: dict, ids, labels, names, source) -> Records:
  return Records(list(ids), labels, names,
                 lambda lo, hi: {k: v[lo:hi] for k, v in arrays.items()},
                 source)


def higgs_records(enc, path: str, cfg) -> Records:
  """A HIGGS CSV / .npz, z-scored with the run's pretraining statistics."""
  from maskssl.data import tabular
  if path.lower().endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as z:
        if "features" not in z.files:
          raise DataError(f"{path}: no 'features' array (has {z.files})")
        x = np.asarray(z["features"], np.float32)
        y = (np.asarray(z["label"]).astype(np.int32) if "label" in z.files
             else None)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{path}: cannot read .npz ({type(e).__name__}: {e})"
                      ) from e
    if x.ndim != 2 or x.shape[1] != tabular.NUM_FEATURES:
      raise DataError(f"{path}: features must be (N, {tabular.NUM_FEATURES})"
                      f", got {x.shape}")
  else:
    x, y = tabular.read_csv(path, label_column=cfg["label_column"],
                            max_rows=int(cfg["max_rows"] or 0))
  norm = cfg["feature_norm"]
  if norm == "zscore":
    prep = enc.preprocessing
    if "feature_mean" not in prep:
      raise ConfigError("the run z-scores its features but its data meta "
                        "has no feature_mean / feature_std")
    # As tabular.load_split does it (float64 statistics and arithmetic,
    # then float32), so rows match the training inputs bitwise (tested).
    mean = np.asarray(prep["feature_mean"], np.float64)
    std = np.asarray(prep["feature_std"], np.float64)
    x = (x - mean) / std
  arrays = dict(x=x.astype(np.float32)[..., None],
                valid=np.ones(x.shape, bool))
  return _arrays_records(arrays, [str(i) for i in range(len(x))], y,
                         ["background", "signal"] if y is not None else None,
                         path)


def _fit(img: np.ndarray, shape, name: str) -> np.ndarray:
  """Resize (shorter side, bilinear) + centre-crop to ``shape`` (H, W)."""
  h, w = shape
  if img.shape[:2] == (h, w):
    return img
  from PIL import Image  # pylint: disable=import-outside-toplevel
  im = Image.fromarray(img)
  s = max(h / img.shape[0], w / img.shape[1])
  size = (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s)))
  im = im.resize(size, Image.BILINEAR)
  a = np.asarray(im, np.uint8)
  t, l = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
  out = a[t:t + h, l:l + w]
  if out.shape[:2] != (h, w):
    raise DataError(f"{name}: cannot fit image {img.shape} to {shape}")
  return np.ascontiguousarray(out)


def image_records(enc, path: str, cfg) -> Records:
  """Images for a ResNet/ViT run (uint8 at the run's size) or for an SMA
  pixel run (tokens by the training path)."""
  from maskssl.data import images as images_lib
  recs = images_lib.ImageRecords(path, _label_names(enc))
  pixels = "image" not in enc.input_spec
  if pixels:
    from maskssl.data import pixels as pixels_lib
    size, chunk = int(cfg["image_size"]), int(cfg["chunk"])
  else:
    target = tuple(enc.input_spec["image"][0][:2])
  ref = []

  def chunks(lo, hi):
    imgs = []
    for i in range(lo, hi):
      img = recs.image(i)
      if pixels:
        # Equal-size images go to pixel_tokens untouched, as in training;
        # others are first fitted to the first image's size.
        if not ref:
          ref.append(img.shape[:2])
        img = _fit(img, ref[0], f"{path}[{recs.ids[i]}]")
      else:
        img = _fit(img, target, f"{path}[{recs.ids[i]}]")
      imgs.append(img)
    x = np.stack(imgs)
    if not pixels:
      return {"image": x}
    t = pixels_lib.pixel_tokens(x, size, False, chunk=chunk)
    return {"x": t, "valid": np.ones(t.shape[:2], bool)}

  return Records(list(recs.ids), recs.labels, recs.label_names, chunks, path)


def _int_if_integral(y: Optional[np.ndarray]):
  if y is not None and np.isfinite(y).all() and (y == np.round(y)).all():
    return y.astype(np.int32)
  return y


def _token_records(ids, texts, labels, names, cfg, source) -> Records:
  from maskssl.data import tokenizer
  max_len = int(cfg["max_len"])

  def chunks(lo, hi):
    tokens, valid = tokenizer.encode(texts[lo:hi], max_len)
    return {"tokens": tokens, "valid": valid}

  return Records(list(ids), labels, names, chunks, source)


def smiles_records(enc, path: str, cfg) -> Records:
  from maskssl.data import molecules
  smiles, labels, _ = molecules.read_smiles_records(
      path, cfg["label_column"])
  return _token_records(smiles, smiles, _int_if_integral(labels), None, cfg,
                        path)


def protein_records(enc, path: str, cfg) -> Records:
  from maskssl.data import proteins
  ids, seqs, labels, names = proteins.read_sequence_records(
      path, cfg["unknown"], _label_names(enc))
  return _token_records(ids, seqs, _int_if_integral(labels), names, cfg, path)


# Reader options (and their defaults) accepted as --data.KEY even where the
# run's data schema lacks them (they say how to read the file, not how the
# run trained).
READER_OPTIONS = {"label_column": ""}

READERS = {"higgs": higgs_records, "cifar10": image_records,
           "pcam": image_records, "cifar10_pixels": image_records,
           "moleculenet": smiles_records, "proteins": protein_records}


def file_records(enc, path: str, overrides: Optional[dict] = None
                 ) -> Records:
  """Every example of ``path`` for the run ``enc``, preprocessed."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file or directory (data.path)")
  overrides = dict(overrides or {})
  overrides.pop("path", None)
  extra = {k: overrides.pop(k) for k in list(overrides)
           if k in READER_OPTIONS and k not in enc.config.data}
  cfg = dict(READER_OPTIONS, **enc.data_config(**overrides).to_dict(),
             **extra)
  name = cfg.get("name")
  if name in READERS:
    return READERS[name](enc, path, cfg)
  if "image" in enc.input_spec:
    return image_records(enc, path, cfg)
  raise DataError(f"no file reader for data source {name!r}; embed its own "
                  "splits (no --data.path) or use maskssl.load(...).encode")


def split_records(enc, splits: Sequence[str], overrides: Optional[dict] = None
                  ) -> Records:
  """The run's own data: ``splits`` through ``enc.load_data``."""
  from maskssl.data import load_split
  overrides = dict(overrides or {})
  if list(splits) == ["all"]:
    splits = ["train", "val", "test"]
    skip = True
  else:
    skip = False
  parts, ids, labels, names, used = [], [], [], None, []
  for s in splits:
    try:
      ds = load_split(enc.data_config(**overrides), s)
    except DataError:
      if skip:    # e.g. cifar10 has no val split unless data.val_size > 0
        continue
      raise
    used.append(s)
    parts.append({k: ds.arrays[k] for k in enc.input_spec})
    ids += [f"{s}/{i}" for i in range(len(ds))]
    labels.append(ds.arrays.get("label"))
    names = names or ds.meta.get("label_names") or ds.meta.get("class_names")
  if not parts:
    raise DataError(f"the run's data has none of the splits {list(splits)}")
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  y = (np.concatenate(labels) if all(l is not None for l in labels)
       else None)
  return _arrays_records(arrays, ids, y, list(names) if names else None,
                         f"{enc.config.data.get('name')}:{','.join(used)}")


# ---------------------------------------------------------------- encoding --
class _Progress:
  """tqdm when installed, else one self-overwriting line on stderr."""

  def __init__(self, total: int, enabled: bool = True, desc: str = "embed"):
    self.total, self.n, self.enabled = total, 0, enabled
    self.t0 = time.perf_counter()
    self._bar = None
    if enabled:
      try:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        self._bar = tqdm(total=total, desc=desc, unit="ex", file=sys.stderr,
                         dynamic_ncols=True)
      except ImportError:
        pass
    self.desc = desc

  def update(self, k: int):
    self.n += k
    if self._bar is not None:
      self._bar.update(k)
    elif self.enabled:
      dt = max(time.perf_counter() - self.t0, 1e-9)
      print(f"\r{self.desc}: {self.n}/{self.total} "
            f"({100 * self.n / max(self.total, 1):.0f}%) "
            f"{self.n / dt:.0f} ex/s", end="", file=sys.stderr, flush=True)

  def close(self):
    if self._bar is not None:
      self._bar.close()
    elif self.enabled:
      print(file=sys.stderr, flush=True)


def embed_records(enc, records: Records, batch_size: int = 256,
                  progress: bool = True, chunk_batches: int = 8
                  ) -> np.ndarray:
  """``enc.encode`` over every record, ``(N, D)`` float32, in order.

  Inputs are built ``chunk_batches`` batches at a time (images decode
  lazily); every chunk but the last is a whole number of batches, so the
  result equals ``enc.encode`` of all the inputs at once."""
  from maskssl.evaluators.common import eval_batch_size
  n = len(records)
  bs = eval_batch_size(batch_size, enc.mesh)
  step = bs * max(1, int(chunk_batches))
  out = None
  bar = _Progress(n, progress)
  try:
    for lo in range(0, n, step):
      hi = min(n, lo + step)
      f = enc.encode(records.chunks(lo, hi), batch_size=bs)
      if out is None:
        out = np.empty((n, f.shape[1]), np.float32)
      out[lo:hi] = f
      bar.update(hi - lo)
  finally:
    bar.close()
  return out


# ------------------------------------------------------------------ output --
def _fmt_label(v) -> str:
  if isinstance(v, (np.integer, int)):
    return str(int(v))
  v = float(v)
  return "" if not np.isfinite(v) else f"{v:.9g}"


def _meta_columns(records: Records):
  head, cols = ["id"], [list(map(str, records.ids))]
  if records.labels is not None:
    head.append("label")
    cols.append([_fmt_label(v) for v in records.labels])
    if records.label_names and np.issubdtype(records.labels.dtype,
                                             np.integer):
      names = records.label_names
      head.append("label_name")
      cols.append([names[v] if 0 <= v < len(names) else ""
                   for v in records.labels.tolist()])
  return head, cols


def ids_path(out: str) -> str:
  """``emb.npy`` -> ``emb.ids.csv`` (the sidecar of an ``.npy`` output)."""
  return os.path.splitext(out)[0] + ".ids.csv"


def write_embeddings(out: str, emb: np.ndarray, records: Records) -> list:
  """Write ``out`` (.npy + .ids.csv sidecar, or .csv); returns the paths."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  head, cols = _meta_columns(records)
  if out.lower().endswith(".npy"):
    np.save(out, np.asarray(emb, np.float32))
    side = ids_path(out)
    with open(side, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(head)
      w.writerows(zip(*cols))
    return [out, side]
  if out.lower().endswith(".csv"):
    with open(out, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(head + [f"e{j}" for j in range(emb.shape[1])])
      for i, row in enumerate(emb):
        w.writerow([c[i] for c in cols] + [f"{v:.9g}" for v in row])
    return [out]
  raise ConfigError(f"--out {out!r}: use a .npy or .csv file name")


def read_embeddings(path: str, ids: Optional[str] = None):
  """(embeddings float32 (N, D), ids, labels or None, label names or None)
  of a file :func:`write_embeddings` wrote (``ids`` overrides the sidecar)."""
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  if path.lower().endswith(".npy"):
    try:
      emb = np.load(path, allow_pickle=False)
    except Exception as e:
      raise DataError(f"{path}: cannot read .npy ({type(e).__name__}: {e})"
                      ) from e
    if emb.ndim != 2:
      raise DataError(f"{path}: embeddings must be 2-D (N, D), got "
                      f"{emb.shape}")
    side = ids or ids_path(path)
    if not os.path.exists(side):
      if ids:
        raise DataError(f"{side}: no such file (--ids)")
      return emb.astype(np.float32), [str(i) for i in range(len(emb))], \
          None, None
    with open(side, newline="") as f:
      rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["id"]:
      raise DataError(f"{side}:1: expected a header starting with 'id'")
    head, rows = rows[0], rows[1:]
    if len(rows) != len(emb):
      raise DataError(f"{side}: {len(rows)} rows but {path} has {len(emb)} "
                      "embeddings")
    table = emb.astype(np.float32)
  elif path.lower().endswith(".csv"):
    with open(path, newline="") as f:
      allrows = list(csv.reader(f))
    if not allrows or allrows[0][:1] != ["id"]:
      raise DataError(f"{path}:1: expected a header starting with 'id'")
    head_all = allrows[0]
    k = sum(1 for h in head_all if not h.startswith("e") or not
            h[1:].isdigit())
    head, rows, vals = head_all[:k], [], []
    for lineno, r in enumerate(allrows[1:], start=2):
      if len(r) != len(head_all):
        raise DataError(f"{path}:{lineno}: expected {len(head_all)} columns,"
                        f" found {len(r)}")
      try:
        vals.append([float(v) for v in r[k:]])
      except ValueError:
        raise DataError(f"{path}:{lineno}: non-numeric embedding value"
                        ) from None
      rows.append(r[:k])
    table = np.asarray(vals, np.float32).reshape(len(rows), -1)
  else:
    raise DataError(f"{path}: expected an .npy or .csv embedding file")
  col = {h: i for i, h in enumerate(head)}
  idl = [r[0] for r in rows]
  labels = names = None
  if "label" in col:
    cells = [r[col["label"]] for r in rows]
    try:
      labels = np.asarray([float(c) if c else np.nan for c in cells])
    except ValueError:  # class names as labels
      found = sorted(set(cells))
      labels = np.asarray([found.index(c) for c in cells], np.int32)
      names = found
    labels = _int_if_integral(labels)
  if "label_name" in col and labels is not None:
    names = {}
    for r, y in zip(rows, labels.tolist()):
      names.setdefault(int(y), r[col["label_name"]])
    names = [names.get(i, str(i)) for i in range(max(names) + 1)]
  return table, idl, labels, names


# --------------------------------------------------------------------- CLI --
def _parse_value(raw: str, current):
  """``--data.key=raw`` as the type of the run config's current value."""
  if isinstance(current, bool):
    if raw.lower() in ("1", "true", "yes"):
      return True
    if raw.lower() in ("0", "false", "no"):
      return False
    raise ConfigError(f"expected true/false, got {raw!r}")
  if isinstance(current, int):
    return int(raw)
  if isinstance(current, float):
    return float(raw)
  if isinstance(current, (tuple, list)) or current is None:
    try:
      return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      return raw
  return raw


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m maskssl.embed",
      description="Embed a file / folder (or the run's own data) with a "
                  "trained maskssl encoder.")
  p.add_argument("--workdir", required=True, help="run directory")
  p.add_argument("--step", type=int, default=None,
                 help="checkpoint step (default: newest)")
  p.add_argument("--out", required=True, help="emb.npy or emb.csv")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--split", default="test",
                 help="without --data.path: split(s) of the run's data, "
                      "comma-separated, or 'all' (train,val,test)")
  p.add_argument("--config", default=None,
                 help="config file[:variant] (default: the run's config.json)")
  p.add_argument("--cpu_devices", default=None,
                 help="XLA:CPU devices (default: the run config's "
                      "cpu_devices, else off)")
  p.add_argument("--no_progress", action="store_true")
  args, rest = p.parse_known_args(argv)
  data = {}
  for a in rest:
    if not a.startswith("--data.") or "=" not in a:
      p.error(f"unrecognised argument {a!r} (data config overrides are "
              "--data.KEY=VALUE)")
    k, v = a[len("--data."):].split("=", 1)
    data[k] = v
  return args, data


def main(argv=None) -> int:
  args, raw = parse_args(sys.argv[1:] if argv is None else argv)
  from maskssl import api, parallel, run as run_lib, train as train_lib
  from maskssl.data import data_schema
  try:
    config = api.run_config(args.workdir, args.config)
    setting = args.cpu_devices
    if setting is None:
      setting = train_lib.run_config(config).cpu_devices
    parallel.configure_cpu_devices(setting, [args.batch_size])
    data = dataclasses.asdict(data_schema(config.data))
    overrides = {}
    for k, v in raw.items():
      if k == "path":
        continue
      if k not in data and not ("path" in raw and k in READER_OPTIONS):
        raise ConfigError(f"unknown data key {k!r} for data source "
                          f"{data['name']!r}; known: {sorted(data)}")
      overrides[k] = _parse_value(v, data.get(k, READER_OPTIONS.get(k, "")))
    if "path" in raw and not os.path.exists(os.path.expanduser(raw["path"])):
      raise DataError(f"{raw['path']}: no such file or directory (data.path)")
    if not args.out.lower().endswith((".npy", ".csv")):
      raise ConfigError(f"--out {args.out!r}: use a .npy or .csv file name")
    t0 = time.perf_counter()
    enc = api.load(args.workdir, step=args.step, config=config)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "path" in raw:
      records = file_records(enc, raw["path"], overrides)
    else:
      records = split_records(enc, args.split.split(","), overrides)
    emb = embed_records(enc, records, args.batch_size,
                        progress=not args.no_progress)
    dt = time.perf_counter() - t0
    paths = write_embeddings(args.out, emb, records)
  except run_lib.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = len(records)
  print(f"embedded {n} examples of {records.source} with {args.workdir} "
        f"(step {enc.step}, {enc.config.method}): {emb.shape[1]}-d, "
        f"{dt:.2f} s read+encode = {n / max(dt, 1e-9):.0f} ex/s "
        f"(restore {t_load:.1f} s); wrote {', '.join(paths)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
