"""plot_embeddings (PCA / t-SNE PNGs, clear errors) and the SMA mask
pictures' pure parts (co-masking matrix, step choice, image grid)."""
import csv
import importlib.util
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from maskssl import embed
from maskssl.masks import sma as sma_masks_lib
from maskssl.tools import plot_embeddings as pe
from maskssl.tools import sma_masks


def _write(tmp_path, n=60, labels="class"):
  rng = np.random.default_rng(0)
  y = np.arange(n) % 3
  emb = (rng.normal(size=(n, 8)) + 4 * y[:, None]).astype(np.float32)
  out = tmp_path / "e.npy"
  np.save(out, emb)
  with open(embed.ids_path(str(out)), "w", newline="") as f:
    w = csv.writer(f)
    if labels == "class":
      w.writerow(["id", "label", "label_name"])
      w.writerows([i, int(l), ["cat", "dog", "ship"][l]]
                  for i, l in enumerate(y))
    elif labels == "real":
      w.writerow(["id", "label"])
      w.writerows([i, f"{0.5 * l + 0.1:.3f}"] for i, l in enumerate(y))
    else:
      w.writerow(["id"])
      w.writerows([i] for i in range(n))
  return str(out), emb, y


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_writes_png(tmp_path, method):
  path, _, _ = _write(tmp_path)
  out = str(tmp_path / f"{method}.png")
  assert pe.main([f"--emb={path}", f"--method={method}", f"--out={out}",
                  "--tsne_iter=250"]) == 0
  with Image.open(out) as im:
    assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 400


@pytest.mark.parametrize("labels", ["real", "none"])
def test_plot_real_or_no_labels_and_csv(tmp_path, labels):
  path, emb, _ = _write(tmp_path, labels=labels)
  table, ids, lab, _ = embed.read_embeddings(path)
  rec = embed.Records(ids, lab, None, None)
  csv_path = str(tmp_path / "e.csv")
  embed.write_embeddings(csv_path, table, rec)
  info = pe.plot_embeddings(csv_path, str(tmp_path / "p.png"), "pca",
                            max_points=40)
  assert info["points"] == 40 and info["total"] == 60 and info["dim"] == 8


def test_pca_separates_and_is_deterministic():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 5))
  x[:, 2] *= 10
  xy, axes = pe.project(x, "pca")
  xy2, _ = pe.project(x, "pca")
  np.testing.assert_array_equal(xy, xy2)
  assert "PC 1" in axes[0] and "%" in axes[0]
  assert np.var(xy[:, 0]) > np.var(xy[:, 1])


def test_clear_errors(tmp_path, monkeypatch, capsys):
  path, _, _ = _write(tmp_path)
  if importlib.util.find_spec("umap") is None:
    assert pe.main([f"--emb={path}", "--method=umap",
                    f"--out={tmp_path / 'u.png'}"]) == 2
    assert "umap-learn" in capsys.readouterr().err
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  with pytest.raises(pe.PlotError, match="needs matplotlib"):
    pe.plot_embeddings(path, str(tmp_path / "x.png"), "pca")
  monkeypatch.undo()
  assert pe.main([f"--emb={tmp_path / 'missing.npy'}", "--method=pca",
                  f"--out={tmp_path / 'x.png'}"]) == 2
  assert "missing.npy: no such file" in capsys.readouterr().err


def test_comasking_properties_and_random_baseline():
  """Uniform random masks: C matches the expected matrix E; C symmetric,
  diagonal = mask rate, rows = K x rate; padded rows count only valid."""
  n, rows = 28, 4000
  valid = np.ones((rows, n), bool)
  valid[::2, 20:] = False        # half the rows have 20 valid tokens
  m, _ = sma_masks_lib.random_mask(jax.random.PRNGKey(0), valid, 0.2)
  m = np.asarray(m)
  assert not (m & ~valid).any()
  c, e = sma_masks.comasking(m, valid)
  np.testing.assert_allclose(c, c.T)
  np.testing.assert_allclose(np.diag(c), m.mean(0))
  k = m.sum(1)
  np.testing.assert_allclose(c.sum(1), (m * k[:, None]).mean(0))
  np.testing.assert_allclose(np.trace(c), k.mean())
  np.testing.assert_allclose(c, e, atol=0.02)   # sampling noise only
  assert abs(np.trace(e) - k.mean()) < 1e-9


def test_choose_steps():
  kept = [100, 200, 300, 500, 1000, 2000, 3000]
  assert sma_masks.choose_steps("latest", kept, "images") == [3000]
  assert sma_masks.choose_steps("auto", kept, "features") == [3000]
  auto = sma_masks.choose_steps("auto", kept, "images")
  assert auto[0] == 0 and auto[1] == 100 and auto[-1] == 3000
  assert len(auto) <= 6 and auto == sorted(auto)
  assert sma_masks.choose_steps("0,500", kept, "images") == [0, 500]
  with pytest.raises(Exception, match="not kept"):
    sma_masks.choose_steps("0,7", kept, "images")


def test_image_grid_png(tmp_path):
  rng = np.random.default_rng(0)
  pics = rng.uniform(size=(3, 8, 8, 3))
  masks = rng.uniform(size=(3, 8, 8)) < 0.5
  over = sma_masks._overlay(pics, masks)
  np.testing.assert_array_equal(over[~masks], pics[~masks])
  assert (over[masks][:, 1] < 0.16).all()        # magenta: no green
  out = str(tmp_path / "grid.png")
  sma_masks._grid_png(out, [pics, over, over], ["image", "step 0", "step 1"],
                      ["cat", "dog", "ship"], "title")
  with Image.open(out) as im:
    assert im.format == "PNG"
