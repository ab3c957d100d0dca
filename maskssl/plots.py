"""The one image-grid writer (matplotlib) shared by the evaluators and
tools: titled columns, labelled rows, nearest-neighbour upscaling so small
images stay readable."""
from __future__ import annotations

import os
import textwrap
from typing import Optional, Sequence

import numpy as np


class PlotError(RuntimeError):
  pass


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PlotError("plotting needs matplotlib (pip install matplotlib)"
                    ) from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def image_grid(path: str, cols: Sequence, titles: Sequence[str],
               row_labels: Optional[Sequence[str]] = None,
               title: Optional[str] = None, cell_inches: float = 1.55,
               dpi: int = 110, title_size: float = 9) -> str:
  """Save ``cols`` (each ``(rows, H, W, 3)`` floats in [0, 1]) as a PNG
  grid, column ``j`` titled ``titles[j]``, row ``i`` labelled
  ``row_labels[i]``; returns ``path``."""
  plt = pyplot()
  n, k = len(cols[0]), len(cols)
  extra = 0.9 if (title or row_labels) else 0.0
  fig, axes = plt.subplots(n, k, figsize=(cell_inches * k + extra,
                                          cell_inches * n + extra),
                           squeeze=False)
  for j, col in enumerate(cols):
    for i in range(n):
      ax = axes[i, j]
      ax.imshow(np.clip(np.asarray(col[i], np.float32), 0, 1),
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(titles[j], fontsize=title_size)
      if j == 0 and row_labels is not None:
        ax.set_ylabel(row_labels[i], fontsize=9)
  if title:
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9.5)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
