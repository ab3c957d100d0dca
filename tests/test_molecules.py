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
  err = capsys.readouterr().err
  assert "skipped 4 of 20 rows" in err and "bbbp.csv" in err
  assert "line 3: " in err  # the first bad rows are named by line
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
  cfg = molecules.default_config(corpus=str(p), max_len=16)
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


@pytest.mark.parametrize("task,kind,width", [
    ("bace", "binary_mse", None), ("clintox", "multilabel", 2),
    ("tox21", "multilabel", 12), ("lipo", "regression", None)])
def test_new_moleculenet_tasks(task, kind, width):
  cfg = molecules.default_config(task=task, max_len=64,
                                 scaffold_backend="python")
  parts = {s: molecules.load_split(cfg, s) for s in ("train", "val", "test")}
  n = sum(len(p) for p in parts.values()) + parts["train"].meta[
      "skipped_smiles"]
  assert n == {"bace": 1513, "clintox": 1478, "tox21": 7831,
               "lipo": 4200}[task]
  for p in parts.values():
    assert p.meta["task"] == kind
    if width:
      assert p.arrays["label"].shape == (len(p), width)
      assert p.meta["num_classes"] == width
  if task == "tox21":  # missing labels are NaN, never a whole empty row
    y = np.concatenate([p.arrays["label"] for p in parts.values()])
    assert 0.05 < np.isnan(y).mean() < 0.3
    assert not np.isnan(y).all(1).any()
    assert parts["train"].meta["label_names"][0] == "NR-AR"


def test_multilabel_loss_and_scores_mask_missing_labels():
  import jax.numpy as jnp
  from maskssl.evaluators import scores
  from maskssl.methods.supervised import supervised_loss
  out = jnp.array([[0.0, 2.0], [1.0, -1.0]])
  y = jnp.array([[1.0, np.nan], [0.0, 1.0]])
  # hand-computed: mean of BCE over the three present labels
  bce = lambda z, t: np.log1p(np.exp(-z)) + (1 - t) * z
  want = (bce(0.0, 1) + bce(1.0, 0) + bce(-1.0, 1)) / 3
  np.testing.assert_allclose(supervised_loss("multilabel", out, y), want,
                             rtol=1e-6)
  labels = np.array([[1, np.nan], [0, 1], [1, 0], [0, np.nan]])
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3], [0.1, 0.9]])
  s = scores.multilabel_scores(labels, probs)
  # task 0: AUC 1.0; task 1 (labels 1, 0): AUC 1.0; accuracy 5 of 6
  assert s["auc"] == 1.0 and s["tasks_scored"] == 2
  np.testing.assert_allclose(s["accuracy"], 5 / 6)
  one_class = scores.multilabel_scores(np.array([[1.0], [1.0]]),
                                       np.array([[0.3], [0.8]]))
  assert np.isnan(one_class["auc"]) and one_class["tasks_scored"] == 0


def test_user_assay_tables(tmp_path):
  rows = ["id,mol,act_a,act_b,ic50"]
  smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "c1ccncc1", "CCCC",
            "C1CCCCC1", "OCCO", "c1ccc2ccccc2c1", "CC(C)O"]
  for i, s in enumerate(smiles):
    a = "" if i == 3 else str(i % 2)
    rows.append(f"{i},{s},{a},{(i + 1) % 2},{0.5 * i}")
  path = tmp_path / "assay.csv"
  path.write_text("\n".join(rows) + "\n")
  base = dict(path=str(path), smiles_column="mol", max_len=32,
              scaffold_backend="python")
  cls = molecules.default_config(task="classification",
                                 label_columns="act_a,act_b", **base)
  ds = [molecules.load_split(cls, s) for s in ("train", "val", "test")]
  assert sum(len(d) for d in ds) == 10
  assert all(d.meta["task"] == "multilabel" for d in ds)
  assert np.isnan(np.concatenate([d.arrays["label"] for d in ds])).sum() == 1
  one = molecules.default_config(task="classification", label_columns="act_a",
                                 cls_loss="bce", **base)
  d = [molecules.load_split(one, s) for s in ("train", "val", "test")]
  assert sum(len(x) for x in d) == 9  # the row without act_a is skipped
  assert d[0].meta["task"] == "binary"
  reg = molecules.default_config(task="regression", label_columns="ic50",
                                 **base)
  r = [molecules.load_split(reg, s) for s in ("train", "val", "test")]
  got = sorted(np.concatenate([x.arrays["label"] for x in r]).tolist())
  assert got == [0.5 * i for i in range(10)]
  bad = tmp_path / "bad.csv"
  bad.write_text("mol,ic50\nCCO,1.0\nCCN,n/a\n")
  with pytest.raises(DataError, match=r"bad.csv:3: label 'n/a'"):
    molecules.load_split(molecules.default_config(
        task="regression", label_columns="ic50", path=str(bad),
        smiles_column="mol"), "train")
  with pytest.raises(DataError, match="needs data.path"):
    molecules.load_split(molecules.default_config(task="classification"),
                         "train")


def test_test_path_and_corpus_options(tmp_path):
  esol = molecules.load_split(molecules.default_config(
      task="esol", scaffold_backend="python"), "test")
  text, _ = molecules._task_text("esol", "")
  header, *lines = text.strip().splitlines()
  test_file = tmp_path / "my_test.csv"
  test_file.write_text("\n".join([header] + lines[:25]) + "\n")
  cfg = molecules.default_config(task="esol", scaffold_backend="python",
                                 test_path=str(test_file))
  test = molecules.load_split(cfg, "test")
  assert len(test) == 25 and len(esol) != 25
  tr, va = (molecules.load_split(cfg, s) for s in ("train", "val"))
  assert len(tr) + len(va) == 1128  # all of ESOL: train/val split only
  # a gzip corpus with a named column, sampled, minus evaluated molecules
  import gzip
  corpus = tmp_path / "corpus.csv.gz"
  test_smiles = molecules.read_table(test_file.read_text(), "t", ())[0]
  with gzip.open(corpus, "wt") as f:
    f.write("id,SMILES\n" + "".join(f"{i},C{'C' * i}O\n" for i in range(30))
            + f"99,{test_smiles[0]}\n")
  pre = molecules.load_split(molecules.default_config(
      task="esol", scaffold_backend="python", test_path=str(test_file),
      corpus=str(corpus), pack=False, max_len=48), "pretrain")
  assert pre.meta["num_smiles"] == 30  # the evaluated molecule is removed
  few = molecules.load_split(molecules.default_config(
      task="esol", scaffold_backend="python", corpus=str(corpus),
      corpus_max=10, pack=False, max_len=48), "pretrain")
  assert few.meta["num_smiles"] == 10
  with pytest.raises(DataError, match="no 'smi' column"):
    molecules.read_smiles_file(str(corpus), column="smi")
