"""Generic image readers: class folders and ``.npz`` files -> uint8 NHWC.

* :func:`read_image_folder` -- ``root/<class>/*.{png,jpg,jpeg,tif,tiff}``
  (class index = position in the sorted class-folder names, as torchvision's
  ``ImageFolder``), decoded with Pillow.
* :func:`read_npz` -- keys ``images`` (N, H, W[, C]) and ``labels`` (N,).
* Optional ``resize`` (shorter side, bilinear; needs Pillow unless the image
  is already that size) and ``crop`` (centre crop) so images of different
  sizes can be stacked.
* :func:`write_png` / :func:`read_png` -- PNG I/O (Pillow).

Every unreadable or inconsistent file raises ``DataError`` naming the file.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from maskssl.data.base import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


# ---- PNG (Pillow) -------------------------------------------------------------

def write_png(path: str, image: np.ndarray) -> None:
  """Write a uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array as a PNG."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  img = np.asarray(image)
  if img.dtype != np.uint8:
    raise ValueError(f"write_png needs uint8, got {img.dtype}")
  if img.ndim == 3 and img.shape[2] == 1:
    img = img[:, :, 0]
  Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")


def read_png(path: str) -> np.ndarray:
  """Decode a PNG to uint8 (H, W, C) (C = 1 gray, 2 gray+alpha, 3, 4)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      if im.format != "PNG":
        raise DataError(f"{path}: not a PNG file")
      img = np.asarray(im)
  except DataError:
    raise
  except Exception as e:  # UnidentifiedImageError, OSError (truncated), ...
    raise DataError(f"{path}: cannot read PNG ({type(e).__name__}: {e})"
                    ) from e
  if img.dtype != np.uint8:
    img = np.asarray(img >> 8 if img.dtype == np.uint16 else img, np.uint8)
  return img[:, :, None] if img.ndim == 2 else img


def decode_image(path: str, resize: Optional[int] = None,
                 crop: Optional[int] = None) -> np.ndarray:
  """One file -> uint8 (H, W, 3); DataError naming the file if unreadable."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})"
                    ) from e
  return decode_image_bytes(data, path, resize, crop)


def list_image_folder(root: str, classes: Optional[Sequence[str]] = None):
  """[(path, class_index)], class names (sorted sub-folders of ``root``)."""
  if not os.path.isdir(root):
    raise DataError(f"image folder {root!r} does not exist")
  if classes is None:
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d))
                     and not d.startswith("."))
  if not classes:
    raise DataError(f"{root}: no class sub-folders (expected root/<class>/"
                    f"*{'|'.join(IMAGE_EXTENSIONS)})")
  files = []
  for ci, name in enumerate(classes):
    d = os.path.join(root, name)
    if not os.path.isdir(d):
      raise DataError(f"{root}: class folder {name!r} is missing")
    for f in sorted(os.listdir(d)):
      if f.lower().endswith(IMAGE_EXTENSIONS):
        files.append((os.path.join(d, f), ci))
  if not files:
    raise DataError(f"{root}: no image files in the class folders")
  return files, list(classes)


def read_image_folder(root: str, resize: Optional[int] = None,
                      crop: Optional[int] = None,
                      classes: Optional[Sequence[str]] = None,
                      indices: Optional[Sequence[int]] = None):
  """``root/<class>/*`` -> (images uint8 (N, H, W, 3), labels int32 (N,),
  class names, file paths). All images must share a size after
  resize/crop; a mismatch raises DataError naming the file. ``indices``:
  only those files of the listing (:func:`list_image_folder`) are decoded."""
  files, names = list_image_folder(root, classes)
  if indices is not None:
    files = [files[int(i)] for i in indices]
  images, labels, shape = [], [], None
  for path, ci in files:
    img = decode_image(path, resize, crop)
    if shape is None:
      shape = img.shape
    elif img.shape != shape:
      raise DataError(f"{path}: image is {img.shape[0]}x{img.shape[1]}, the "
                      f"first image was {shape[0]}x{shape[1]}; set resize/"
                      "crop in the data config")
    images.append(img)
    labels.append(ci)
  return (np.stack(images), np.asarray(labels, np.int32), names,
          [p for p, _ in files])


