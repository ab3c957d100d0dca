"""Input-pipeline sources beyond the loose files: TFDS ``higgs`` by row
(a fake ``tensorflow_datasets`` module: TensorFlow / TFDS are optional),
bad records inside ArrayRecord shards, same-seed runs, sources that pickle
into grain worker processes."""
import json
import os
import pickle
import sys
import types

import numpy as np
import pytest

from maskssl.data import convert, grain_source, load_source, load_split
from maskssl.data import records, streams, tabular
from maskssl.data.base import DataError


class FakeHiggs:
  """``tfds.data_source("higgs", "train")``: records of real HIGGS rows as
  TFDS stores them (28 float64 features by name, float ``class_label``)."""

  def __init__(self, n, nan_at=None):
    x, y = tabular._embedded()
    self.x, self.y = x[:n].astype(np.float64), y[:n]
    if nan_at is not None:
      self.x[nan_at, 3] = np.nan
    self.reads = 0

  def __len__(self):
    return len(self.y)

  def _rec(self, i):
    rec = {c: self.x[i, k] for k, c in enumerate(tabular.HIGGS_COLUMNS)}
    rec["class_label"] = np.float32(self.y[i])
    return rec

  def __getitem__(self, i):
    self.reads += 1
    return self._rec(i)

  def __getitems__(self, rows):
    self.reads += len(rows)
    return [self._rec(i) for i in rows]


@pytest.fixture
def fake_tfds(monkeypatch):
  calls = []

  def install(src):
    def data_source(name, split, data_dir=None, download=True):
      calls.append(dict(name=name, split=split, data_dir=data_dir,
                        download=download))
      return src
    monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                        types.SimpleNamespace(data_source=data_source))
    return calls
  return install


def test_tfds_higgs_is_read_by_row_with_the_in_memory_batches(tmp_path,
                                                              fake_tfds):
  fake = FakeHiggs(2400)
  calls = fake_tfds(fake)
  # a fresh data_dir: the tables are cached per (data_dir, max_rows)
  kw = dict(source="tfds", tfds_data_dir=str(tmp_path), test_size=300,
            val_size=200, train_pool_size=400)
  src = load_source(tabular.default_config(**kw), "pretrain")
  assert isinstance(src, streams.HiggsRows) and len(src) == 1900
  assert all(c["name"] == "higgs" and c["download"] is False and
             c["data_dir"] == str(tmp_path) for c in calls)
  # one batch reads its own 64 rows, not the data set
  before = fake.reads
  loader = grain_source.BatchLoader(src, 64, 5, 100)
  batch = loader.steps[30]   # the second epoch
  assert fake.reads - before == 64
  assert batch["x"].shape == (64, 28, 1) and batch["x"].dtype == np.float32
  # data.in_memory=True: the whole set loaded, as before; same batches
  whole = load_split(tabular.default_config(in_memory=True, **kw), "pretrain")
  assert isinstance(whole.arrays["x"], np.ndarray)
  mem = grain_source.BatchLoader(whole, 64, 5, 100)
  for t in (0, 1, 29, 30, 31):
    a, b = loader.steps[t], mem.steps[t]
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  for split in ("train", "val", "test"):   # read from the source by row
    got = load_split(tabular.default_config(**kw), split)
    ref = load_split(tabular.default_config(in_memory=True, **kw), split)
    for k in ref.arrays:
      np.testing.assert_array_equal(got.arrays[k], ref.arrays[k])
  # max_rows: the first rows only (statistics recounted)
  cut = dict(kw, tfds_data_dir=str(tmp_path / "cut"), max_rows=1200)
  a = load_source(tabular.default_config(**cut), "pretrain")
  b = load_split(tabular.default_config(in_memory=True, **cut), "pretrain")
  np.testing.assert_array_equal(a.read_batch(np.arange(len(a)))["x"],
                                b.arrays["x"])


def test_tfds_higgs_bad_row_and_not_prepared(tmp_path, fake_tfds):
  fake_tfds(FakeHiggs(900, nan_at=77))
  kw = dict(source="tfds", test_size=100, val_size=100)
  with pytest.raises(DataError, match=r"tfds:higgs/train\[77\]: non-finite"):
    load_source(tabular.default_config(tfds_data_dir=str(tmp_path / "a"),
                                       **kw), "pretrain")
  src = load_source(tabular.default_config(
      tfds_data_dir=str(tmp_path / "b"), bad_records="skip", **kw),
      "pretrain")
  assert src.meta["skipped_rows"] == 1 and len(src) == 899 - 200
  # rows after the dropped one are named by their own TFDS index
  assert src.table.describe(77) == "tfds:higgs/train[78]"

  def missing(name, split, data_dir=None, download=True):
    raise FileNotFoundError(f"no {name} in {data_dir}")
  sys.modules["tensorflow_datasets"].data_source = missing
  with pytest.raises(DataError, match="tfds build higgs --file_format="
                     "array_record"):
    load_source(tabular.default_config(tfds_data_dir=str(tmp_path / "c"),
                                       **kw), "pretrain")


