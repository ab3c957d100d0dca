"""Weighted kNN evaluator (InstDisc / SimCLR / lightly style), generic for
any method with an ``encode`` function.

Features ``f = encode(state, batch)`` (eval mode, no augmentation;
MetaMask multiplies them by its learned mask) are L2-normalised for a bank
split (``train``) and a query split (``test``). For each query the ``k``
most cosine-similar bank entries vote for their label with weight
``exp(sim / temperature)``; the predicted class is the argmax of the summed
weights (ties -> the lower class id).

Protocols: ``k=5, temperature=1.0`` is the MetaMask reference (lightly
``BenchmarkModule`` / ``knn_predict``); ``k=20, temperature=0.07`` with the
same ``exp(sim / T)`` vote is the solo-learn / InstDisc monitor (InstDisc
Sec. 3.4; solo-learn ``solo/utils/knn.py`` ``WeightedKNNClassifier``, whose
defaults are k=20, T=0.07, ``distance_fx="cosine"``).

``bank``: which weights the bank features come from.

* ``"current"`` (default): bank and queries from the state being evaluated.
* ``"previous"``: the bank is the one built at this evaluator's *previous*
  call, the queries use the current state. This is the reference's lag:
  its lightly (1.0.8) ``BenchmarkModule`` builds the bank in
  ``training_epoch_end``, which PyTorch Lightning 1.5 calls after the
  epoch's validation loop, so epoch ``e`` is scored against epoch ``e - 1``'s
  bank (lightly later moved the bank to ``on_validation_epoch_start``,
  lightly-ai/lightly PR #1136). The reference
  reports nothing at epoch 0 (no bank yet); here the first call -- of a run,
  after a resume, or in ``--mode=evaluate`` -- has no earlier bank and uses
  the current one (the bank is ~100 MB for CIFAR-10, so it is not
  checkpointed). The result then carries ``knn_bank_previous`` = 1.0 (lagged
  bank used) or 0.0 (fell back to the current bank).

Keyword arguments (:class:`Knn`): ``k`` (5), ``temperature`` (1.0) -- the
MetaMask reference values; ``bank`` ("current"); ``bank_split``,
``test_split``, ``data`` (a data ConfigDict instead of ``config.data``),
``encode_batch_size``, ``query_chunk``, ``num_classes`` (default: from the
data meta / labels). Returns ``{"knn_top1": accuracy}`` (fraction) and
writes ``knn.json`` to ``workdir``.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from maskssl.config_utils import ConfigError
from maskssl.evaluators import common

BANKS = ("current", "previous")


def _normalize(x, eps=1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def knn_scores(query, bank, bank_labels, num_classes: int, k: int = 5,
               temperature: float = 1.0):
  """Class scores ``(Q, C)`` for query features ``(Q, D)`` against a bank
  ``(N, D)`` with int labels ``(N,)``: cosine similarity, top-``k`` (at most
  ``N``, as solo-learn), each neighbour adds ``exp(sim / temperature)`` to
  its label's score."""
  q = _normalize(jnp.asarray(query, jnp.float32))
  b = _normalize(jnp.asarray(bank, jnp.float32))
  sim = jnp.matmul(q, b.T, precision=jax.lax.Precision.HIGHEST)
  k = min(int(k), b.shape[0])
  top_sim, top_idx = jax.lax.top_k(sim, k)
  weights = jnp.exp(top_sim / temperature)
  onehot = jax.nn.one_hot(jnp.asarray(bank_labels)[top_idx], num_classes,
                          dtype=jnp.float32)
  return jnp.sum(onehot * weights[..., None], axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def knn_predict(query, bank, bank_labels, num_classes: int, k: int = 5,
                temperature: float = 1.0):
  """Predicted labels ``(Q,)``: the argmax of :func:`knn_scores`, ties to
  the lower class id."""
  return jnp.argmax(knn_scores(query, bank, bank_labels, num_classes, k,
                               temperature), axis=-1)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels,
                 num_classes: int, k: int = 5, temperature: float = 1.0,
                 chunk: int = 1024) -> float:
  bank = jnp.asarray(train_feats, jnp.float32)
  labels = jnp.asarray(train_labels, jnp.int32)
  preds = []
  for s in range(0, len(test_feats), chunk):
    preds.append(np.asarray(knn_predict(
        jnp.asarray(test_feats[s:s + chunk]), bank, labels, num_classes, k,
        temperature)))
  pred = np.concatenate(preds) if preds else np.zeros((0,), np.int32)
  return float(np.mean(pred == np.asarray(test_labels)))


class Knn:
  """Weighted kNN top-1 of ``fns["encode"]`` features (see module doc)."""
  select = "knn_top1"       # the value whose best step the summary reports

  def __init__(self, fns, data, *, k: int = 5, temperature: float = 1.0,
               bank: str = "current",
               bank_split: str = "train", test_split: str = "test",
               encode_batch_size: int = 256, query_chunk: int = 1024,
               num_classes: int | None = None):
    if bank not in BANKS:
      raise ConfigError(f"knn: bank={bank!r}; use one of {BANKS}")
    self.features = common.SplitFeatures(
        common.require(fns, "encode", "knn"), data, (bank_split, test_split),
        encode_batch_size)
    self.k, self.temperature, self.bank = int(k), float(temperature), bank
    self.query_chunk, self.num_classes = query_chunk, num_classes
    # bank="previous": the bank features of the last call (host memory)
    self.previous_bank = None

  def run(self, state, workdir) -> dict:
    (bank, fb), (test, fq) = self.features(state)
    used = fb
    res = {}
    if self.bank == "previous":
      lagged = self.previous_bank is not None
      used = self.previous_bank if lagged else fb
      self.previous_bank = fb
      res["knn_bank_previous"] = float(lagged)
    ybank = bank.arrays["label"]
    num_classes = int(self.num_classes or bank.meta.get("num_classes") or
                      int(ybank.max()) + 1)
    acc = knn_accuracy(used, ybank, fq, test.arrays["label"], num_classes,
                       self.k, self.temperature, int(self.query_chunk))
    res = {"knn_top1": acc, **res}
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "knn.json"), "w") as f:
        json.dump(dict(res, k=self.k, temperature=self.temperature,
                       bank=self.bank, num_bank=len(bank),
                       num_test=len(test), feature_dim=int(fb.shape[1])),
                  f, indent=2)
    return res
