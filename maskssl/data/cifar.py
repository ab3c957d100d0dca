"""CIFAR-10 images (uint8 NHWC) for the image methods.

``data.source`` selects where the images come from:

* ``"embedded"`` (default): a small real sample shipped with the package,
  ``maskssl/resources/cifar10_sample.npz``: 2,000 training images (200 per
  class) and 500 test images (50 per class) from the original CIFAR-10
  batches (see ``resources/CIFAR10_SAMPLE_SOURCE.md``). Enough to run the
  pipelines end to end and to check that kNN beats chance; not enough for
  the published numbers.
* ``"tfds"``: the full TFDS ``cifar10`` (50k/10k) through
  ``tfds.data_source`` (no TensorFlow needed; needs the prepared data set in
  ``data.tfds_data_dir`` or the TFDS default directory; nothing is
  downloaded).
* ``"npz"``: ``data.path`` to a ``.npz`` with ``train_images``/
  ``train_labels`` and ``test_images``/``test_labels``, or a single
  ``images``/``labels`` pair (then ``data.test_size`` examples are held out
  as the test split, deterministic in ``data.split_seed``).
* ``"folder"``: ``data.path`` with ``train/<class>/*.png`` and
  ``test/<class>/*.png`` (readers in :mod:`maskssl.data.images`).
* ``"tar"``: ``data.path`` to an uncompressed tar of JPEG/PNG files
  ``[train|test/]<class>/name.jpg`` (e.g. ``../shared/data/cifar10_full/
  train.tar``); without a ``test/`` folder ``data.test_size`` images are
  held out as the test split (as for a single ``.npz`` set).
* ``"array_record"``: ``data.path`` to shards written by ``python -m
  maskssl.data.convert`` from such a folder or tar (same images, same
  order, same batches).

``data.test_path``: a separate labelled folder or tar (``[test/]<class>/*``,
the same class folder names) as the test split, which is how to evaluate on
your own test images; nothing is then held out of a single training set.

A ``data.path`` picks its source by itself (folder, ``.tar``, converted
directory, ``.npz``). The pretraining split of folder / tar / ArrayRecord /
TFDS data is read by the grain loader from the files, decoding each batch
when it is needed (:func:`load_source`; ``data.in_memory=True`` loads it
whole instead); the evaluation splits are loaded into memory.

Splits: ``pretrain`` (all training images; labels kept but unused),
``train`` (labelled training images: kNN bank / probe training set),
``val`` (``data.val_size`` images held out from ``train``; a DataError if
``val_size`` is 0), ``test``. Every split holds ``image`` uint8
``(N, H, W, 3)`` and ``label`` int32 ``(N,)``; ``meta`` has
``num_classes``, ``label_names``, ``image_size`` and ``source``.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os

import ml_collections
import numpy as np

from maskssl.data import records
from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import cap_indices, config_dict, parse_config
from maskssl.data.base import split_indices

LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
               "horse", "ship", "truck")
SPLITS = ("pretrain", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Cifar10Config(DataConfig):
  """``config.data`` of ``cifar10`` (fields as in the module doc)."""
  name: str = "cifar10"
  source: str = "embedded"  # embedded | tfds | npz | folder | tar | array_record
  path: str = ""            # picks its source by itself when set
  tfds_data_dir: str = ""
  tfds_name: str = "cifar10"
  val_size: int = 0         # held out from the training images (0: no val)
  test_size: int = 1000     # held out when the data has no test split
  split_seed: int = 0
  max_train: int = 0        # N training images, a seeded subset (0: all)
  max_test: int = 0         # N test images, a seeded subset (0: all)
  test_path: str = ""       # a separate labelled folder / tar as the test


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(Cifar10Config, overrides))


@functools.lru_cache(maxsize=4)
def _embedded():
  ref = importlib.resources.files("maskssl") / "resources/cifar10_sample.npz"
  with importlib.resources.as_file(ref) as p:
    if not os.path.exists(p):
      raise DataError(f"embedded CIFAR-10 sample missing at {p}; reinstall "
                      "maskssl or set data.source")
    with np.load(p) as z:
      return (z["train_images"], z["train_labels"].astype(np.int32),
              z["test_images"], z["test_labels"].astype(np.int32))


@functools.lru_cache(maxsize=2)
def _tfds(name: str, data_dir: str):
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError("data.source='tfds' needs tensorflow-datasets "
                    "(pip install tensorflow-datasets)") from e
  out = []
  for split in ("train", "test"):
    try:
      src = tfds.data_source(name, split=split, data_dir=data_dir or None,
                             download=False)
    except Exception as e:  # DatasetNotFoundError, AssertionError, ...
      raise DataError(
          f"TFDS {name!r} split {split!r} is not available locally "
          f"(data_dir={data_dir or 'default'}): {type(e).__name__}: {e}. "
          "Prepare it with `tfds build cifar10` on a machine with network, "
          "or use data.source='embedded'|'npz'|'folder'.") from e
    n = len(src)
    images = np.empty((n, 32, 32, 3), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
      ex = src[i]
      images[i] = ex["image"]
      labels[i] = ex["label"]
    out += [images, labels]
  return tuple(out)


def _npz(path: str, test_size: int, seed: int):
  from maskssl.data.images import npz_keys, read_npz  # pylint: disable=import-outside-toplevel
  if not os.path.exists(path):
    raise DataError(f"data.path {path!r} does not exist")
  keys = npz_keys(path)
  if "train_images" in keys:
    tr_x, tr_y = read_npz(path, "train_")
    if "test_images" not in keys:
      raise DataError(f"{path}: has train_images but no test_images")
    te_x, te_y = read_npz(path, "test_")
    return tr_x, tr_y, te_x, te_y
  x, y = read_npz(path)
  if test_size <= 0 or test_size >= len(x):
    raise DataError(f"{path}: single images/labels set of {len(x)} examples"
                    f" needs 0 < data.test_size < {len(x)}")
  idx = split_indices(len(x), {"test": test_size / len(x)}, seed)["test"]
  rest = np.setdiff1d(np.arange(len(x)), idx)
  return x[rest], y[rest], x[idx], y[idx]


def _folder(path: str):
  from maskssl.data.images import read_image_folder  # pylint: disable=import-outside-toplevel
  tr_x, tr_y, names, _ = read_image_folder(os.path.join(path, "train"))
  te_x, te_y, _, _ = read_image_folder(os.path.join(path, "test"), classes=names)
  return tr_x, tr_y, te_x, te_y, names


def _resolve_source(cfg: Cifar10Config) -> tuple[str, str]:
  source, path = cfg.source, cfg.path
  if source == "embedded" and path:
    if os.path.isdir(path):
      source = "array_record" if records.is_records_dir(path) else "folder"
    elif path.lower().endswith(".tar"):
      source = "tar"
    else:
      source = "npz"
  return source, path


def _file_sources(cfg, source: str, path: str):
  """(train, test) record sources of image ``image`` / ``label`` records,
  and the class names, for folder / tar / array_record / tfds data."""
  if source in ("folder", "tar", "array_record") and not path:
    raise DataError(f"data.source={source!r} needs data.path")
  test = None
  if source == "tfds":
    train = records.TfdsSource(cfg.tfds_name, "train", cfg.tfds_data_dir)
    test = records.TfdsSource(cfg.tfds_name, "test", cfg.tfds_data_dir)
    names = LABEL_NAMES
  elif source == "folder":
    train = records.ImageFiles(os.path.join(path, "train"))
    names = train.class_names
    test = records.ImageFiles(os.path.join(path, "test"), class_names=names)
  elif source == "tar":
    probe = records.ImageFiles(path, class_names=LABEL_NAMES)
    if "train" in probe.splits:
      train = records.ImageFiles(path, "train", class_names=LABEL_NAMES)
      if "test" in probe.splits:
        test = records.ImageFiles(path, "test", class_names=train.class_names)
    else:
      train = probe
    names = train.class_names
  elif source == "array_record":
    meta = records.read_records_meta(path)
    splits = meta.get("splits", {})
    train = records.ArrayRecordSource(path, "train" if "train" in splits
                                      else None)
    if "test" in splits:
      test = records.ArrayRecordSource(path, "test")
    names = tuple(meta.get("label_names") or LABEL_NAMES)
  else:
    raise DataError(f"unknown data.source {source!r}; use embedded, tfds, "
                    "npz, folder, tar or array_record")
  train = records.Mapped(train, records.image_label)
  if cfg.test_path:
    test = _test_path_source(cfg, names)
  elif test is None:  # one set: hold out data.test_size (as for an .npz)
    n, test_size = len(train), int(cfg.test_size)
    if test_size <= 0 or test_size >= n:
      raise DataError(f"{path}: a single set of {n} images needs 0 < "
                      f"data.test_size < {n}")
    idx = split_indices(n, {"test": test_size / n},
                        int(cfg.split_seed))["test"]
    rest = np.setdiff1d(np.arange(n), idx)
    train, test = records.Subset(train, rest), records.Subset(train, idx)
  else:
    test = records.Mapped(test, records.image_label)
  return train, test, tuple(names)


def _test_path_source(cfg, names):
  """``data.test_path`` (folder or tar; its ``test/`` split if it has
  one) as image / label records labelled with the training ``names``."""
  path = os.path.expanduser(str(cfg.test_path))
  if not os.path.exists(path):
    raise DataError(f"data.test_path {path!r} does not exist")
  probe = records.ImageFiles(path, class_names=names)
  if probe.splits and "test" not in probe.splits:
    raise DataError(f"{path}: data.test_path has splits {probe.splits} but "
                    "no test/ split; point it at the test folder")
  src = (records.ImageFiles(path, "test", class_names=names)
         if probe.splits else probe)
  if list(src.class_names) != list(names):
    raise DataError(
        f"{path}: data.test_path classes {list(src.class_names)} are not the "
        f"training data's {list(names)} (the same class folder names fix the "
        "labels)")
  return records.Mapped(src, records.image_label)


def load_source(data_config, split: str):
  """The pretraining split of folder / tar / ArrayRecord / TFDS data as a
  file-backed source (None: use :func:`load_split`, in memory)."""
  cfg = parse_config(Cifar10Config, data_config)
  source, path = _resolve_source(cfg)
  if split != "pretrain" or source in ("embedded", "npz") or not \
      records.file_backed(cfg, auto=True):
    return None
  train, _, names = _file_sources(cfg, source, path)
  max_train = int(cfg.max_train or 0)
  if max_train:
    train = records.Subset(train, cap_indices(len(train), max_train,
                                              int(cfg.split_seed)))
  size = int(train[0]["image"].shape[0])
  train.meta = dict(num_classes=len(names), label_names=list(names),
                    image_size=size, source=source, task="multiclass",
                    split=split, file_backed=True)
  return train


def load_arrays(data_config, splits=("train", "test")):
  """(train_images, train_labels, test_images, test_labels, label_names);
  tar / converted data decode only ``splits`` (the other arrays come back
  empty): an evaluation split does not decode the other one."""
  cfg = parse_config(Cifar10Config, data_config)
  source, path = _resolve_source(cfg)
  names = LABEL_NAMES
  if source in ("tar", "array_record"):
    train, test, names = _file_sources(cfg, source, path)
    none = dict(image=np.zeros((0, 0, 0, 3), np.uint8),
                label=np.zeros(0, np.int32))
    tr = records.read_all(train, path) if "train" in splits else none
    te = records.read_all(test, path) if "test" in splits else none
    return (tr["image"], tr["label"], te["image"], te["label"], names)
  if source == "embedded":
    tr_x, tr_y, te_x, te_y = _embedded()
  elif source == "tfds":
    tr_x, tr_y, te_x, te_y = _tfds(cfg.tfds_name, cfg.tfds_data_dir)
  elif source == "npz":
    if not path:
      raise DataError("data.source='npz' needs data.path")
    tr_x, tr_y, te_x, te_y = _npz(path, int(cfg.test_size),
                                  int(cfg.split_seed))
  elif source == "folder":
    if not path:
      raise DataError("data.source='folder' needs data.path")
    tr_x, tr_y, te_x, te_y, names = _folder(path)
  else:
    raise DataError(f"unknown data.source {source!r}; use embedded, tfds, "
                    "npz, folder, tar or array_record")
  if cfg.test_path:
    te = records.read_all(_test_path_source(cfg, tuple(names)),
                          cfg.test_path)
    te_x, te_y = te["image"], te["label"]
  return tr_x, tr_y, te_x, te_y, tuple(names)


def load_split(data_config, split: str) -> ArrayDataset:
  """One split as an :class:`ArrayDataset` with ``image`` and ``label``."""
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
  cfg = parse_config(Cifar10Config, data_config)
  tr_x, tr_y, te_x, te_y, names = load_arrays(
      cfg, ("test",) if split == "test" else ("train",))
  max_train = int(cfg.max_train or 0)
  max_test = int(cfg.max_test or 0)
  if max_train:    # the same subset as load_source's
    idx = cap_indices(len(tr_y), max_train, int(cfg.split_seed))
    tr_x, tr_y = tr_x[idx], tr_y[idx]
  if max_test:
    idx = cap_indices(len(te_y), max_test, int(cfg.split_seed) + 1)
    te_x, te_y = te_x[idx], te_y[idx]
  if split == "test":
    x, y = te_x, te_y
  elif split == "pretrain":
    x, y = tr_x, tr_y
  else:
    val_size = int(cfg.val_size or 0)
    if split == "val" and val_size <= 0:
      raise DataError("the cifar10 data set has no 'val' split unless "
                      "data.val_size > 0 (held out from the training images)")
    if val_size > 0:
      if val_size >= len(tr_x):
        raise DataError(f"data.val_size={val_size} >= {len(tr_x)} training "
                        "images")
      val_idx = split_indices(len(tr_x), {"val": val_size / len(tr_x)},
                              int(cfg.split_seed))["val"]
      if split == "val":
        idx = val_idx
      else:
        idx = np.setdiff1d(np.arange(len(tr_x)), val_idx)
      x, y = tr_x[idx], tr_y[idx]
    else:
      x, y = tr_x, tr_y
  num_classes = max(len(names), int(np.max(tr_y)) + 1 if len(tr_y) else 0)
  meta = dict(num_classes=num_classes, label_names=list(names),
              image_size=int(x.shape[1]), source=cfg.source,
              task="multiclass", split=split)
  return ArrayDataset(dict(image=np.ascontiguousarray(x),
                           label=np.asarray(y, np.int32)), meta)