def _write_shard(out, payloads, kind="images"):
  """A converted directory whose records are ``payloads`` (bytes)."""
  os.makedirs(out)
  w = convert._writer(os.path.join(out, "train-00000.array_record"),
                      "group_size:1,uncompressed")
  for p in payloads:
    w.write(p)
  w.close()
  with open(os.path.join(out, records.META_FILE), "w") as f:
    json.dump(dict(kind=kind, label_names=["a", "b"], splits=dict(
        train=dict(files=["train-00000.array_record"],
                   count=len(payloads)))), f)


def test_bad_records_in_the_middle_of_a_shard(tmp_path):
  from PIL import Image
  import io
  rs = np.random.RandomState(0)
  payloads = []
  for i in range(20):
    buf = io.BytesIO()
    Image.fromarray(rs.randint(0, 256, (6, 5, 3)).astype(np.uint8)).save(
        buf, format="PNG")
    data = buf.getvalue()
    if i == 7:
      data = data[:30] + b"\0" * 20   # a corrupt image
    payloads.append(records.pack_record(dict(image=data, label=i % 2)))
  payloads[12] = b"\xc1 not msgpack"  # an unreadable record
  out = str(tmp_path / "shard")
  _write_shard(out, payloads)
  src = records.Mapped(records.ArrayRecordSource(out, "train"),
                       records.image_label)
  err = grain_source.BatchLoader(src, 4, 0, 5)
  skip = grain_source.BatchLoader(
      src, 4, 0, 5, options=grain_source.LoaderOptions(bad_records="skip"))
  bad = []
  for t in range(5):   # one epoch: every record once
    idx = err.host_indices(t)
    for i in (7, 12):
      if i in idx:
        with pytest.raises(DataError, match=rf"bad record .*shard\[train:{i}"
                           r"\]"):
          err.steps[t]
    b = skip.steps[t]
    assert b["image"].shape == (4, 6, 5, 3)   # shape kept
    bad += b.get(grain_source.BAD_KEY, [])
  assert len(bad) == 2
  assert any("shard[train:7]" in m for m in bad)
  assert any("shard[train:12]: cannot read record" in m for m in bad)


def test_same_seed_same_batches_and_sources_pickle(tmp_path):
  from maskssl.data import molecules, proteins
  smi = tmp_path / "c.smi"
  smi.write_text("".join(f"{'C' * (1 + i % 23)}O\n" for i in range(200)))
  fa = tmp_path / "p.fa"
  fa.write_text("".join(f">s{i}\n{'MKV' * (1 + i % 7)}\n" for i in range(50)))
  for f in (smi, fa):
    convert.convert(str(f), str(tmp_path / ("o_" + f.name)), progress=False)
  srcs = [
      load_source(molecules.default_config(
          corpus=str(tmp_path / "o_c.smi"), max_len=32,
          pretrain_exclude_eval=False), "pretrain"),
      load_source(proteins.default_config(path=str(tmp_path / "o_p.fa"),
                                          max_len=16), "pretrain")]
  for src in srcs:
    # grain workers get the source pickled: it reopens its shards there
    clone = pickle.loads(pickle.dumps(src))
    for i in (0, len(src) - 1):
      np.testing.assert_array_equal(clone[i]["tokens"], src[i]["tokens"])
    opts = grain_source.LoaderOptions(threads=2, prefetch=3)
    runs = [list(grain_source.BatchLoader(s, 4, 11, 12, options=opts)
                 .iterate(0)) for s in (src, clone)]
    for a, b in zip(*runs):
      np.testing.assert_array_equal(a["tokens"], b["tokens"])
    other = grain_source.BatchLoader(src, 4, 12, 12).steps[0]["tokens"]
    assert not np.array_equal(other, runs[0][0]["tokens"])


def test_cifar_tar_eval_split_decodes_only_itself(tmp_path, monkeypatch):
  import io
  import tarfile
  from PIL import Image
  from maskssl.data import cifar
  tar = str(tmp_path / "t.tar")
  rs = np.random.RandomState(1)
  with tarfile.open(tar, "w") as tf:   # train/ only: test_size held out
    for i in range(40):
      buf = io.BytesIO()
      Image.fromarray(rs.randint(0, 256, (8, 8, 3)).astype(np.uint8)).save(
          buf, format="PNG")
      info = tarfile.TarInfo(f"train/{cifar.LABEL_NAMES[i % 4]}/{i:02d}.png")
      info.size = len(buf.getvalue())
      tf.addfile(info, io.BytesIO(buf.getvalue()))
  cfg = cifar.default_config(path=tar, test_size=8)
  tr_x, tr_y, te_x, te_y, _ = cifar.load_arrays(cfg)   # both, as before
  decoded = []
  read = records.ImageFiles.__getitem__
  monkeypatch.setattr(records.ImageFiles, "__getitem__",
                      lambda self, i: (decoded.append(i), read(self, i))[1])
  test = cifar.load_split(cfg, "test")
  assert len(decoded) == 8
  np.testing.assert_array_equal(test.arrays["image"], te_x)
  np.testing.assert_array_equal(test.arrays["label"], te_y)
  train = cifar.load_split(cfg, "train")
  assert len(decoded) == 40
  np.testing.assert_array_equal(train.arrays["image"], tr_x)
  assert test.meta["num_classes"] == train.meta["num_classes"] == 10
