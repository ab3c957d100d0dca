"""Image readers (folders, .npz, pure-numpy PNG) and the PCam data module."""
import csv
import struct
import zlib

import ml_collections
import numpy as np
import pytest

from maskssl.data import images as images_lib
from maskssl.data import load_split, pcam
from maskssl.data.base import DataError, cap_indices


def _png_with_filters(path, img):
  """A PNG whose rows use filters 0..4 in turn (reference encoder)."""
  h, w, c = img.shape
  x = img.astype(np.int32).reshape(h, w * c)
  rows = []
  prev = np.zeros(w * c, np.int32)
  for y in range(h):
    f = y % 5
    cur = x[y]
    left = np.concatenate([np.zeros(c, np.int32), cur[:-c]])
    ul = np.concatenate([np.zeros(c, np.int32), prev[:-c]])
    if f == 0:
      pred = 0
    elif f == 1:
      pred = left
    elif f == 2:
      pred = prev
    elif f == 3:
      pred = (left + prev) // 2
    else:
      p = left + prev - ul
      pa, pb, pc = abs(p - left), abs(p - prev), abs(p - ul)
      pred = np.where((pa <= pb) & (pa <= pc), left,
                      np.where(pb <= pc, prev, ul))
    rows.append(bytes([f]) + ((cur - pred) & 255).astype(np.uint8).tobytes())
    prev = cur

  def chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
  with open(path, "wb") as fh:
    fh.write(b"\x89PNG\r\n\x1a\n"
             + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8,
                                          {3: 2, 4: 6}[c], 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(b"".join(rows)))
             + chunk(b"IEND", b""))


def test_png_round_trip_all_filters(tmp_path):
  rs = np.random.RandomState(0)
  img = rs.randint(0, 256, (11, 7, 3)).astype(np.uint8)
  images_lib.write_png(str(tmp_path / "a.png"), img)
  np.testing.assert_array_equal(images_lib.read_png(str(tmp_path / "a.png")),
                                img)
  rgba = rs.randint(0, 256, (10, 6, 4)).astype(np.uint8)
  _png_with_filters(str(tmp_path / "f.png"), rgba)
  np.testing.assert_array_equal(images_lib.read_png(str(tmp_path / "f.png")),
                                rgba)


def _make_folder(root, n_per_class=(3, 2), size=8, seed=0):
  rs = np.random.RandomState(seed)
  out = {}
  for ci, n in enumerate(n_per_class):
    d = root / f"class_{ci}"
    d.mkdir(parents=True)
    for i in range(n):
      img = rs.randint(0, 256, (size, size, 3)).astype(np.uint8)
      images_lib.write_png(str(d / f"img{i}.png"), img)
      out[(ci, i)] = img
  return out


def test_image_folder_reader(tmp_path):
  ref = _make_folder(tmp_path / "data")
  (tmp_path / "data" / "class_0" / "notes.txt").write_text("ignored")
  x, y, names, files = images_lib.read_image_folder(str(tmp_path / "data"))
  assert x.shape == (5, 8, 8, 3) and x.dtype == np.uint8
  np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
  assert names == ["class_0", "class_1"]
  np.testing.assert_array_equal(x[4], ref[(1, 1)])
  x, _, _, _ = images_lib.read_image_folder(str(tmp_path / "data"), crop=4)
  np.testing.assert_array_equal(x[0], ref[(0, 0)][2:6, 2:6])


def test_unreadable_file_names_the_file(tmp_path):
  _make_folder(tmp_path / "data")
  bad = tmp_path / "data" / "class_1" / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
  with pytest.raises(DataError, match="broken.png"):
    images_lib.read_image_folder(str(tmp_path / "data"))
  bad.unlink()
  jpg = tmp_path / "data" / "class_0" / "zz_bad.jpg"
  jpg.write_bytes(b"not a jpeg")
  with pytest.raises(DataError, match="zz_bad.jpg"):
    images_lib.read_image_folder(str(tmp_path / "data"))


def test_mismatched_sizes_and_missing_folder(tmp_path):
  _make_folder(tmp_path / "data")
  images_lib.write_png(str(tmp_path / "data" / "class_1" / "big.png"),
                       np.zeros((9, 9, 3), np.uint8))
  with pytest.raises(DataError, match="big.png"):
    images_lib.read_image_folder(str(tmp_path / "data"))
  with pytest.raises(DataError, match="does not exist"):
    images_lib.read_image_folder(str(tmp_path / "nope"))


