r"""2-D picture of embeddings written by ``python -m maskssl.embed``::

    python -m maskssl.tools.plot_embeddings --emb=emb.npy|emb.csv \
        [--ids=emb.ids.csv] --method=tsne|pca|umap --out=plot.png \
        [--max_points=5000] [--seed=0] [--perplexity=30] [--tsne_iter=1000]

Projections: ``pca`` (numpy SVD of the centred embeddings; the axes say
how much variance each component explains), ``tsne`` (scikit-learn, PCA
init), ``umap`` (needs ``umap-learn``; a clear error when it is absent).
Points are coloured by label: class labels with a legend of the class names
(``label_name`` column) and counts, real-valued labels (ESOL, GB1) with a
colour bar, one colour when there are no labels. More than ``max_points``
embeddings are subsampled (seeded) and the title says so. Needs matplotlib
(a clear error when it is absent).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from maskssl import plots
from maskssl.data.base import DataError


PlotError = plots.PlotError
_pyplot = plots.pyplot


def project(emb: np.ndarray, method: str = "pca", seed: int = 0,
            perplexity: float = 30.0, tsne_iter: int = 1000):
  """(N, 2) coordinates and the two axis labels."""
  x = np.asarray(emb, np.float64)
  n = len(x)
  if n < 2:
    raise PlotError(f"need at least 2 embeddings to project, got {n}")
  if method == "pca":
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    var = s ** 2 / max((s ** 2).sum(), 1e-30)
    vt = np.vstack([vt, np.zeros((2, x.shape[1]))])[:2]   # D = 1 still plots
    var = np.concatenate([var, [0.0, 0.0]])
    # Deterministic sign: the largest loading of each component is positive.
    sign = np.sign(vt[np.arange(2), np.abs(vt).argmax(1)])
    vt = vt * np.where(sign == 0, 1, sign)[:, None]
    xy = xc @ vt.T
    return xy, (f"PC 1 ({100 * var[0]:.1f}% of variance)",
                f"PC 2 ({100 * var[1]:.1f}% of variance)")
  if method == "tsne":
    try:
      from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise PlotError("--method=tsne needs scikit-learn (pip install "
                      "scikit-learn); or use --method=pca") from None
    perp = float(min(perplexity, max(1.0, (n - 1) / 3)))
    xy = TSNE(n_components=2, init="pca", perplexity=perp,
              max_iter=max(250, int(tsne_iter)),
              random_state=seed).fit_transform(x)
    return xy, (f"t-SNE 1 (perplexity {perp:g})", "t-SNE 2")
  if method == "umap":
    try:
      import umap  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise PlotError("--method=umap needs umap-learn, which is not installed"
                      " (pip install umap-learn); or use --method=tsne|pca"
                      ) from None
    xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    return xy, ("UMAP 1", "UMAP 2")
  raise PlotError(f"--method must be tsne, pca or umap, got {method!r}")


def _is_classes(labels) -> bool:
  return labels is not None and np.issubdtype(np.asarray(labels).dtype,
                                              np.integer)


def plot(xy: np.ndarray, labels, label_names, out: str, title: str,
         axis_labels=("1", "2")) -> str:
  """Scatter ``xy`` coloured by ``labels``; writes the PNG ``out``."""
  plt = _pyplot()
  n = len(xy)
  size = float(np.clip(10000 / max(n, 1), 4, 40))
  fig, ax = plt.subplots(figsize=(8.5, 7))
  if labels is None:
    ax.scatter(xy[:, 0], xy[:, 1], s=size, c="tab:blue", alpha=0.7,
               linewidths=0, label=f"all ({n}; no labels)")
    ax.legend(loc="best", fontsize=9, frameon=True)
  elif _is_classes(labels):
    classes = sorted(set(np.asarray(labels).tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, c in enumerate(classes):
      sel = labels == c
      name = (label_names[c] if label_names and 0 <= c < len(label_names)
              else str(c))
      ax.scatter(xy[sel, 0], xy[sel, 1], s=size, alpha=0.75, linewidths=0,
                 color=cmap(k % cmap.N), label=f"{name} ({int(sel.sum())})")
    leg = ax.legend(title="label", loc="center left", bbox_to_anchor=(1.01,
                    0.5), fontsize=9, markerscale=max(1.0, 30 / size) ** 0.5,
                    frameon=False)
    for h in leg.legend_handles:
      h.set_alpha(1)
  else:
    y = np.asarray(labels, np.float64)
    ok = np.isfinite(y)
    if (~ok).any():
      ax.scatter(xy[~ok, 0], xy[~ok, 1], s=size, c="lightgray",
                 linewidths=0, label=f"no label ({int((~ok).sum())})")
      ax.legend(loc="best", fontsize=9)
    sc = ax.scatter(xy[ok, 0], xy[ok, 1], s=size, c=y[ok], cmap="viridis",
                    alpha=0.8, linewidths=0)
    fig.colorbar(sc, ax=ax, label="label")
  ax.set_title(title, fontsize=11)
  ax.set_xlabel(axis_labels[0])
  ax.set_ylabel(axis_labels[1])
  ax.grid(alpha=0.2)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def plot_embeddings(emb_path: str, out: str, method: str = "pca",
                    ids_path: str | None = None, max_points: int = 5000,
                    seed: int = 0, perplexity: float = 30.0,
                    title: str | None = None, tsne_iter: int = 1000) -> dict:
  """Read, subsample, project and plot; returns a small summary dict."""
  from maskssl.embed import read_embeddings
  if method not in ("tsne", "pca", "umap"):
    raise PlotError(f"--method must be tsne, pca or umap, got {method!r}")
  _pyplot()   # fail before the (slow) projection when matplotlib is absent
  emb, _, labels, names = read_embeddings(emb_path, ids_path)
  n_all = len(emb)
  idx = np.arange(n_all)
  if max_points and n_all > max_points:
    idx = np.sort(np.random.default_rng(seed).choice(n_all, max_points,
                                                     replace=False))
  emb = emb[idx]
  labels = labels[idx] if labels is not None else None
  xy, axes = project(emb, method, seed, perplexity, tsne_iter)
  shown = (f"{len(idx):,} of {n_all:,} points (random subset)"
           if len(idx) < n_all else f"{n_all:,} points")
  name = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[method]
  if title is None:
    title = (f"{name} of {os.path.basename(emb_path)}: {shown}, "
             f"{emb.shape[1]}-d embeddings")
  plot(xy, labels, names, out, title, axes)
  return dict(out=out, points=len(idx), total=n_all, dim=int(emb.shape[1]),
              method=method)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m maskssl.tools.plot_embeddings",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--emb", required=True, help="emb.npy or emb.csv")
  p.add_argument("--ids", default=None,
                 help="ids/labels CSV of an .npy (default: EMB.ids.csv)")
  p.add_argument("--method", default="tsne", choices=("tsne", "pca", "umap"))
  p.add_argument("--out", required=True, help="output PNG")
  p.add_argument("--max_points", type=int, default=5000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--perplexity", type=float, default=30.0)
  p.add_argument("--tsne_iter", type=int, default=1000,
                 help="t-SNE optimisation steps (>= 250)")
  p.add_argument("--title", default=None)
  a = p.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    info = plot_embeddings(a.emb, a.out, a.method, a.ids, a.max_points,
                           a.seed, a.perplexity, a.title, a.tsne_iter)
  except (PlotError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {info['out']}: {info['method']} of {info['points']} of "
        f"{info['total']} {info['dim']}-d embeddings")
  return 0


if __name__ == "__main__":
  sys.exit(main())
