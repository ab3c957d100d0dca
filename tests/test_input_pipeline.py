"""The grain input pipeline: (seed, step) batches, resume, host shards,
converter round trips, bad records, a dead worker, memory, imagenet2012."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap

import jax
import numpy as np
import pytest

from maskssl import train as train_lib
from maskssl.data import convert, grain_source, imagenet, records, streams
from maskssl.data import load_source, tabular
from maskssl.data.base import ArrayDataset, DataError, batch_indices
from toy import Toy, toy_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lc(**kw):
  base = dict(batch_size=32, total_steps=16, seed=3, log_every=4,
              checkpoint_every=6, keep_checkpoints=3, async_checkpoints=False,
              verbose=False)
  base.update(kw)
  return train_lib.LoopConfig(**base)


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(
      state["params"]))]


class Recording:
  """A per-record source that remembers which records it served."""

  def __init__(self, n=100):
    self.x = np.arange(n, dtype=np.int64)
    self.seen = []

  def __len__(self):
    return len(self.x)

  def __getitem__(self, i):
    self.seen.append(int(i))
    return {"x": self.x[i]}


def _npz_source(tmp_path, ds):
  path = str(tmp_path / "toy.npz")
  np.savez(path, **ds.arrays)   # uncompressed: rows are read from the file
  return records.NpzArrays(path, list(ds.arrays))


def _jpeg(img) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _image_tar(path, n=24, bad_at=None, sizes=((20, 16),), split="train"):
  """``split/<class>/i.jpg`` JPEGs (a corrupt one at ``bad_at``)."""
  rs = np.random.RandomState(0)
  with tarfile.open(path, "w") as tf:
    for i in range(n):
      h, w = sizes[i % len(sizes)]
      data = _jpeg(rs.randint(0, 256, (h, w, 3)).astype(np.uint8))
      if i == bad_at:
        data = data[:40] + b"\0" * 60
      info = tarfile.TarInfo(f"{split}/c{i % 3}/{i:03d}.jpg")
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))
  return path


# ---------------------------------------------------------------- order --
def test_batches_are_the_in_memory_order_and_resume_is_a_slice():
  ds = toy_dataset(n=100)
  ref = [ds.batch(batch_indices(100, 32, t, 7)) for t in range(9)]
  for opts in (grain_source.LoaderOptions(threads=0, prefetch=0),
               grain_source.LoaderOptions(threads=2, prefetch=3)):
    loader = grain_source.BatchLoader(ds, 32, 7, 9, options=opts)
    got = list(loader.iterate(0))
    assert len(got) == 9
    for a, b in zip(got, ref):
      np.testing.assert_array_equal(a["x"], b["x"])
    resumed = loader.iterate(5)
    np.testing.assert_array_equal(next(resumed)["x"], ref[5]["x"])
  # a per-record source gives the same batches as its arrays in memory
  rec = grain_source.BatchLoader(Recording(100), 32, 7, 9)
  for t, b in enumerate(rec.iterate(0)):
    np.testing.assert_array_equal(b["x"], batch_indices(100, 32, t, 7))


def test_two_processes_read_disjoint_shards_whose_union_is_the_batch():
  for t in range(7):   # 3 full batches per epoch: crosses epochs
    srcs = [Recording(100), Recording(100)]
    parts = [grain_source.BatchLoader(srcs[p], 32, 5, 7, p, 2).steps[t]["x"]
             for p in range(2)]
    assert not set(parts[0]) & set(parts[1])
    np.testing.assert_array_equal(np.concatenate(parts),
                                  batch_indices(100, 32, t, 5))
    for p in range(2):   # each process read only its own records
      assert sorted(srcs[p].seen) == sorted(parts[p].tolist())


def test_file_source_trains_like_memory_and_resumes_bit_exact(tmp_path):
  ds = toy_dataset()
  src = _npz_source(tmp_path, ds)
  mem, _ = train_lib.train_loop(Toy(), ds, _lc(), str(tmp_path / "mem"))
  ref, summary = train_lib.train_loop(Toy(), src, _lc(), str(tmp_path / "f"))
  for a, b in zip(_params(mem), _params(ref)):
    np.testing.assert_array_equal(a, b)
  assert 0 <= summary["data_wait_share"] <= 1
  logged = [json.loads(l) for l in open(tmp_path / "f" / "metrics.jsonl")]
  assert all("data_wait_s" in r and "data_wait_share" in r for r in logged
             if "loss" in r)

  def kill_at_7(step, state):
    if step == 7:
      os.kill(os.getpid(), signal.SIGTERM)

  wd = str(tmp_path / "run")
  with pytest.raises(train_lib.Interrupted):
    train_lib.train_loop(Toy(), src, _lc(), wd, hooks=[(1, kill_at_7)])
  resumed, s2 = train_lib.train_loop(Toy(), src, _lc(), wd)
  assert s2["start_step"] == 7
  for a, b in zip(_params(ref), _params(resumed)):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ converter --
def test_converter_round_trips_each_source(tmp_path, capsys):
  # images: a tar and the same files as a folder
  tar = _image_tar(str(tmp_path / "imgs.tar"), n=9, sizes=((12, 10), (8, 9)))
  folder = tmp_path / "folder"
  with tarfile.open(tar) as tf:
    tf.extractall(folder)
  for src in (tar, str(folder)):
    out = str(tmp_path / ("o_" + os.path.basename(src)))
    assert convert.main([f"--src={src}", f"--out={out}", "--quiet",
                         "--records_per_shard=4"]) == 0
    meta = records.read_records_meta(out)
    assert meta["kind"] == "images" and meta["splits"]["train"]["count"] == 9
    assert len(meta["splits"]["train"]["files"]) == 3
    conv = records.ArrayRecordSource(out, "train")
    loose = records.ImageFiles(src, "train")
    for i in range(9):
      a, b = conv[i], loose[i]
      np.testing.assert_array_equal(a["image"], b["image"])
      assert a["label"] == b["label"]
  # a table (HIGGS layout, header, label last)
  x, y = tabular._embedded()
  csv_path = tmp_path / "t.csv"
  with open(csv_path, "w") as f:
    f.write(",".join(tabular.HIGGS_COLUMNS) + ",label\n")
    for r, l in zip(x[:50], y[:50]):
      f.write(",".join(repr(float(v)) for v in r) + f",{l}\n")
  out = str(tmp_path / "o_t")
  convert.convert(str(csv_path), out, progress=False)
  conv = records.ArrayRecordSource(out)
  rx, ry = tabular.read_csv(str(csv_path))
  assert len(conv) == 50
  for i in (0, 49):
    np.testing.assert_array_equal(conv[i]["x"], rx[i])
    assert int(conv[i]["label"]) == ry[i]
  kw = dict(test_size=10, val_size=5, train_pool_size=20)   # HIGGS module
  mem = load_source(tabular.default_config(path=str(csv_path), **kw),
                    "pretrain")
  fb = load_source(tabular.default_config(path=out, **kw), "pretrain")
  got = fb.read_batch(np.arange(len(fb)))
  for k in mem.arrays:
    np.testing.assert_array_equal(got[k], mem.arrays[k])
  # SMILES and FASTA: the modules' pretraining batches from the converted
  # shards are those of the loose files
  _smiles_round_trip(tmp_path)
  _fasta_round_trip(tmp_path)
  assert "wrote" in capsys.readouterr().out


def _same_batches(a, b, batch=8, seed=3, steps=None):
  """Both sources give identical grain-loader batches at every step (more
  than one epoch); returns the number of steps compared."""
  assert len(a) == len(b)
  la, lb = (grain_source.BatchLoader(s, batch, seed, 10 ** 6) for s in (a, b))
  steps = steps or 2 * (len(a) // batch) + 1
  for t in range(steps):
    ba, bb = la.steps[t], lb.steps[t]
    assert sorted(ba) == sorted(bb)
    for k in ba:
      np.testing.assert_array_equal(ba[k], bb[k])
  return steps


def _smiles_round_trip(tmp_path):
  import gzip
  from maskssl.data import load_split, molecules
  evaluated = sorted(molecules._eval_smiles(molecules.default_config(
      scaffold_backend="python")))[:5]   # bbbp val/test: excluded
  rows = [f"m{i},{'C' * (1 + i % 37)}{'N' if i % 3 else 'O'}" for i in
          range(240)] + [f"e{i},{s}" for i, s in enumerate(evaluated)]
  rows[5] = 'q,"C(=O)O"'          # a quoted cell
  rows[9] = "empty,"              # an empty cell: skipped, as the reader does
  smi = tmp_path / "m.csv.gz"    # header with the column, blank lines, .gz
  with gzip.open(smi, "wt") as f:
    f.write("id,SMILES\n" + "\n\n".join(rows[:20]) + "\n"
            + "\n".join(rows[20:]) + "\n")
  moses = tmp_path / "moses.smi"  # MOSES layout: a bare SMILES header
  moses.write_text("SMILES\n" + "".join(f"{'c1ccccc1' * (1 + i % 4)}C\n"
                                        for i in range(90)))
  for src, kw in ((smi, dict(corpus_max=200)), (moses, dict(pack=False))):
    out = str(tmp_path / ("o_" + src.name))
    convert.convert(str(src), out, progress=False)
    conv = records.ArrayRecordSource(out)
    assert [conv.raw_record(i)["smiles"] for i in range(len(conv))] == \
        molecules.read_smiles_file(str(src)) == \
        molecules.read_smiles_file(out)
    kw = dict(kw, max_len=48, scaffold_backend="python")
    loose = load_split(molecules.default_config(corpus=str(src), **kw),
                       "pretrain")
    shards = load_source(molecules.default_config(corpus=out, **kw),
                         "pretrain")   # read by record by default
    assert isinstance(shards, streams.SmilesRows)
    assert shards.meta["num_smiles"] == loose.meta["num_smiles"]
    whole = load_split(molecules.default_config(corpus=out, in_memory=True,
                                                **kw), "pretrain")
    _same_batches(loose, shards)
    _same_batches(loose, whole)
  assert loose.meta["num_smiles"] == 90
  for s in evaluated:   # the evaluated molecules were removed from both
    assert s not in molecules.read_smiles_file(out)
  with pytest.raises(DataError, match="converted from column 'SMILES', not "
                     "data.corpus_column='smi'"):
    load_source(molecules.default_config(corpus=out, corpus_column="smi"),
                "pretrain")


def _fasta_round_trip(tmp_path):
  from maskssl.data import load_split, proteins
  fa = tmp_path / "p.fasta"   # multi-line, lower case, '*', ';', unknown J
  fa.write_text("; a comment\n" + "".join(
      f">s{i} desc {i}\n{'mkvl' * (1 + i % 9)}\n{'AC' if i % 4 else 'JA'}*"
      f"\n\n" for i in range(40)))
  out = str(tmp_path / "o_p")
  convert.convert(str(fa), out, progress=False)
  recs = records.ArrayRecordSource(out)
  assert (recs.raw_record(0)["id"], recs.raw_record(0)["sequence"]) == (
      "s0", "MKVLJA")   # stored as read; the module maps J when reading
  assert proteins.read_fasta(out) == proteins.read_fasta(str(fa))
  kw = dict(max_len=24)
  loose = load_split(proteins.default_config(path=str(fa), **kw), "pretrain")
  shards = load_source(proteins.default_config(path=out, **kw), "pretrain")
  assert isinstance(shards, streams.FastaRows) and shards.src is not None
  _same_batches(loose, shards)
  _same_batches(loose, load_split(proteins.default_config(
      path=out, in_memory=True, **kw), "pretrain"))
  strict = load_source(proteins.default_config(path=out, unknown="error",
                                               **kw), "pretrain")
  with pytest.raises(DataError, match=r"o_p\[all:0\]: unknown residue "
                     "letter 'J'"):
    strict[0]


# ---------------------------------------------------------- bad records --
def test_bad_records_error_or_skip_never_silent(tmp_path, caplog):
  tar = _image_tar(str(tmp_path / "bad.tar"), n=40, bad_at=17)
  src = records.Mapped(records.ImageFiles(tar, "train"), records.image_label)
  bad_name = f"{tar}[train/c2/017.jpg]"
  loader = grain_source.BatchLoader(src, 8, 0, 5)
  step = next(t for t in range(5) if 17 in loader.host_indices(t))
  with pytest.raises(DataError, match=r"bad record .*017\.jpg"):
    loader.steps[step]
  skip = grain_source.BatchLoader(
      src, 8, 0, 5, options=grain_source.LoaderOptions(bad_records="skip"))
  batch = skip.steps[step]
  assert batch["image"].shape == (8, 20, 16, 3)   # shape kept
  assert len(batch[grain_source.BAD_KEY]) == 1
  assert bad_name in batch[grain_source.BAD_KEY][0]
  # the converter: error names the member, skip counts it
  with pytest.raises(DataError, match="017.jpg"):
    convert.convert(tar, str(tmp_path / "c1"), progress=False)
  meta = convert.convert(tar, str(tmp_path / "c2"), bad_records="skip",
                         progress=False)
  assert meta["skipped"] == 1 and meta["splits"]["train"]["count"] == 39
  # a bad CSV row: error names file:line, skip drops it with a warning
  rows = ["1,2", "0,3", "x,1", "1,4"] * 10
  (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
  with pytest.raises(DataError, match=r"r\.csv:3: non-numeric cell 'x'"):
    streams._Table(str(tmp_path / "r.csv"), "last", 0, "error",
                   str(tmp_path), 1)
  t = streams._Table(str(tmp_path / "r.csv"), "first", 0, "skip",
                     str(tmp_path), 1)
  assert len(t) == 30 and t.skipped == 10
  # through the loop: a warning per skipped record and data_skipped logged
  ds_src = records.Mapped(records.ImageFiles(tar, "train"), _as_toy)
  lc = _lc(batch_size=8, total_steps=5, checkpoint_every=100,
           data=grain_source.LoaderOptions(bad_records="skip"))
  _, summary = train_lib.train_loop(Toy(), ds_src, lc, str(tmp_path / "w"))
  assert summary["data_skipped"] == 1
  assert bad_name in caplog.text


def _as_toy(rec):
  img = rec["image"].astype(np.float32) / 255
  return {"x": img[0, :4, 0], "y": img[1, :1, 0]}


def test_dead_worker_is_a_clear_error_and_keeps_the_checkpoint(tmp_path):
  import multiprocessing as mp
  src = _npz_source(tmp_path, toy_dataset())

  def kill_worker(step, state):
    if step == 4:
      for p in mp.active_children():
        if p.name.startswith("grain"):
          os.kill(p.pid, signal.SIGKILL)

  lc = _lc(total_steps=400, checkpoint_every=2, log_every=1,
           data=grain_source.LoaderOptions(workers=1, prefetch=1))
  wd = tmp_path / "w"
  with pytest.raises(grain_source.InputWorkerError,
                     match=r"input worker process died.*last checkpoint "
                     r"\(step \d+\) is kept"):
    train_lib.train_loop(Toy(), src, lc, str(wd), hooks=[(1, kill_worker)])
  steps = [int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()]
  assert steps and 4 <= max(steps) < 400


# --------------------------------------------------------------- memory --
RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from maskssl.data import grain_source, tabular
    from maskssl.data import load_source
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = []
    for path in sys.argv[1:]:
        cfg = tabular.default_config(path=path, in_memory=False)
        src = load_source(cfg, "pretrain")
        loader = grain_source.BatchLoader(src, 256, 0, 30)
        for b in loader.iterate(0):
            pass
        out.append((len(src), peak()))
        del src, loader
    print(out)
""")


