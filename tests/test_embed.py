"""python -m maskssl.embed on a tiny trained HIGGS run (and image sources
through a stub encoder), and SMA co-masking from the run's real mask path."""
import csv
import os
import tarfile

import jax
import ml_collections
import numpy as np
import pytest

import maskssl
from maskssl import embed
from maskssl import run as run_lib
from maskssl.data import tabular
from maskssl.data.base import DataError
from maskssl.data.images import write_png
from maskssl.tools import sma_masks
from sma_tiny import tiny_sma_particle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_higgs(workdir):
  c = tiny_sma_particle(width=16, heads=2, batch_size=16, total_steps=2,
                        checkpoint_every=1, keep_checkpoints=5,
                        log_every=1000)
  c.evals = ml_collections.ConfigDict()
  run_lib.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("higgs_run"))
  _tiny_higgs(d)
  return d, maskssl.load(d)


def _write_higgs_csv(path, x, y, header=True):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    if header:
      w.writerow(list(tabular.HIGGS_COLUMNS) + ["label"])
    for r, l in zip(x, y):
      w.writerow([repr(float(v)) for v in r] + [int(l)])


def test_higgs_file_embeds_like_training(run, tmp_path):
  """The test-split rows as a CSV embed bitwise as enc.encode of the run's
  own test split (same preprocessing), one row per line, ids and labels."""
  workdir, enc = run
  x, y = tabular._embedded()
  test_idx = tabular._splits(enc.config.data, len(x))["test"][:300]
  path = str(tmp_path / "rows.csv")
  _write_higgs_csv(path, x[test_idx], y[test_idx])
  out = str(tmp_path / "emb.npy")
  assert embed.main([f"--workdir={workdir}", f"--data.path={path}",
                     f"--out={out}", "--batch_size=64", "--no_progress"]) == 0
  emb = np.load(out)
  ref = enc.encode(enc.load_data("test").take(np.arange(300)), batch_size=64)
  assert emb.shape == (300, ref.shape[1]) and emb.dtype == np.float32
  np.testing.assert_array_equal(emb, ref)
  with open(embed.ids_path(out)) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["id", "label", "label_name"]
  assert [r[0] for r in rows[1:]] == [str(i) for i in range(300)]
  assert [int(r[1]) for r in rows[1:]] == y[test_idx].tolist()
  assert {r[2] for r in rows[1:]} <= {"background", "signal"}


def test_higgs_zscore_uses_run_statistics(run, tmp_path):
  """A shifted file is standardised with the run's pretraining statistics,
  not its own: re-standardising with the file's stats gives other rows."""
  _, enc = run
  x, y = tabular._embedded()
  raw = x[:40] * 2.0 + 3.0
  path = str(tmp_path / "shifted.csv")
  _write_higgs_csv(path, raw, y[:40], header=False)
  rec = embed.file_records(enc, path)
  got = embed.embed_records(enc, rec, batch_size=64, progress=False)
  mean = np.asarray(enc.preprocessing["feature_mean"])
  std = np.asarray(enc.preprocessing["feature_std"])
  z = ((raw.astype(np.float64) - mean) / std).astype(np.float32)
  want = enc.encode({"x": z[..., None], "valid": np.ones(z.shape, bool)},
                    batch_size=64)
  np.testing.assert_allclose(got, want, atol=1e-6)
  own = (raw - raw.mean(0)) / raw.std(0)
  other = enc.encode({"x": own[..., None].astype(np.float32),
                      "valid": np.ones(own.shape, bool)}, batch_size=64)
  assert np.abs(got - other).max() > 1e-2
  assert len(got) == 40 and rec.ids == [str(i) for i in range(40)]