def test_npz_reader(tmp_path):
  x = np.random.RandomState(0).rand(4, 5, 5).astype(np.float32)
  np.savez(tmp_path / "a.npz", images=x, labels=np.array([0, 1, 1, 0]))
  img, lab = images_lib.read_npz(str(tmp_path / "a.npz"))
  assert img.shape == (4, 5, 5, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img[..., 0], np.round(x * 255))
  np.testing.assert_array_equal(lab, [0, 1, 1, 0])
  np.savez(tmp_path / "b.npz", images=x, labels=np.array([0, 1]))
  with pytest.raises(DataError, match="b.npz"):
    images_lib.read_npz(str(tmp_path / "b.npz"))
  np.savez(tmp_path / "c.npz", pics=x)
  with pytest.raises(DataError, match="no 'images'"):
    images_lib.read_npz(str(tmp_path / "c.npz"))


def test_pcam_embedded_splits():
  cfg = ml_collections.ConfigDict(dict(name="pcam"))
  ds = {s: load_split(cfg, s) for s in pcam.SPLITS}
  assert [len(ds[s]) for s in pcam.SPLITS] == [200, 160, 40, 100]
  for s in pcam.SPLITS:
    x = ds[s].arrays["image"]
    assert x.shape[1:] == (96, 96, 3) and x.dtype == np.uint8
    assert ds[s].arrays["label"].mean() == 0.5          # balanced classes
    assert ds[s].meta["task"] == "binary"
  # train and val are disjoint and together the pretraining split
  key = lambda a: {a[i].tobytes() for i in range(len(a))}
  tr, va = key(ds["train"].arrays["image"]), key(ds["val"].arrays["image"])
  assert not tr & va and tr | va == key(ds["pretrain"].arrays["image"])


def test_pcam_sample_matches_shared_labels(shared_data):
  rows = list(csv.DictReader(open(shared_data / "pcam_sample" / "labels.csv")))
  with np.load(pcam.RESOURCE) as z:
    for split in ("train", "test"):
      want = {r["path"]: int(r["label"]) for r in rows if r["split"] == split}
      got = dict(zip(z[f"{split}_files"], z[f"{split}_labels"]))
      assert got == want
  pil = pytest.importorskip("PIL.Image")
  with np.load(pcam.RESOURCE) as z:
    f = str(z["test_files"][7])
    np.testing.assert_array_equal(
        z["test_images"][7],
        np.asarray(pil.open(shared_data / "pcam_sample" / f).convert("RGB")))


def test_pcam_folder_and_npz_paths(tmp_path):
  for split, n in (("train", (5, 5)), ("test", (2, 3))):
    _make_folder(tmp_path / "pc" / split, n, seed=len(split))
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=str(tmp_path / "pc"),
                                       val_fraction=0.2))
  tr, va, te = (pcam.load_split(cfg, s) for s in ("train", "val", "test"))
  assert (len(tr), len(va), len(te)) == (8, 2, 5)
  np.testing.assert_array_equal(te.arrays["label"], [0, 0, 1, 1, 1])
  x = np.random.RandomState(0).randint(0, 256, (10, 4, 4, 3)).astype(np.uint8)
  y = np.arange(10) % 2
  np.savez(tmp_path / "d.npz", images=x, labels=y)
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=str(tmp_path / "d.npz"),
                                       test_fraction=0.2, val_fraction=0.25))
  sizes = [len(pcam.load_split(cfg, s)) for s in pcam.SPLITS]
  assert sizes == [8, 6, 2, 2]
  with pytest.raises(DataError, match="does not exist"):
    pcam.load_split(ml_collections.ConfigDict(dict(path=str(tmp_path / "x"))),
                    "train")


def _pcam_tree(root, splits=(("train", 10), ("test", 4)), size=8):
  """``root/[split/]{0,1}/i.png`` (PIL-written), ``n`` images per class."""
  from PIL import Image
  rs = np.random.RandomState(3)
  for split, n in splits:
    for c in ("0", "1"):
      d = root / split / c if split else root / c
      d.mkdir(parents=True)
      for i in range(n):
        Image.fromarray(rs.randint(0, 256, (size, size, 3)).astype(
            np.uint8)).save(d / f"{i:02d}.png")
  return root


def _tar(root, out):
  import tarfile
  with tarfile.open(out, "w") as tf:
    for name in sorted(p.name for p in root.iterdir()):
      tf.add(root / name, arcname=name)
  return str(out)


def _count_decodes(monkeypatch):
  from maskssl.data import records
  decoded = []
  tar_read = records.ImageFiles.__getitem__
  monkeypatch.setattr(records.ImageFiles, "__getitem__",
                      lambda self, i: (decoded.append(i),
                                       tar_read(self, i))[1])
  file_read = images_lib.decode_image
  monkeypatch.setattr(images_lib, "decode_image",
                      lambda *a, **k: (decoded.append(a[0]),
                                       file_read(*a, **k))[1])
  return decoded


