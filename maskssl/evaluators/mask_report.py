"""Mask report evaluator: a method's learned dimensional mask (MetaMask).

Writes ``mask.json`` (per-dimension values, their order, the logits) and a
sorted plot + histogram ``mask.png`` to ``workdir``. Needs the method's
``mask_values(state) -> (values, logits)``. Returns summary statistics
(``mask_mean``, ``mask_std``, ``mask_min``, ``mask_max``,
``mask_frac_below_0p4``, ``mask_frac_above_0p6``).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from maskssl.evaluators import common


def mask_summary(values: np.ndarray) -> dict:
  v = np.asarray(values, np.float64)
  return dict(mask_mean=float(v.mean()), mask_std=float(v.std()),
              mask_min=float(v.min()), mask_max=float(v.max()),
              mask_frac_below_0p4=float(np.mean(v < 0.4)),
              mask_frac_above_0p6=float(np.mean(v > 0.6)))


def write_mask_report(values: np.ndarray, workdir: str, logits=None) -> dict:
  """``mask.json`` + ``mask.png`` for a dimensional mask; the summary."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  values = np.asarray(values, np.float64)
  summary = mask_summary(values)
  order = np.argsort(-values, kind="stable")
  doc = dict(summary, num_dims=int(values.size),
             values=[float(x) for x in values],
             sorted_dims=[int(i) for i in order])
  if logits is not None:
    doc["logits"] = [float(x) for x in np.asarray(logits)]
  with open(os.path.join(workdir, "mask.json"), "w") as f:
    json.dump(doc, f, indent=1)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  axes[0].plot(np.sort(values)[::-1])
  axes[0].set_xlabel("dimension (sorted)")
  axes[0].set_ylabel("mask value")
  axes[0].set_title("learned dimensional mask")
  axes[1].hist(values, bins=50)
  axes[1].set_xlabel("mask value")
  axes[1].set_ylabel("dimensions")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "mask.png"), dpi=100)
  plt.close(fig)
  summary["plot"] = 1.0
  return summary


class MaskReport:
  """The learned mask's values, plot and summary."""

  def __init__(self, fns):
    self.mask_values = common.require(fns, "mask_values", "mask_report")

  def run(self, state, workdir) -> dict:
    values, logits = jax.device_get(self.mask_values(state))
    if jax.process_index() != 0:
      return {}
    return write_mask_report(np.asarray(values), workdir,
                             logits=np.asarray(logits))