def as_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
  """Validate/convert (N, H, W[, C]) arrays to uint8 (N, H, W, 3)."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
    raise DataError(f"{where}: images must be (N, H, W[, 1|3|4]), got "
                    f"{x.shape}")
  if x.dtype != np.uint8:
    if np.issubdtype(x.dtype, np.floating) and x.size and (
        x.min() >= 0 and x.max() <= 1):
      x = np.round(x * 255).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer) and x.size and (
        x.min() >= 0 and x.max() <= 255):
      x = x.astype(np.uint8)
    else:
      raise DataError(f"{where}: images must be uint8 or floats in [0, 1], "
                      f"got {x.dtype}")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return np.ascontiguousarray(x[..., :3])


def npz_keys(path: str) -> set:
  """The array names of an ``.npz`` (DataError naming the file if it is not
  one)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return set(z.files)
  except Exception as e:
    raise DataError(f"{path}: cannot read .npz ({type(e).__name__}: {e})"
                    ) from e


def read_npz(path: str, prefix: str = ""):
  """(images uint8 NHWC, labels int32) from keys ``{prefix}images`` and
  ``{prefix}labels`` (labels optional: -1 when absent)."""
  try:
    with np.load(path, allow_pickle=False) as z:
      keys = set(z.files)
      ik, lk = f"{prefix}images", f"{prefix}labels"
      if ik not in keys:
        raise DataError(f"{path}: no {ik!r} array (has {sorted(keys)})")
      images = as_uint8_images(z[ik], f"{path}[{ik}]")
      labels = (np.asarray(z[lk]).astype(np.int32).reshape(-1) if lk in keys
                else np.full(len(images), -1, np.int32))
  except DataError:
    raise
  except Exception as e:
    raise DataError(f"{path}: cannot read .npz ({type(e).__name__}: {e})"
                    ) from e
  if len(labels) != len(images):
    raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
  return images, labels


# ---- any image source, one record per image (embedding CLI) ------------------

def decode_image_bytes(data: bytes, name: str, resize: Optional[int] = None,
                       crop: Optional[int] = None) -> np.ndarray:
  """Encoded image bytes (a tar member, ...) -> uint8 (H, W, 3), as
  :func:`decode_image` does for files; errors name ``name``."""
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert("RGB")
      if resize:
        w, h = im.size
        s = resize / min(w, h)
        if (round(w * s), round(h * s)) != (w, h):
          im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
      img = np.asarray(im, np.uint8)
  except Exception as e:  # UnidentifiedImageError, OSError, ...
    raise DataError(f"{name}: cannot read image ({type(e).__name__}: {e})"
                    ) from e
  if crop:
    h, w = img.shape[:2]
    if h < crop or w < crop:
      raise DataError(f"{name}: image {h}x{w} is smaller than crop {crop}")
    t, l = (h - crop) // 2, (w - crop) // 2
    img = img[t:t + crop, l:l + crop]
  return np.ascontiguousarray(img)


