"""Scores as plain numpy functions (no sklearn dependency)."""
from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
  """Average ranks (1-based), ties get the mean of their positions."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sx = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sx[j + 1] == sx[i]:
      j += 1
    ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
    i = j + 1
  return ranks


def roc_auc(labels, scores) -> float:
  """ROC-AUC via the Mann-Whitney U statistic (ties count one half)."""
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  r = _ranks(scores)
  return float((r[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(labels, predictions) -> float:
  return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def rmse(targets, predictions) -> float:
  d = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
  return float(np.sqrt(np.mean(d * d)))


def spearman(a, b) -> float:
  ra, rb = _ranks(a), _ranks(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
  return float((ra * rb).sum() / den) if den > 0 else float("nan")


def task_scores(task: str, labels, outputs) -> dict[str, float]:
  """The field's metrics for a task, from model outputs (probabilities for
  classification, values for regression)."""
  outputs = np.asarray(outputs)
  if task in ("binary", "binary_mse", "binary_softmax"):   # P(class 1)
    return dict(accuracy=accuracy(labels, outputs >= 0.5),
                auc=roc_auc(labels, outputs))
  if task == "multiclass":
    return dict(accuracy=accuracy(labels, outputs.argmax(-1)))
  if task == "multilabel":
    return multilabel_scores(labels, outputs)
  if task == "regression":
    return dict(rmse=rmse(labels, outputs), spearman=spearman(labels, outputs))
  raise ValueError(f"unknown task {task!r}")


def multilabel_scores(labels, probs) -> dict[str, float]:
  """MoleculeNet multi-task protocol: ROC-AUC per task over the labels
  present (NaN = missing), averaged over the tasks whose split has both
  classes; accuracy over every present label."""
  labels = np.asarray(labels, np.float64)
  probs = np.asarray(probs, np.float64)
  aucs = []
  for t in range(labels.shape[1]):
    m = ~np.isnan(labels[:, t])
    y = labels[m, t]
    if len(np.unique(y)) == 2:
      aucs.append(roc_auc(y, probs[m, t]))
  present = ~np.isnan(labels)
  acc = np.mean((probs[present] >= 0.5) == (labels[present] == 1))
  return dict(auc=float(np.mean(aucs)) if aucs else float("nan"),
              accuracy=float(acc), tasks_scored=float(len(aucs)))


def mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
