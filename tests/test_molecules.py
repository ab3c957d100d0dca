"""Scaffolds, scaffold split and the MoleculeNet data module."""
import numpy as np
import pytest

from maskssl.data import molecules, scaffold, tokenizer
from maskssl.data.base import DataError


# ---- split logic on given scaffold strings (no RDKit needed) -------------
def _toy_scaffolds():
  # group sizes: A 10, B 6, C 4, D 2, E 2, 6 singletons = 30 molecules
  keys = (["A"] * 10 + ["B"] * 6 + ["C"] * 4 + ["D"] * 2 + ["E"] * 2
          + [f"s{i}" for i in range(6)])
  rng = np.random.default_rng(0)
  return [keys[i] for i in rng.permutation(len(keys))]


def test_scaffold_split_deterministic_disjoint_largest_in_train():
  sc = _toy_scaffolds()
  a = scaffold.scaffold_split(sc, 0.8, 0.1)
  b = scaffold.scaffold_split(list(sc), 0.8, 0.1)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  allidx = np.concatenate([a["train"], a["val"], a["test"]])
  assert sorted(allidx.tolist()) == list(range(30))   # a partition
  groups = {k: {sc[i] for i in a[k]} for k in a}
  assert not groups["train"] & groups["val"]
  assert not groups["train"] & groups["test"]
  assert not groups["val"] & groups["test"]
  # greedy by size: A (10) + B (6) + C (4) + D (2) = 22 <= 24; E would make
  # 24 -> still <= 24, so train = A,B,C,D,E; then 3 val slots, 3 test
  assert {"A", "B", "C", "D", "E"} <= groups["train"]
  assert len(a["train"]) == 24 and len(a["val"]) == 3 and len(a["test"]) == 3
  # the largest group is always in train
  sizes = {k: sc.count(k) for k in set(sc)}
  assert max(sizes, key=sizes.get) in groups["train"]


def test_scaffold_split_tie_order_is_deepchem():
  # all singletons: DeepChem sorts (size, first index) descending, so the
  # LAST molecules fill train and the first ones end in test.
  sc = [f"k{i}" for i in range(10)]
  s = scaffold.scaffold_split(sc, 0.8, 0.1)
  np.testing.assert_array_equal(s["train"], np.arange(2, 10))
  np.testing.assert_array_equal(s["val"], [1])
  np.testing.assert_array_equal(s["test"], [0])


# ---- pure-Python scaffold approximation ----------------------------------
def test_python_scaffold_properties():
  f = scaffold.python_scaffold
  # side chains do not change the scaffold; different ring systems do
  assert f("c1ccccc1CCO") == f("c1ccccc1") == f("Cc1ccccc1C(=O)N")
  assert f("c1ccccc1") != f("C1CCCCC1")
  assert f("c1ccc2ccccc2c1") == f("c1ccc2c(c1)cccc2")  # same graph, other atom order
  assert f("c1ccccc1CCc1ccccc1") != f("c1ccccc1Cc1ccccc1")  # linker length
  assert f("CCO") == "" and f("CC(C)NCC(O)CO") == ""      # acyclic
  assert f("O=C1CCCCC1") == f("O=C1CCCCC1CC") != f("C1CCCCC1")  # exocyclic =O kept
  assert f("[Cl].CC(C)NCc1cccc2ccccc12") == f("c1ccc2ccccc2c1")
  assert f("[nH]1cccc1C") == f("c1cc[nH]c1")
  for bad in ("C1CC", "C(C", "CC)", "C1CC&C1", ""):
    assert f(bad) is None, bad


def test_backend_resolution():
  assert scaffold.resolve_backend("python") == "python"
  assert scaffold.resolve_backend("auto") in ("rdkit", "python")
  with pytest.raises(ValueError):
    scaffold.resolve_backend("nope")


def test_rdkit_scaffold_when_available():
  pytest.importorskip("rdkit")
  assert scaffold.rdkit_scaffold("c1ccccc1CCO") == "c1ccccc1"
  assert scaffold.rdkit_scaffold("CCO") == ""
  assert scaffold.rdkit_scaffold("not a smiles") is None


# ---- data module ------------------------------------------------------------
@pytest.mark.parametrize("task,kind", [("bbbp", "binary_mse"),
                                       ("esol", "regression"),
                                       ("freesolv", "regression")])