@pytest.mark.parametrize("kind", ["tar", "folder"])
def test_pcam_carved_splits_decode_only_their_images(tmp_path, kind,
                                                     monkeypatch):
  from maskssl.data import records
  root = _pcam_tree(tmp_path / "pc")
  path = _tar(root, tmp_path / "pc.tar") if kind == "tar" else str(root)
  # the old rule: decode the whole train split, carve val from its labels
  classes = ["0", "1"]
  whole = {s: records.read_all(records.Mapped(records.ImageFiles(
      str(root / s), None, classes), records.image_label))
           for s in ("train", "test")}
  tr, va = pcam._stratified_split(whole["train"]["label"], 0.2, 5)
  want = {"pretrain": np.arange(20), "train": tr, "val": va}
  decoded = _count_decodes(monkeypatch)
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=path, split_seed=5))
  sizes = {"pretrain": 20, "train": 16, "val": 4, "test": 8}
  for split, n in sizes.items():
    del decoded[:]
    ds = load_split(cfg, split)
    assert len(decoded) == n == len(ds), split
    ref = whole["test" if split == "test" else "train"]
    idx = want.get(split, np.arange(8))
    np.testing.assert_array_equal(ds.arrays["image"], ref["image"][idx])
    np.testing.assert_array_equal(ds.arrays["label"], ref["label"][idx])
  assert list(load_split(cfg, "val").arrays["label"]) == [0, 0, 1, 1]
  # max_examples caps before decoding: a seeded subset of the carved split
  capped = ml_collections.ConfigDict(dict(cfg, max_examples=3))
  del decoded[:]
  ds = load_split(capped, "val")
  assert len(decoded) == 3
  np.testing.assert_array_equal(
      ds.arrays["image"],
      whole["train"]["image"][va[cap_indices(len(va), 3, 5)]])


def test_pcam_unsplit_tar_decodes_only_the_split(tmp_path, monkeypatch):
  from maskssl.data import records
  root = _pcam_tree(tmp_path / "pc", splits=(("", 10),))
  path = _tar(root, tmp_path / "pc.tar")
  whole = records.read_all(records.Mapped(records.ImageFiles(path),
                                          records.image_label))
  tr, te = pcam._stratified_split(whole["label"], 0.2, 1)    # seed + 1
  va = tr[pcam._stratified_split(whole["label"][tr], 0.25, 0)[1]]
  decoded = _count_decodes(monkeypatch)
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=path,
                                       val_fraction=0.25))
  for split, idx in (("test", te), ("val", va)):
    del decoded[:]
    ds = load_split(cfg, split)
    assert len(decoded) == len(idx) == 4
    np.testing.assert_array_equal(ds.arrays["image"], whole["image"][idx])
    np.testing.assert_array_equal(ds.arrays["label"], whole["label"][idx])


def _image_keys(arrays):
  return {a.tobytes() for a in arrays["image"]}


@pytest.mark.parametrize("kind", ["tar", "folder"])
def test_pcam_train_only_data_holds_the_test_out_of_train(tmp_path, kind):
  # the PCam 10k tar layout: train/<label>/ only; the test split is carved
  # (stratified, split_seed + 1) from train, and neither pretraining nor
  # train / val sees a test image
  from maskssl.data import records
  root = _pcam_tree(tmp_path / "pc", splits=(("train", 10),))
  path = _tar(root, tmp_path / "pc.tar") if kind == "tar" else str(root)
  whole = records.read_all(records.Mapped(records.ImageFiles(
      str(root / "train"), None, ["0", "1"]), records.image_label))
  tr, te = pcam._stratified_split(whole["label"], 0.2, 1)
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=path))
  test = load_split(cfg, "test")
  np.testing.assert_array_equal(test.arrays["image"], whole["image"][te])
  np.testing.assert_array_equal(test.arrays["label"], [0] * 2 + [1] * 2)
  held = _image_keys(test.arrays)
  sizes = {"pretrain": 16, "train": 12, "val": 4}
  for split, n in sizes.items():
    ds = load_split(cfg, split)
    assert len(ds) == n, split
    assert not held & _image_keys(ds.arrays), split
  src = pcam.load_source(cfg, "pretrain")
  assert len(src) == 16
  assert not held & _image_keys(records.read_all(src))


