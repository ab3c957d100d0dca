"""HIGGS data: embedded sample, deterministic disjoint splits, CSV errors."""
import numpy as np
import pytest

from maskssl.data import load_split, tabular
from maskssl.data.base import DataError


def test_embedded_sample_splits_are_deterministic_and_disjoint():
  cfg = tabular.default_config()
  parts = {s: load_split(cfg, s) for s in ("pretrain", "train", "val",
                                           "test")}
  assert {s: len(d) for s, d in parts.items()} == dict(
      pretrain=6500, train=1500, val=1000, test=1500)
  again = load_split(cfg, "test")
  np.testing.assert_array_equal(parts["test"].arrays["x"], again.arrays["x"])
  # z-scored with pretraining statistics
  x = parts["pretrain"].arrays["x"][..., 0]
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(0), 1, atol=1e-4)
  # rows are disjoint across held-out splits, labelled pool within pretrain
  raw, _ = tabular._embedded()
  mean = np.array(parts["test"].meta["feature_mean"])
  std = np.array(parts["test"].meta["feature_std"])

  def rows(ds):
    return {tuple(np.round(r * std + mean, 4)) for r in ds.arrays["x"][..., 0]}
  pre, tr, va, te = (rows(parts[s]) for s in ("pretrain", "train", "val",
                                              "test"))
  assert not (pre & va) and not (pre & te) and not (va & te)
  assert tr <= pre
  assert parts["train"].arrays["valid"].all()
  assert set(np.unique(parts["test"].arrays["label"])) == {0, 1}
  assert len(raw) == 9000


def test_other_seed_gives_other_split():
  a = load_split(tabular.default_config(), "test").arrays["x"]
  b = load_split(tabular.default_config(split_seed=1), "test").arrays["x"]
  assert not np.array_equal(a, b)


def _write(tmp_path, lines, name="d.csv"):
  p = tmp_path / name
  p.write_text("\n".join(lines) + "\n")
  return str(p)


def _row(vals=None, label=1):
  vals = vals if vals is not None else [0.5] * 28
  return ",".join(str(v) for v in vals) + f",{label}"


def test_csv_reader_reads_user_file_with_header(tmp_path):
  header = ",".join(tabular.HIGGS_COLUMNS) + ",label"
  lines = [header] + [_row([i * 0.01] * 28, i % 2) for i in range(40)]
  x, y = tabular.read_csv(_write(tmp_path, lines))
  assert x.shape == (40, 28) and y.tolist() == [i % 2 for i in range(40)]
  np.testing.assert_allclose(x[3], 0.03, rtol=1e-6)


@pytest.mark.parametrize("lines,match", [
    ([_row(), "1,2,3"], r"d\.csv:2: expected 29 comma-separated columns"),
    ([_row(), _row(), _row([0.1] * 27 + ["abc"])],
     r"d\.csv:3: non-numeric cell 'abc'"),
    ([], r"no data rows"),
    ([_row(label=3)], r"label of data row 1 is 3"),
    ([_row([float("nan")] + [0.0] * 27)], r"non-finite value in data row 1"),
])
def test_csv_errors_name_file_and_line(tmp_path, lines, match):
  with pytest.raises(DataError, match=match):
    tabular.read_csv(_write(tmp_path, lines))


def test_missing_file_and_too_small_for_splits(tmp_path):
  with pytest.raises(DataError, match="no such file"):
    load_split(tabular.default_config(path=str(tmp_path / "nope.csv")),
               "train")
  small = _write(tmp_path, [_row() for _ in range(50)], "small.csv")
  with pytest.raises(DataError, match="too few"):
    load_split(tabular.default_config(path=small), "train")


def test_pretrain_extra_rows_join_pretraining_only():
  base = {s: load_split(tabular.default_config(), s)
          for s in ("pretrain", "train", "val", "test")}
  cfg = tabular.default_config(pretrain_extra="embedded")
  ext = {s: load_split(cfg, s) for s in ("pretrain", "train", "val", "test")}
  extra, _ = tabular._embedded("higgs_extra")
  assert len(extra) == 14988
  assert len(ext["pretrain"]) == 6500 + 14988
  assert ext["pretrain"].meta["pretrain_extra_rows"] == 14988
  for s in ("train", "val", "test"):  # same rows, new statistics
    assert len(ext[s]) == len(base[s])
    np.testing.assert_array_equal(ext[s].arrays["label"],
                                  base[s].arrays["label"])
  # the statistics come from all 21,488 pretraining rows
  raw, _ = tabular._embedded()
  mean = np.array(ext["val"].meta["feature_mean"], np.float32)
  x = ext["pretrain"].arrays["x"][..., 0]
  np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
  assert not np.allclose(mean, raw.mean(0), atol=1e-3)
  # extra rows carry no label
  assert (ext["pretrain"].arrays["label"][6500:] == -1).all()


def test_test_path_replaces_held_out_test_and_extra_rows_equal_to_it_drop(
    tmp_path):
  extra, ey = tabular._embedded("higgs_extra")
  lines = [",".join(tabular.HIGGS_COLUMNS) + ",label"] + [
      ",".join(f"{v:.9g}" for v in r) + f",{l}"
      for r, l in zip(extra[:40], ey[:40])]
  path = _write(tmp_path, lines, "mytest.csv")
  cfg = tabular.default_config(test_path=path, pretrain_extra="embedded")
  test = load_split(cfg, "test")
  assert len(test) == 40
  np.testing.assert_array_equal(test.arrays["label"], ey[:40])
  mean = np.array(test.meta["feature_mean"], np.float32)
  std = np.array(test.meta["feature_std"], np.float32)
  np.testing.assert_allclose(test.arrays["x"][..., 0] * std + mean,
                             extra[:40], atol=1e-5)
  pre = load_split(cfg, "pretrain")
  # the 1,500 rows the sample held out for test now pretrain; the 40 rows of
  # the user's test file are not among the extra pretraining rows
  assert len(pre) == 6500 + 1500 + 14988 - 40
  assert pre.meta["pretrain_extra_rows"] == 14988 - 40


def test_feature_only_csv(tmp_path):
  lines = [",".join(tabular.HIGGS_COLUMNS)] + [",".join(["0.25"] * 28)] * 3
  x, y = tabular.read_csv(_write(tmp_path, lines), label_column="none")
  assert x.shape == (3, 28) and (y == -1).all()
  with pytest.raises(DataError, match=r"d.csv:2: expected 28 .*\(28 features\)"):
    tabular.read_csv(_write(tmp_path, lines[:1] + [",".join(["1"] * 29)]),
                     label_column="none")