def test_csv_output_and_reader(run, tmp_path):
  _, enc = run
  x, y = tabular._embedded()
  rec = embed._arrays_records(
      dict(x=((x[:20] - x.mean(0)) / x.std(0))[..., None].astype(np.float32),
           valid=np.ones((20, 28), bool)), [f"r{i}" for i in range(20)],
      y[:20], ["background", "signal"], "mem")
  emb = embed.embed_records(enc, rec, batch_size=64, progress=False)
  out_csv, out_npy = str(tmp_path / "e.csv"), str(tmp_path / "e.npy")
  embed.write_embeddings(out_csv, emb, rec)
  embed.write_embeddings(out_npy, emb, rec)
  with open(out_csv) as f:
    head = next(csv.reader(f))
  assert head[:3] == ["id", "label", "label_name"]
  assert head[3:] == [f"e{j}" for j in range(emb.shape[1])]
  for path in (out_csv, out_npy):
    table, ids, labels, names = embed.read_embeddings(path)
    np.testing.assert_array_equal(table, emb)   # 9 digits: exact float32
    assert ids == rec.ids and labels.tolist() == y[:20].tolist()
    assert names == ["background", "signal"]


def test_run_splits_without_path(run):
  _, enc = run
  rec = embed.split_records(enc, ["val", "test"])
  n_val, n_test = len(enc.load_data("val")), len(enc.load_data("test"))
  assert len(rec) == n_val + n_test and len(rec.labels) == len(rec)
  assert rec.ids[0] == "val/0" and rec.ids[-1] == f"test/{n_test - 1}"
  assert set(rec.chunks(0, 2)) == set(enc.input_spec)


def test_bad_inputs_name_the_file(run, tmp_path, capsys):
  workdir, enc = run
  missing = str(tmp_path / "nope.csv")
  assert embed.main([f"--workdir={workdir}", f"--data.path={missing}",
                     f"--out={tmp_path / 'e.npy'}", "--no_progress"]) == 2
  assert missing in capsys.readouterr().err
  bad = tmp_path / "bad.csv"
  x, y = tabular._embedded()
  _write_higgs_csv(str(bad), x[:5], y[:5], header=False)
  lines = bad.read_text().splitlines()
  cells = lines[3].split(",")
  lines[3] = ",".join(cells[:2] + ["oops"] + cells[3:])
  bad.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=rf"{bad}:4: non-numeric cell 'oops'"):
    embed.file_records(enc, str(bad))
  assert embed.main([f"--workdir={workdir}", "--data.nonsense=1",
                     f"--out={tmp_path / 'e.npy'}"]) == 2
  assert "unknown data key 'nonsense'" in capsys.readouterr().err


def test_comasking_of_real_masks(run):
  """Co-masking of the train step's own masks: symmetric, diagonal = each
  feature's mask rate, rows = K x rate with K = round(0.2 * 28) = 6."""
  _, enc = run
  ds = enc.load_data("test")
  arrays = {k: ds.arrays[k][:64] for k in ("x", "valid")}
  m = sma_masks.masks_for(enc.method, enc.state, arrays,
                          jax.random.PRNGKey(0), 0.0, batch_size=32)
  assert m.shape == (64, 28) and (m.sum(1) == 6).all()
  c, e = sma_masks.comasking(m, arrays["valid"])
  np.testing.assert_allclose(c, c.T)
  np.testing.assert_allclose(np.diag(c), m.mean(0))
  np.testing.assert_allclose(c.sum(1), 6 * np.diag(c))
  assert np.isclose(np.trace(c), 6)
  np.testing.assert_allclose(np.diag(e), 6 / 28)
  # the same call as the train step: the mask is a pure function of rng
  m2 = sma_masks.masks_for(enc.method, enc.state, arrays,
                           jax.random.PRNGKey(0), 0.0, batch_size=32)
  np.testing.assert_array_equal(m, m2)


# ---- image sources through a stub encoder (no image model to train) -------
class _StubEncoder:
  """input_spec / config / encode like maskssl.api.Encoder; the feature is
  each image's mean colour."""

  def __init__(self, name, spec, **data):
    from maskssl import parallel
    self.config = ml_collections.ConfigDict(dict(
        method="stub", data=dict(name=name, path="", **data)))
    self.input_spec = spec
    self.preprocessing = {}
    self.mesh = parallel.make_mesh()

  def data_config(self, **overrides):
    cfg = ml_collections.ConfigDict(self.config.data.to_dict())
    cfg.update(overrides)
    return cfg

  def encode(self, data, batch_size=256):
    x = data["image"] if "image" in data else data["x"]
    x = np.asarray(x, np.float32)
    return x.reshape(len(x), -1, 3).mean(1)