def test_pcam_test_path_replaces_the_held_out_test(tmp_path):
  root = _pcam_tree(tmp_path / "pc", splits=(("train", 10),))
  path = _tar(root, tmp_path / "pc.tar")
  own = _pcam_tree(tmp_path / "own", splits=(("", 3),))     # own/<class>/
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=path,
                                       test_path=str(own)))
  test = load_split(cfg, "test")
  np.testing.assert_array_equal(test.arrays["label"], [0, 0, 0, 1, 1, 1])
  # nothing is held out of train for test any more
  assert len(load_split(cfg, "pretrain")) == 20
  assert len(pcam.load_source(cfg, "pretrain")) == 20
  # a tar with a test/ split works the same way
  tar = _tar(_pcam_tree(tmp_path / "t2", splits=(("test", 2),)),
             tmp_path / "t2.tar")
  test = load_split(ml_collections.ConfigDict(dict(cfg, test_path=tar)),
                    "test")
  np.testing.assert_array_equal(test.arrays["label"], [0, 0, 1, 1])
  # other class names would silently relabel: an error naming them
  from PIL import Image
  bad = tmp_path / "bad"
  for c in ("a", "b"):
    (bad / c).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / c / "x.png")
  with pytest.raises(DataError, match="classes"):
    load_split(ml_collections.ConfigDict(dict(cfg, test_path=str(bad))),
               "test")
  with pytest.raises(DataError, match="does not exist"):
    load_split(ml_collections.ConfigDict(dict(cfg, test_path=str(
        tmp_path / "nope"))), "test")


def test_cifar_test_path_is_the_test_split(tmp_path):
  from PIL import Image
  from maskssl.data import cifar
  own = tmp_path / "own"
  rs = np.random.RandomState(0)
  for c, n in (("cat", 2), ("dog", 1)):
    (own / c).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rs.randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(
          own / c / f"{i}.png")
  cfg = ml_collections.ConfigDict(dict(name="cifar10", test_path=str(own)))
  test = cifar.load_split(cfg, "test")
  # labelled by the CIFAR-10 class names (cat = 3, dog = 5), not 0 / 1
  np.testing.assert_array_equal(test.arrays["label"], [3, 3, 5])
  assert len(cifar.load_split(cfg, "train")) == 2000     # embedded train
  # a train-only tar keeps all its images for training when test_path is set
  tar_root = tmp_path / "t"
  for c in ("cat", "dog"):
    (tar_root / "train" / c).mkdir(parents=True)
    for i in range(4):
      Image.fromarray(rs.randint(0, 256, (32, 32, 3)).astype(
          np.uint8)).save(tar_root / "train" / c / f"{i}.png")
  tar = _tar(tar_root, tmp_path / "t.tar")
  cfg = ml_collections.ConfigDict(dict(name="cifar10", path=tar,
                                       test_path=str(own)))
  assert len(cifar.load_split(cfg, "pretrain")) == 8
  assert len(cifar.load_source(cfg, "pretrain")) == 8
  np.testing.assert_array_equal(cifar.load_split(cfg, "test").arrays["label"],
                                [3, 3, 5])
  (own / "zebra").mkdir()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(own / "zebra" / "z.png")
  with pytest.raises(DataError, match="classes"):
    cifar.load_split(cfg, "test")


def test_caps_take_a_seeded_subset_not_the_first_class(tmp_path):
  # a tar sorted by class: the first 6 of 20 would all be class 0
  from maskssl.data import cifar
  root = _pcam_tree(tmp_path / "pc", splits=(("train", 10),))
  path = _tar(root, tmp_path / "pc.tar")
  cfg = ml_collections.ConfigDict(dict(name="pcam", path=path,
                                       max_examples=6))
  labels = load_split(cfg, "pretrain").arrays["label"]
  assert len(labels) == 6 and 0 < labels.sum() < 6
  src = pcam.load_source(cfg, "pretrain")     # file-backed: same subset
  from maskssl.data import records
  np.testing.assert_array_equal(records.read_all(src)["label"], labels)
  ccfg = ml_collections.ConfigDict(dict(name="cifar10", path=path,
                                        test_size=4, max_train=6))
  tr = cifar.load_split(ccfg, "pretrain").arrays["label"]
  assert len(tr) == 6 and len(set(tr)) == 2
  np.testing.assert_array_equal(
      records.read_all(cifar.load_source(ccfg, "pretrain"))["label"], tr)
  idx = cap_indices(100, 10, 0)
  assert len(idx) == 10 and (np.diff(idx) > 0).all()
  assert not np.array_equal(idx, cap_indices(100, 10, 1))
  np.testing.assert_array_equal(cap_indices(5, 0, 0), np.arange(5))