def test_labelled_splits_scaffold_disjoint(task, kind):
  cfg = molecules.default_config(task=task, max_len=64,
                                 scaffold_backend="python")
  parts = {s: molecules.load_split(cfg, s) for s in ("train", "val", "test")}
  n = sum(len(p) for p in parts.values())
  assert abs(len(parts["train"]) / n - 0.8) < 0.02
  assert abs(len(parts["test"]) / n - 0.1) < 0.02
  for p in parts.values():
    assert p.meta["task"] == kind
    assert p.arrays["tokens"].shape[1] == 64
    v = p.arrays["valid"]
    np.testing.assert_array_equal(v, p.arrays["tokens"] != tokenizer.PAD)
  # disjoint by scaffold: recompute scaffold keys of the decoded SMILES
  smiles, _, sp, _, _ = molecules._split_idx(cfg)
  keys = {s: {scaffold.python_scaffold(smiles[i]) for i in sp[s]} for s in sp}
  assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
  if task == "bbbp":   # both classes in test (DeepChem ordering)
    assert len(np.unique(parts["test"].arrays["label"])) == 2


def test_unparsable_smiles_counted_and_skipped(tmp_path, capsys):
  rows = ["num,name,p_np,smiles"] + [
      f"{i},m{i},{i % 2},{s}" for i, s in enumerate(
          ["c1ccccc1CC", "C1CC(", "CCO", "c1ccncc1O", "C1CC1N", "C((C",
           "c1ccccc1N", "CCN", "c1ccc2ccccc2c1", "C1CCCC1"] * 2)]
  (tmp_path / "bbbp.csv").write_text("\n".join(rows) + "\n")
  cfg = molecules.default_config(task="bbbp", data_dir=str(tmp_path),
                                 scaffold_backend="python", max_len=32)
  ds = molecules.load_split(cfg, "train")
  assert ds.meta["skipped_smiles"] == 4
  assert "skipped 4 of 20" in capsys.readouterr().err
  total = sum(len(molecules.load_split(cfg, s)) for s in ("train", "val",
                                                          "test"))
  assert total == 16


def test_pretrain_rows_are_packed_and_exclude_eval_molecules():
  cfg = molecules.default_config(task="esol", max_len=96,
                                 scaffold_backend="python")
  ds = molecules.load_split(cfg, "pretrain")
  tok = ds.arrays["tokens"]
  assert tok.shape[1] == 96
  seps = (tok == tokenizer.SEP).sum(1)
  assert seps.mean() > 1.5        # several SMILES per row
  got = [s for row in tok for s in tokenizer.split_rows(row)]
  assert len(got) == ds.meta["num_smiles"]
  smiles, _, sp, _, _ = molecules._split_idx(cfg)
  held = {smiles[i] for i in sp["test"]}
  assert not held & set(got)


def test_user_smiles_files(tmp_path):
  p = tmp_path / "a.smi"
  p.write_text("# comment\nCCO ethanol\n\nc1ccccc1\n")
  assert molecules.read_smiles_file(str(p)) == ["CCO", "c1ccccc1"]
  q = tmp_path / "b.csv"
  q.write_text("id,SMILES,y\n1,CCO,0\n2,CCN,1\n")
  assert molecules.read_smiles_file(str(q)) == ["CCO", "CCN"]
  cfg = molecules.default_config(path=str(p), max_len=16)
  ds = molecules.load_split(cfg, "pretrain")
  assert [tokenizer.split_rows(r) for r in ds.arrays["tokens"]] == [
      ["CCO", "c1ccccc1"]]
  with pytest.raises(DataError, match="no SMILES"):
    (tmp_path / "e.smi").write_text("\n# x\n")
    molecules.read_smiles_file(str(tmp_path / "e.smi"))
  with pytest.raises(DataError, match="no such file"):
    molecules.read_smiles_file(str(tmp_path / "missing.smi"))
  bad = tmp_path / "bbbp.csv"
  bad.write_text("smiles,p_np\nCCO,yes\n")
  with pytest.raises(DataError, match=r"bbbp.csv:2"):
    molecules.load_split(molecules.default_config(data_dir=str(tmp_path),
                                                  scaffold_backend="python"),
                         "train")


def test_shared_copy_matches_embedded(shared_data):
  cfg = molecules.default_config(task="freesolv", scaffold_backend="python",
                                 data_dir=str(shared_data / "moleculenet"))
  a = molecules.load_split(cfg, "test")
  b = molecules.load_split(molecules.default_config(
      task="freesolv", scaffold_backend="python"), "test")
  np.testing.assert_array_equal(a.arrays["tokens"], b.arrays["tokens"])