def _image_tree(root, size=8):
  rng = np.random.default_rng(0)
  pics = {}
  for cls in ("cat", "airplane"):
    os.makedirs(root / "train" / cls, exist_ok=True)
    for i in range(3):
      img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      name = f"train/{cls}/{i}.png"
      write_png(str(root / name), img)
      pics[name] = img
  return pics


def test_image_folder_and_tar(tmp_path):
  pics = _image_tree(tmp_path / "imgs")
  enc = _StubEncoder("cifar10", {"image": ((8, 8, 3), "uint8")})
  rec = embed.file_records(enc, str(tmp_path / "imgs"))
  assert sorted(rec.ids) == sorted(pics) and len(rec) == 6
  # CIFAR-10 class names of the run: airplane = 0, cat = 3
  assert [rec.label_names[l] for l in rec.labels] == [
      i.split("/")[1] for i in rec.ids]
  assert set(rec.labels.tolist()) == {0, 3}
  emb = embed.embed_records(enc, rec, batch_size=4, progress=False)
  want = np.stack([pics[i].reshape(-1, 3).mean(0) for i in rec.ids])
  np.testing.assert_allclose(emb, want, rtol=1e-6)
  tar = tmp_path / "imgs.tar"
  with tarfile.open(tar, "w") as t:
    t.add(tmp_path / "imgs" / "train", arcname="train")
  rec_t = embed.file_records(enc, str(tar))
  emb_t = embed.embed_records(enc, rec_t, batch_size=4, progress=False)
  order = [rec_t.ids.index(i) for i in rec.ids]
  np.testing.assert_array_equal(emb_t[order], emb)
  np.testing.assert_array_equal(rec_t.labels[order], rec.labels)
  out = str(tmp_path / "img.csv")
  embed.write_embeddings(out, emb_t, rec_t)
  _, ids, labels, names = embed.read_embeddings(out)
  assert ids == rec_t.ids and names[3] == "cat"
  # another size is resized + centre-cropped to the run's input size
  big = np.repeat(np.repeat(pics["train/cat/0.png"], 2, 0), 2, 1)
  write_png(str(tmp_path / "big.png"), big)
  r = embed.file_records(enc, str(tmp_path / "big.png"))
  assert r.chunks(0, 1)["image"].shape == (1, 8, 8, 3) and r.labels is None


def test_pixel_tokens_as_training(tmp_path):
  from maskssl.data import pixels
  pics = _image_tree(tmp_path / "imgs", size=8)
  enc = _StubEncoder("cifar10_pixels", {"x": ((16, 3), "float32"),
                                        "valid": ((16,), "bool")},
                     image_size=4, chunk=8)
  rec = embed.file_records(enc, str(tmp_path / "imgs"))
  got = rec.chunks(0, len(rec))["x"]
  want = pixels.pixel_tokens(np.stack([pics[i] for i in rec.ids]), 4,
                             False, chunk=8)
  np.testing.assert_array_equal(got, want)


def test_bad_image_names_member(tmp_path):
  _image_tree(tmp_path / "imgs")
  (tmp_path / "imgs" / "train" / "cat" / "broken.png").write_bytes(b"junk")
  tar = tmp_path / "bad.tar"
  with tarfile.open(tar, "w") as t:
    t.add(tmp_path / "imgs" / "train", arcname="train")
  enc = _StubEncoder("cifar10", {"image": ((8, 8, 3), "uint8")})
  rec = embed.file_records(enc, str(tar))
  with pytest.raises(DataError, match=r"bad\.tar\[train/cat/broken\.png\]"):
    embed.embed_records(enc, rec, batch_size=4, progress=False)
  rec = embed.file_records(enc, str(tmp_path / "imgs"))
  with pytest.raises(DataError, match=r"cat/broken\.png: cannot read image"):
    embed.embed_records(enc, rec, batch_size=4, progress=False)