def test_peak_rss_does_not_grow_with_rows(tmp_path):
  x, y = tabular._embedded()
  text = "\n".join(",".join(f"{v:.6g}" for v in r) + f",{l}"
                   for r, l in zip(x, y)) + "\n"
  paths = []
  for n_copies in (1, 20):   # 9k vs 180k rows (real rows, replicated)
    p = tmp_path / f"h{n_copies}.csv"
    p.write_text(text * n_copies)
    paths.append(str(p))
  r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *paths],
                     capture_output=True, text=True, timeout=300, cwd=REPO,
                     env=dict(os.environ, PYTHONPATH=REPO))
  assert r.returncode == 0, r.stderr[-2000:]
  (n1, p1), (n2, p2) = eval(r.stdout.strip().splitlines()[-1])
  assert n2 > 15 * n1
  # the whole 180k-row split would be 180k * 28 * 4 B = 20 MB of features
  # alone (and ~10x that while read_csv parses); the index is 12 B/row
  assert p2 - p1 < 8 * 2 ** 20, (p1, p2)


# ------------------------------------------------------------- imagenet --
def test_imagenet2012_from_converted_tar_and_tfds(tmp_path):
  tar = _image_tar(str(tmp_path / "in.tar"), n=30,
                   sizes=((40, 30), (24, 50), (33, 33)))
  out = str(tmp_path / "in_ar")
  convert.convert(tar, out, progress=False)
  cfg = imagenet.default_config(source="array_record", path=out,
                                image_size=28, test_size=6)
  src = load_source(cfg, "pretrain")
  assert len(src) == 24 and src.meta["num_classes"] == 3
  assert src[0]["image"].shape == (32, 32, 3)   # host size 28 * 8 // 7
  test = imagenet.load_split(cfg, "test")
  assert test.arrays["image"].shape == (6, 32, 32, 3)
  batch = grain_source.BatchLoader(src, 8, 0, 3).steps[1]
  assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].dtype == \
      np.int32
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=10):
    src = load_source(imagenet.default_config(image_size=28), "pretrain")
    assert len(src) == 10 and src[3]["image"].shape == (32, 32, 3)


