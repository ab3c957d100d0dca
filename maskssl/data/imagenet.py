"""ImageNet-1k (name ``"imagenet2012"``) through TFDS ``data_source`` or
converted shards, for ``configs/mscn_imagenet.py``.

``config.data`` fields:

* ``source``: ``"tfds"`` (default): ``tfds.data_source(tfds_name, split)``
  of a data set prepared locally in array_record format
  (``tfds build imagenet2012 --file_format=array_record`` with the
  manually downloaded tars; ``data.tfds_data_dir``); nothing is downloaded
  and TensorFlow is not needed. ``"array_record"``: ``data.path`` to a
  directory written by ``python -m maskssl.data.convert`` from an image
  folder or tar (``train/<class>/*.JPEG``, ``val/<class>/*``); in the tests
  the converted CIFAR-10 tar stands in for ImageNet. ``"folder"`` /
  ``"tar"``: the loose files themselves.
* ``host_size`` (default ``image_size * 8 // 7``, 256 for 224): every image
  is decoded, its shorter side resized to ``host_size`` (bilinear) and
  centre-cropped to ``host_size`` x ``host_size`` uint8 on the host; the
  method's random crops (RandomResizedCrop to ``image_size``) and flips
  run on device, as for CIFAR-10.
* ``eval_max_examples`` (default 10,000): evaluation splits (kNN bank,
  linear probe) are loaded into memory, so they are capped (the first N of
  a fixed seeded order); 0 = the whole split.
* ``test_size``: held out from ``train`` when the data has no validation
  split (converted stand-ins).

Splits: ``pretrain`` = the training images (file-backed, read by the
grain loader; never loaded whole), ``train`` = the same images for the
evaluators (capped), ``test`` = TFDS ``validation`` (or the converted
``val``/``test`` split), ``val`` = ``data.val_size`` images held out from
``train`` by the evaluators' own rule (needs ``val_size > 0``).
"""
from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from maskssl.data import records
from maskssl.data.base import ArrayDataset, DataConfig, DataError
from maskssl.data.base import config_dict, parse_config, split_indices

SPLITS = ("pretrain", "train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ImageNetConfig(DataConfig):
  """``config.data`` of ``imagenet2012`` (fields as in the module doc)."""
  name: str = "imagenet2012"
  source: str = "tfds"      # tfds | array_record | folder | tar
  tfds_name: str = "imagenet2012"
  tfds_data_dir: str = ""
  path: str = ""
  image_key: str = "image"  # the record field holding the image
  image_size: int = 224     # the method's crop size (sets host_size)
  host_size: int = 0        # 0: image_size * 8 // 7
  eval_max_examples: int = 10_000
  test_size: int = 10_000   # held out when there is no validation split
  val_size: int = 0
  split_seed: int = 0


def default_config(**overrides) -> ml_collections.ConfigDict:
  return config_dict(parse_config(ImageNetConfig, overrides))


def host_size(cfg: ImageNetConfig) -> int:
  return int(cfg.host_size or 0) or int(cfg.image_size) * 8 // 7


def _fixed_size(rec: dict, size: int, key: str = "image") -> dict:
  img = records.resize_center_crop(rec[key], size)
  return {"image": img, "label": np.int32(rec.get("label", -1))}


def _sources(cfg):
  """(train, test) image/label sources at the host size."""
  source, path, key = cfg.source, cfg.path, cfg.image_key
  size = host_size(cfg)
  test = None
  if source == "tfds":
    train = records.TfdsSource(cfg.tfds_name, "train", cfg.tfds_data_dir)
    test = records.TfdsSource(cfg.tfds_name, "validation", cfg.tfds_data_dir)
  elif source == "array_record":
    if not records.is_records_dir(path):
      raise DataError(f"data.source='array_record' needs data.path to a "
                      f"directory written by python -m maskssl.data.convert "
                      f"(got {path!r})")
    splits = records.read_records_meta(path).get("splits", {})
    train = records.ArrayRecordSource(path, "train" if "train" in splits
                                      else None)
    held = next((s for s in ("val", "validation", "valid", "test")
                 if s in splits), None)
    test = records.ArrayRecordSource(path, held) if held else None
  elif source in ("folder", "tar"):
    probe = records.ImageFiles(path)
    first = "train" if "train" in probe.splits else None
    train = records.ImageFiles(path, first) if first else probe
    held = next((s for s in ("val", "test") if s in probe.splits), None)
    test = records.ImageFiles(path, held, train.class_names) if held else None
  else:
    raise DataError(f"unknown data.source {source!r} for imagenet2012; use "
                    "tfds, array_record, folder or tar")
  fix = functools.partial(_fixed_size, size=size, key=key)
  train = records.Mapped(train, fix)
  if test is None:
    n, k = len(train), int(cfg.test_size)
    if not 0 < k < n:
      raise DataError(f"{path or source}: no validation split; hold out "
                      f"0 < data.test_size < {n} training images")
    idx = split_indices(n, {"test": k / n}, int(cfg.split_seed))["test"]
    train, test = (records.Subset(train, np.setdiff1d(np.arange(n), idx)),
                   records.Subset(train, idx))
  else:
    test = records.Mapped(test, fix)
  return train, test


def _meta(cfg, split, n_classes=1000) -> dict:
  return dict(num_classes=n_classes, image_size=host_size(cfg),
              source=cfg.source, task="multiclass",
              split=split)


def _num_classes(cfg) -> int:
  path = cfg.path
  if records.is_records_dir(path):
    names = records.read_records_meta(path).get("label_names") or []
    return len(names) or 1000
  return 1000


def load_source(data_config, split: str):
  """``pretrain``: the training images, file-backed (never in memory)."""
  if split != "pretrain":
    return None
  cfg = parse_config(ImageNetConfig, data_config)
  train, _ = _sources(cfg)
  train.meta = dict(_meta(cfg, split, _num_classes(cfg)), file_backed=True)
  return train


def load_split(data_config, split: str) -> ArrayDataset:
  """An evaluation split in memory (at most ``eval_max_examples``)."""
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; use {list(SPLITS)}")
  cfg = parse_config(ImageNetConfig, data_config)
  train, test = _sources(cfg)
  src = test if split == "test" else train
  val_size = int(cfg.val_size or 0)
  if split in ("train", "val") and val_size > 0:
    val = split_indices(len(train), {"val": val_size / len(train)},
                        int(cfg.split_seed) + 1)["val"]
    idx = val if split == "val" else np.setdiff1d(np.arange(len(train)), val)
    src = records.Subset(train, idx)
  elif split == "val":
    raise DataError("imagenet2012 has no 'val' split unless data.val_size > "
                    "0 (held out from the training images)")
  cap = int(cfg.eval_max_examples or 0)
  if cap and len(src) > cap:
    order = np.sort(np.random.default_rng(
        [int(cfg.split_seed), 7]).permutation(len(src))[:cap])
    src = records.Subset(src, order)
  arrays = records.read_all(src, f"imagenet2012/{split}")
  return ArrayDataset(dict(image=arrays["image"],
                           label=arrays["label"].astype(np.int32)),
                      _meta(cfg, split, _num_classes(cfg)))