class ImageRecords:
  """Every image of a folder (recursive), a ``.tar[.gz]`` of JPEG/PNG files,
  an ``.npz`` or one image file, decoded lazily (``images(lo, hi)``).

  ``ids``: the file path relative to the folder, the tar member name, or
  ``<split>/<index>`` for an ``.npz``. Labels come from the class folder
  (the image's parent directory) when every image has one, else from the
  ``.npz`` labels; class index = position in ``class_names`` when given
  and every folder name is one of them (a run's CIFAR names), else in the
  sorted folder names (as ``torchvision.datasets.ImageFolder``); digit
  folders ``0`` .. ``K-1`` for ``K`` class names index them directly (PCam).
  ``labels``
  is None when there are none. Unreadable files raise :class:`DataError`
  naming the file / member.
  """

  def __init__(self, path: str, class_names: Optional[Sequence[str]] = None):
    self.path = path
    self._tar = None
    self._arrays = None
    if not os.path.exists(path):
      raise DataError(f"{path}: no such file or directory")
    low = path.lower()
    if os.path.isdir(path):
      files = []
      for d, subdirs, names in os.walk(path):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        files += [os.path.relpath(os.path.join(d, f), path)
                  for f in sorted(names) if f.lower().endswith(IMAGE_EXTENSIONS)
                  and not f.startswith(".")]
      if not files:
        raise DataError(f"{path}: no image files "
                        f"(*{'|*'.join(IMAGE_EXTENSIONS)}) in the folder")
      self.ids = files
    elif low.endswith((".tar", ".tar.gz", ".tgz")):
      import tarfile  # pylint: disable=import-outside-toplevel
      try:
        self._tar = tarfile.open(path)
        members = [m for m in self._tar.getmembers()
                   if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)
                   and not os.path.basename(m.name).startswith(".")]
      except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read tar ({type(e).__name__}: {e})"
                        ) from e
      if not members:
        raise DataError(f"{path}: no image members "
                        f"(*{'|*'.join(IMAGE_EXTENSIONS)}) in the tar")
      self._members = members
      self.ids = [m.name for m in members]
    elif low.endswith(".npz"):
      self._arrays, self.ids, labels, names = _npz_records(path)
      self.labels, self.label_names = labels, names
      return
    elif low.endswith(IMAGE_EXTENSIONS):
      self.ids = [os.path.basename(path)]
    else:
      raise DataError(f"{path}: not an image folder, .tar, .npz or image "
                      f"file ({'|'.join(IMAGE_EXTENSIONS)})")
    folders = [os.path.basename(os.path.dirname(i)) for i in self.ids]
    self.labels, self.label_names = None, None
    single = low.endswith(IMAGE_EXTENSIONS) and os.path.isfile(path)
    if self.ids and all(folders) and not single:
      found = sorted(set(folders))
      if class_names and set(found) <= set(class_names):
        names = list(class_names)
        index = {c: k for k, c in enumerate(names)}
      elif class_names and len(found) == len(class_names) and all(
          f.isdigit() and int(f) < len(class_names) for f in found):
        names = list(class_names)   # PCam-style folders "0", "1"
        index = {f: int(f) for f in found}
      else:
        names = found
        index = {c: k for k, c in enumerate(names)}
      self.labels = np.asarray([index[f] for f in folders], np.int32)
      self.label_names = names

  def __len__(self) -> int:
    return len(self.ids)

  def image(self, i: int, resize: Optional[int] = None,
            crop: Optional[int] = None) -> np.ndarray:
    """uint8 (H, W, 3) of record ``i``."""
    if self._arrays is not None:
      return self._arrays[i]
    if self._tar is not None:
      m = self._members[i]
      name = f"{self.path}[{m.name}]"
      try:
        data = self._tar.extractfile(m).read()
      except Exception as e:
        raise DataError(f"{name}: cannot read tar member "
                        f"({type(e).__name__}: {e})") from e
      return decode_image_bytes(data, name, resize, crop)
    full = (self.path if os.path.isfile(self.path)
            else os.path.join(self.path, self.ids[i]))
    return decode_image(full, resize, crop)

  def close(self):
    if self._tar is not None:
      self._tar.close()


def _npz_records(path: str):
  """(images uint8 NHWC, ids, labels or None, label names or None) of an
  ``.npz``: ``images``/``labels``, ``{split}_images``/``{split}_labels``
  or CIFAR rows ``{split}_data`` (N, 3072) channel-major; every split found,
  in the order pretrain, train, val, test."""
  try:
    with np.load(path, allow_pickle=False) as z:
      keys = set(z.files)
      names = ([str(s) for s in z["label_names"]] if "label_names" in keys
               else None)
  except Exception as e:
    raise DataError(f"{path}: cannot read .npz ({type(e).__name__}: {e})"
                    ) from e
  prefixes = [p for p in ("", "pretrain_", "train_", "val_", "test_")
              if f"{p}images" in keys or (p and f"{p}data" in keys)]
  if not prefixes:
    raise DataError(f"{path}: no 'images' / '<split>_images' / "
                    f"'<split>_data' array (has {sorted(keys)})")
  images, ids, labels = [], [], []
  for p in prefixes:
    if f"{p}images" in keys:
      x, y = read_npz(path, p)
    else:
      with np.load(path, allow_pickle=False) as z:
        rows = z[f"{p}data"]
        y = (np.asarray(z[f"{p}labels"]).astype(np.int32).reshape(-1)
             if f"{p}labels" in keys else np.full(len(rows), -1, np.int32))
      if rows.ndim != 2 or rows.shape[1] % 3:
        raise DataError(f"{path}[{p}data]: CIFAR rows must be (N, 3*H*W), "
                        f"got {rows.shape}")
      side = int(round((rows.shape[1] // 3) ** 0.5))
      if 3 * side * side != rows.shape[1]:
        raise DataError(f"{path}[{p}data]: rows of {rows.shape[1]} values are"
                        " not square RGB images")
      x = as_uint8_images(rows.reshape(-1, 3, side, side).transpose(
          0, 2, 3, 1), f"{path}[{p}data]")
      if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    split = p.rstrip("_") or "images"
    images.append(x)
    labels.append(y)
    ids += [f"{split}/{i}" for i in range(len(x))]
  if len({im.shape[1:] for im in images}) > 1:
    raise DataError(f"{path}: splits have different image sizes "
                    f"{[im.shape[1:] for im in images]}")
  y = np.concatenate(labels)
  return (np.concatenate(images), ids, None if (y < 0).all() else y, names)