def test_text_streams_give_the_in_memory_records(tmp_path):
  from maskssl.data import load_split, molecules, proteins
  x, y = tabular._embedded()
  csv_path = tmp_path / "h.csv"
  with open(csv_path, "w") as f:   # header, CRLF, a blank line
    f.write(",".join(tabular.HIGGS_COLUMNS) + ",label\r\n\r\n")
    for r, l in zip(x[:600], y[:600]):
      f.write(",".join(f"{v:.7g}" for v in r) + f",{l}\r\n")
  kw = dict(path=str(csv_path), test_size=100, val_size=50,
            train_pool_size=80, pretrain_extra="embedded")
  for split in ("pretrain", "train", "val", "test"):
    mem = load_split(tabular.default_config(**kw), split)
    fb = load_source(tabular.default_config(in_memory=False, **kw), split)
    got = fb.read_batch(np.arange(len(fb))) if split == "pretrain" else \
        fb.arrays
    assert len(fb) == len(mem)
    for k in mem.arrays:
      np.testing.assert_array_equal(got[k], mem.arrays[k])
  smi = tmp_path / "c.csv"
  smi.write_text("name,SMILES\n" + "".join(
      f"m{i},{'C' * (1 + i % 40)}O\n" + ("\n" if i % 7 == 0 else "")
      for i in range(300)))
  kw = dict(corpus=str(smi), corpus_max=200, max_len=32,
            pretrain_exclude_eval=False)
  mem = load_split(molecules.default_config(**kw), "pretrain")
  fb = load_source(molecules.default_config(in_memory=False, **kw),
                   "pretrain")
  assert isinstance(fb, streams.SmilesRows) and len(fb) == len(mem)
  for i in range(len(fb)):
    np.testing.assert_array_equal(fb[i]["tokens"], mem.arrays["tokens"][i])
  fa = tmp_path / "p.fasta"
  fa.write_text("".join(f">s{i} d\n{'mkvl' * (1 + i % 5)}\nAC*\n\n"
                        for i in range(20)))
  kw = dict(path=str(fa), max_len=16)
  mem = load_split(proteins.default_config(**kw), "pretrain")
  fb = load_source(proteins.default_config(in_memory=False, **kw),
                   "pretrain")
  assert isinstance(fb, streams.FastaRows) and len(fb) == len(mem)
  for i in range(len(fb)):
    np.testing.assert_array_equal(fb[i]["tokens"], mem.arrays["tokens"][i])
