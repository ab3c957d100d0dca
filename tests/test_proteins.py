"""FASTA reader edge cases and the protein data module."""
import gzip

import numpy as np
import pytest

from maskssl.data import proteins, tokenizer
from maskssl.data.base import DataError


def test_fasta_multiline_lowercase_unknown():
  text = (">p1 first protein\nMKT\nayi\n\n>p2\nMK*\n;comment\n>p3 x\nAC J1\n"
          "GG\n")
  ids, descs, seqs, n_unk = proteins.parse_fasta(text, "t.fa")
  assert ids == ["p1", "p2", "p3"]
  assert descs == ["first protein", "", "x"]
  assert seqs == ["MKTAYI", "MK", "ACXXGG"]   # J and 1 -> X, '*' dropped
  assert n_unk == 2
  with pytest.raises(DataError, match=r"t.fa:9: unknown residue letter 'J'"):
    proteins.parse_fasta(text, "t.fa", unknown="error")


@pytest.mark.parametrize("text,msg", [
    (">a\nMK\n>b\n>c\nMK\n", r"t.fa:3: record 'b' has an empty sequence"),
    (">a\nMK\n>b\n", r"t.fa:3: record 'b' has an empty"),
    ("MKT\n>a\nMK\n", r"t.fa:1: sequence line before"),
    (">a\nMK\n>a\nMK\n", r"t.fa:3: duplicate record ID 'a'"),
    ("\n\n", r"t.fa: no FASTA records"),
    (">\nMK\n", r"t.fa:1: header without an ID"),
])
def test_fasta_errors(text, msg):
  with pytest.raises(DataError, match=msg):
    proteins.parse_fasta(text, "t.fa")


def test_read_fasta_gz_and_pretrain_path(tmp_path):
  p = tmp_path / "x.fasta.gz"
  with gzip.open(p, "wt") as f:
    f.write(">a\nmkta\n>b\nGG\nGG\n")
  ids, _, seqs, _ = proteins.read_fasta(str(p))
  assert ids == ["a", "b"] and seqs == ["MKTA", "GGGG"]
  ds = proteins.load_split(proteins.default_config(path=str(p), max_len=4),
                           "pretrain")
  tok = ds.arrays["tokens"]
  assert tok.shape == (2, 4)
  assert tokenizer.decode(tok[0]) == "MKT"          # truncated, then SEP
  assert tok[0, -1] == tokenizer.SEP
  np.testing.assert_array_equal(ds.arrays["valid"].sum(1), [4, 4])
  with pytest.raises(DataError, match="no such file"):
    proteins.read_fasta(str(tmp_path / "none.fa"))


def test_deeploc_embedded_splits():
  cfg = proteins.default_config(task="deeploc", max_len=64)
  parts = {s: proteins.load_split(cfg, s) for s in ("train", "val", "test")}
  assert len(parts["train"]) == 1350 and len(parts["val"]) == 150
  assert len(parts["test"]) == 500
  for p in parts.values():
    assert p.meta["task"] == "multiclass" and p.meta["num_classes"] == 10
    assert p.arrays["label"].dtype == np.int32
    assert p.arrays["label"].min() >= 0 and p.arrays["label"].max() <= 9
    v = p.arrays["valid"]
    n = v.sum(1)
    assert (v == (np.arange(64)[None] < n[:, None])).all()  # right padded
  # the labelled pool is in a shuffled order (first N labels are not one class)
  assert len(np.unique(parts["train"].arrays["label"][:50])) >= 5
  pre = proteins.load_split(cfg, "pretrain")
  np.testing.assert_array_equal(pre.arrays["tokens"],
                                parts["train"].arrays["tokens"])


def test_gb1_embedded_splits():
  cfg = proteins.default_config(task="gb1", max_len=300)
  parts = {s: proteins.load_split(cfg, s) for s in ("train", "val", "test")}
  assert [len(parts[s]) for s in ("train", "val", "test")] == [1808, 192, 500]
  for p in parts.values():
    assert p.meta["task"] == "regression"
    assert p.arrays["label"].dtype == np.float32
    np.testing.assert_array_equal(p.arrays["valid"].sum(1), 266)  # 265 aa + SEP
  with pytest.raises(DataError, match="data.task"):
    proteins.load_split(proteins.default_config(task="x"), "train")


def test_shared_full_data(shared_data):
  cfg = proteins.default_config(task="deeploc", max_len=32,
                                data_dir=str(shared_data))
  te = proteins.load_split(cfg, "test")
  assert len(te) == 1842
  np.testing.assert_array_equal(
      np.bincount(te.arrays["label"], minlength=10),
      [124, 365, 123, 204, 53, 44, 204, 610, 18, 97])
  g = proteins.load_split(proteins.default_config(
      task="gb1", max_len=300, data_dir=str(shared_data)), "val")
  assert len(g) == 699


@pytest.mark.parametrize("task,kind,sizes", [
    ("remote_homology", "multiclass", (12312, 736, 718)),
    ("stability", "regression", (53614, 2512, 12851))])
def test_tape_tasks_use_tapes_own_splits(shared_data, task, kind, sizes):
  cfg = proteins.default_config(task=task, data_dir=str(shared_data),
                                max_len=64)
  parts = [proteins.load_split(cfg, s) for s in ("train", "val", "test")]
  assert tuple(len(p) for p in parts) == sizes
  assert all(p.meta["task"] == kind for p in parts)
  if task == "remote_homology":
    assert parts[0].meta["num_classes"] == 1195
    assert parts[0].arrays["label"].max() == 1194
  # every sequence longer than 63 residues is cropped, and counted
  raw = proteins._tape(str(shared_data), task)["train"][0]
  assert parts[0].meta["cropped"] == sum(len(s) > 63 for s in raw)
  assert (parts[0].arrays["valid"].sum(1) <= 64).all()
  with pytest.raises(DataError, match="data.data_dir"):
    proteins.load_split(proteins.default_config(task=task), "train")


def test_pretrain_tasks_and_test_path(tmp_path, capsys):
  one = proteins.load_split(proteins.default_config(max_len=128), "pretrain")
  both = proteins.load_split(proteins.default_config(
      max_len=128, pretrain_tasks=("deeploc", "gb1")), "pretrain")
  gb1_train = proteins.load_split(proteins.default_config(
      task="gb1", max_len=128), "train")
  assert len(both) == len(one) + len(gb1_train)
  assert both.meta["cropped"] > 0
  assert "cropped" in capsys.readouterr().err
  test = tmp_path / "my_gb1.csv"
  test.write_text("sequence,target\nMKTAYIAK,0.5\nMKTAYIAR,1.5\n")
  t = proteins.load_split(proteins.default_config(
      task="gb1", test_path=str(test), max_len=16), "test")
  assert len(t) == 2 and t.arrays["label"].tolist() == [0.5, 1.5]
