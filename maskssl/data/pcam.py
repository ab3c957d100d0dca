"""PatchCamelyon (binary H&E patches) and any other image-classification data.

``config.data`` fields (name "pcam"):

* ``source``: "auto" (default: ``path`` if set, else the embedded sample),
  "embedded", "tfds", "path".
* ``path``: an image folder, an uncompressed ``.tar`` of the same layout
  (e.g. ``../shared/data/pcam_10k/train.tar``), a directory written by
  ``python -m maskssl.data.convert``, or an ``.npz``. Layouts:
  - folder with split sub-folders ``root/{train,val|valid,test}/<class>/*``
    (and optionally ``root/pretrain/...``), or a plain ``root/<class>/*``
    that is split here (``test_fraction``);
  - ``.npz`` with ``{split}_images``/``{split}_labels`` keys, or plain
    ``images``/``labels`` split here.
* ``resize`` / ``crop``: for folders of differently sized images.
* ``val_fraction`` (0.2): carved (stratified, ``split_seed``) from train when
  there is no val split; ``test_fraction`` (0.2) likewise (first, from the
  training images) when there is no test split, e.g. ``train/<label>/``
  only, as in the PCam 10k tar.
* ``test_path``: a separate labelled folder / tar / converted dir / .npz
  (its ``test/`` split, or all of it) as the test split; nothing is then
  held out for test. Class folder names must match the training data's.
* ``max_examples``: cap per split (0 = all), a seeded random subset (a tar
  sorted by class would otherwise give one class).
  The split (carved val / test, then the cap) is chosen from the labels
  first; only its images are decoded (a 20 % val carved from full PCam's
  train split decodes 52k images, not all 262k: 7.2 GB).
* ``tfds_data_dir``: TFDS data directory.

The pretraining split of folder / tar / converted / TFDS data is read by
the grain loader from the files (:func:`load_source`; ``data.in_memory=
True`` loads it whole); the other splits are loaded into memory.

Splits: "pretrain" = the whole train split (labels kept but unused), "train",
"val", "test". Images are uint8 NHWC under key "image", labels int32 under
"label". The embedded default is ``maskssl/resources/pcam_sample.npz``: 300
real 96x96 PCam patches (200 train, 100 test; 50/50 classes), a uint8 copy
of ``../shared/data/pcam_sample`` made with :func:`build_sample_npz` (see
``maskssl/resources/PCAM_SAMPLE_SOURCE.md``). With the default 0.2 val
fraction the sample gives 160 train / 40 val / 100 test.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from maskssl.data import images as images_lib
from maskssl.data import records
from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import cap_indices, parse_config

SPLITS = ("pretrain", "train", "val", "test")
RESOURCE = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "resources", "pcam_sample.npz")
CLASS_NAMES = ("normal", "tumour")


@dataclasses.dataclass(frozen=True)
class PCamConfig(DataConfig):
  """``config.data`` of ``pcam`` (fields as in the module doc)."""
  name: str = "pcam"
  source: str = "auto"      # auto | embedded | tfds | path
  path: str = ""
  resize: int = 0           # shorter side (0: as stored)
  crop: int = 0             # centre crop (0: none)
  val_fraction: float = 0.2
  test_fraction: float = 0.2
  split_seed: int = 0
  max_examples: int = 0     # cap per split, a seeded subset (0: all)
  tfds_data_dir: str = ""
  test_path: str = ""       # a separate labelled folder / tar as the test


def _stratified_split(labels: np.ndarray, fraction: float, seed: int):
  """(keep, held) index arrays: ``fraction`` of each class held out."""
  rng = np.random.default_rng(seed)
  keep, held = [], []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    idx = idx[rng.permutation(len(idx))]
    k = int(round(fraction * len(idx)))
    held.append(idx[:k])
    keep.append(idx[k:])
  return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


class _Part:
  """One split of the data: its size and labels without decoding images, and
  the images of chosen indices decoded on demand (``take``), so carving val
  from train, test from unsplit data, or capping at ``max_examples`` decodes
  only the images kept."""

  def __init__(self, size, labels, take):
    self.size = size        # () -> int
    self.labels = labels    # () -> int labels (N,), no image decoded
    self._take = take       # idx (None: all) -> (images, labels)

  def take(self, idx=None):
    return self._take(idx)

  def subset(self, idx) -> "_Part":
    idx = np.asarray(idx, np.int64)
    return _Part(lambda: len(idx), lambda: self.labels()[idx],
                 lambda j=None: self._take(idx if j is None else idx[j]))


def _array_part(load) -> _Part:
  """A split stored as arrays (``.npz``): read once, then indexed."""
  cache = []

  def arrays():
    if not cache:
      cache.append(load())
    return cache[0]

  def take(idx):
    x, y = arrays()
    return (x, y) if idx is None else (x[idx], y[idx])
  return _Part(lambda: len(arrays()[1]), lambda: arrays()[1], take)


def _source_part(src, path: str) -> _Part:
  """A split of image files / records: labels by :func:`_labels`, images
  decoded for the taken indices only."""
  return _Part(lambda: len(src), lambda: _labels(src),
               lambda idx: _decode(src if idx is None else
                                   records.Subset(src, idx), path))


def _folder_part(root: str, resize, crop, classes=None) -> _Part:
  """``root/<class>/*`` read by :mod:`maskssl.data.images`: labels from the
  listing, only the taken files decoded."""
  listing = []

  def files():
    if not listing:
      listing.append(images_lib.list_image_folder(root, classes)[0])
    return listing[0]
  return _Part(lambda: len(files()),
               lambda: np.asarray([c for _, c in files()], np.int32),
               lambda idx: images_lib.read_image_folder(
                   root, resize, crop, classes, indices=idx)[:2])


def _finish(part: _Part, split, cfg, meta) -> ArrayDataset:
  cap, n = int(cfg.max_examples or 0), part.size()
  if n == 0:
    raise DataError(f"{meta.get('source')}: split {split!r} is empty")
  images, labels = part.take(cap_indices(n, cap, int(cfg.split_seed))
                             if 0 < cap < n else None)
  n_classes = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
  meta = dict(meta, split=split, num_classes=n_classes,
              task="binary" if n_classes <= 2 else "multiclass")
  return ArrayDataset({"image": images, "label": labels.astype(np.int32)},
                      meta)


def _from_parts(parts: dict, split: str, cfg, meta) -> ArrayDataset:
  """``parts``: split name -> :class:`_Part`; carve val/test from the labels
  (stratified), then decode only the split's images."""
  seed = int(cfg.split_seed)
  if "test" not in parts:   # unsplit or train-only data: hold out the test
    whole = parts.get("train") or parts["all"]
    tr, te = _stratified_split(whole.labels(), float(cfg.test_fraction),
                               seed + 1)
    parts = {k: v for k, v in parts.items() if k != "all"}
    parts.update(train=whole.subset(tr), test=whole.subset(te))
  if split == "pretrain":
    key = "pretrain" if "pretrain" in parts else "train"
    return _finish(parts[key], split, cfg, meta)
  if split == "test":
    return _finish(parts["test"], split, cfg, meta)
  if "val" in parts:
    return _finish(parts["val" if split == "val" else "train"], split, cfg,
                   meta)
  train = parts["train"]
  tr, va = _stratified_split(train.labels(), float(cfg.val_fraction), seed)
  return _finish(train.subset(va if split == "val" else tr), split, cfg, meta)


def _npz_parts(path: str) -> dict:
  keys = images_lib.npz_keys(path)
  parts = {}
  for name, prefix in (("pretrain", "pretrain_"), ("train", "train_"),
                       ("val", "val_"), ("test", "test_")):
    if f"{prefix}images" in keys:
      parts[name] = _array_part(lambda p=prefix: images_lib.read_npz(path, p))
  if not parts:
    parts["all"] = _array_part(lambda: images_lib.read_npz(path))
  return parts


def _folder_parts(root: str, cfg) -> dict:
  resize, crop = cfg.resize or None, cfg.crop or None
  sub = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
  parts = {}
  if "train" in sub and any(os.path.isdir(os.path.join(root, "train", c))
                            for c in os.listdir(os.path.join(root, "train"))):
    names = {"pretrain": ("pretrain",), "train": ("train",),
             "val": ("val", "valid", "validation"), "test": ("test",)}
    # class names from train so every split uses the same label indices
    _, classes = images_lib.list_image_folder(os.path.join(root, "train"))
    for split, cands in names.items():
      for c in cands:
        if c in sub:
          parts[split] = _folder_part(os.path.join(root, c), resize, crop,
                                      classes)
          break
  else:
    parts["all"] = _folder_part(root, resize, crop)
  return parts


def _tfds(cfg, split: str) -> ArrayDataset:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError("data.source='tfds' needs tensorflow-datasets "
                    "(pip install tensorflow-datasets array_record)") from e
  name = {"pretrain": "train", "train": "train", "val": "validation",
          "test": "test"}[split]
  try:
    src = tfds.data_source("patch_camelyon", split=name,
                           data_dir=cfg.tfds_data_dir or None)
  except Exception as e:
    raise DataError(
        f"TFDS patch_camelyon split {name!r} is not available "
        f"({type(e).__name__}: {e}). Prepare it once with "
        "tfds.builder('patch_camelyon').download_and_prepare("
        "file_format='array_record') or set data.path") from e

  def take(idx):
    idx = range(len(src)) if idx is None else idx
    images = np.empty((len(idx), 96, 96, 3), np.uint8)
    labels = np.empty((len(idx),), np.int32)
    for k, i in enumerate(idx):
      ex = src[int(i)]
      images[k], labels[k] = ex["image"], ex["label"]
    return images, labels
  # TFDS has all three splits: nothing is carved, labels are not needed
  part = _Part(lambda: len(src), None, take)
  return _finish(part, split, cfg, dict(source="tfds:patch_camelyon",
                                        class_names=CLASS_NAMES))


def load_split(data_config, split: str) -> ArrayDataset:
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
  cfg = parse_config(PCamConfig, data_config)
  source, path = cfg.source or "auto", cfg.path
  if source == "tfds":
    return _tfds(cfg, split)
  if source == "path" or (source == "auto" and path):
    if not path:
      raise DataError("data.source='path' needs data.path")
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
      raise DataError(f"data.path {path!r} does not exist")
    if path.endswith(".npz"):
      parts = _npz_parts(path)
    elif os.path.isfile(path) or records.is_records_dir(path):
      parts = {k: _source_part(src, path) for k, src in
               _source_parts(path, cfg).items()}
    else:
      parts = _folder_parts(path, cfg)
    if cfg.test_path:
      parts = dict(parts, test=_test_path_part(cfg, path))
    return _from_parts(parts, split, cfg, dict(source=path))
  if source not in ("auto", "embedded"):
    raise DataError(f"unknown data.source {source!r}; use auto, embedded, "
                    "tfds or path")
  if not os.path.exists(RESOURCE):
    raise DataError(f"embedded PCam sample {RESOURCE} is missing")
  parts = _npz_parts(RESOURCE)
  if cfg.test_path:
    parts = dict(parts, test=_test_path_part(cfg, None))
  return _from_parts(parts, split, cfg,
                     dict(source="embedded:pcam_sample",
                          class_names=CLASS_NAMES))


# ------------------------------------------------------- file-backed --
def _decode(src, path):
  arrays = records.read_all(src, path)
  return arrays["image"], arrays["label"]


def _labels(src) -> np.ndarray:
  """Labels of a record source without decoding its images."""
  if isinstance(src, records.Subset):
    return _labels(src.source)[src.indices]
  if isinstance(src, records.Mapped):
    return _labels(src.source)
  if isinstance(src, records.ImageFiles):
    return src.labels
  return np.asarray([int(np.asarray(src.raw_record(i)["label"]))
                     if hasattr(src, "raw_record") else
                     int(src[i]["label"]) for i in range(len(src))], np.int32)


def _source_parts(path: str, cfg, classes=None) -> dict:
  """split name -> undecoded image/label source, as :func:`_folder_parts`
  names them (``"all"`` for unsplit data). ``classes``: the class names
  that fix the label indices (default: the data's own train / sorted)."""
  resize, crop = cfg.resize or None, cfg.crop or None
  parts = {}
  if records.is_records_dir(path):
    for name in records.read_records_meta(path).get("splits", {}):
      key = "val" if name in ("valid", "validation") else name
      parts[key] = records.ArrayRecordSource(path, name, resize=resize,
                                             crop=crop)
  elif os.path.isfile(path):
    probe = records.ImageFiles(path, None, classes, resize, crop)
    if not probe.splits:
      parts["all"] = probe
    else:
      first = "train" if "train" in probe.splits else probe.splits[0]
      classes = classes or records.ImageFiles(path, first).class_names
      for name in probe.splits:
        parts[name] = records.ImageFiles(path, name, classes, resize, crop)
  else:
    sub = {d for d in os.listdir(path)
           if os.path.isdir(os.path.join(path, d))}
    train = os.path.join(path, "train")
    if "train" in sub and any(os.path.isdir(os.path.join(train, c))
                              for c in os.listdir(train)):
      classes = classes or images_lib.list_image_folder(train)[1]
      for split, cands in (("pretrain", ("pretrain",)), ("train", ("train",)),
                           ("val", ("val", "valid", "validation")),
                           ("test", ("test",))):
        c = next((c for c in cands if c in sub), None)
        if c:
          parts[split] = records.ImageFiles(os.path.join(path, c), None,
                                            classes, resize, crop)
    else:
      parts["all"] = records.ImageFiles(path, None, classes, resize, crop)
  return {k: records.Mapped(v, records.image_label) for k, v in parts.items()}


def _class_names(src):
  """The class names behind a record source (None for arrays / records
  without names)."""
  while isinstance(src, (records.Mapped, records.Subset)):
    src = src.source
  names = getattr(src, "class_names", None)
  if names is None:
    names = (getattr(src, "meta", None) or {}).get("label_names")
  return list(names) if names else None


def _test_path_part(cfg, path) -> _Part:
  """``data.test_path``: a separate labelled folder / tar / records dir /
  .npz replacing the held-out test split (its ``test/`` split if it has
  one, else all of it), with the training data's class indices."""
  test_path = os.path.expanduser(str(cfg.test_path))
  if not os.path.exists(test_path):
    raise DataError(f"data.test_path {test_path!r} does not exist")
  if test_path.endswith(".npz"):
    tp = _npz_parts(test_path)
    if "test" not in tp and "all" not in tp:
      raise DataError(f"{test_path}: data.test_path needs test_images/"
                      "test_labels or images/labels arrays")
    return tp.get("test") or tp["all"]
  classes = None
  if path and not path.endswith(".npz"):
    own = _source_parts(path, cfg)
    classes = _class_names(own.get("pretrain") or own.get("train")
                           or own["all"])
  tp = _source_parts(test_path, cfg, classes)
  src = tp.get("test") or tp.get("all")
  if src is None and len(tp) == 1:
    src = next(iter(tp.values()))
  if src is None:
    raise DataError(f"{test_path}: data.test_path has splits {sorted(tp)} "
                    "but no test/ split; point it at the test folder")
  names = _class_names(src)
  if classes and names and names != classes:
    raise DataError(
        f"{test_path}: data.test_path classes {names} are not the training "
        f"data's {classes} (the same class folder names fix the labels)")
  return _source_part(src, test_path)


def load_source(data_config, split: str):
  """The pretraining split of folder / tar / converted / TFDS data as a
  file-backed source (None: in memory through :func:`load_split`)."""
  cfg = parse_config(PCamConfig, data_config)
  source, path = cfg.source or "auto", cfg.path
  if split != "pretrain" or not records.file_backed(cfg, auto=True):
    return None
  if source == "tfds":
    src = records.Mapped(records.TfdsSource(
        "patch_camelyon", "train", cfg.tfds_data_dir), records.image_label)
    meta = dict(source="tfds:patch_camelyon", class_names=CLASS_NAMES)
    num_classes = 2
  elif (source == "path" or (source == "auto" and path)) and path and \
      not str(path).endswith(".npz"):
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
      raise DataError(f"data.path {path!r} does not exist")
    parts = _source_parts(path, cfg)
    if "pretrain" in parts:
      src = parts["pretrain"]
    else:
      src = parts.get("train") or parts["all"]
      if "test" not in parts and not cfg.test_path:
        # the test split is held out of train (as load_split does)
        tr, _ = _stratified_split(_labels(src), float(cfg.test_fraction),
                                  int(cfg.split_seed) + 1)
        src = records.Subset(src, tr)
    labels = _labels(src)
    num_classes = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 \
        else 0
    meta = dict(source=path)
  else:
    return None
  cap = int(cfg.max_examples or 0)
  if 0 < cap < len(src):   # the same subset as load_split's
    src = records.Subset(src, cap_indices(len(src), cap,
                                          int(cfg.split_seed)))
  src.meta = dict(meta, split=split, num_classes=num_classes,
                  task="binary" if num_classes <= 2 else "multiclass",
                  file_backed=True)
  return src


def build_sample_npz(src_dir: str, out_path: str = RESOURCE) -> dict:
  """``src_dir/{train,test}/{0,1}/*.jpg`` -> uint8 .npz (needs Pillow)."""
  arrays = {}
  for split in ("train", "test"):
    x, y, _, files = images_lib.read_image_folder(os.path.join(src_dir, split))
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    arrays[f"{split}_files"] = np.asarray(
        [os.path.relpath(f, src_dir) for f in files])
  np.savez_compressed(out_path, **arrays)
  return {k: v.shape for k, v in arrays.items()}


if __name__ == "__main__":
  import sys
  print(build_sample_npz(sys.argv[1], *sys.argv[2:]))
