"""Weighted kNN evaluator (InstDisc / SimCLR / lightly style), generic for
any method with an ``encode`` function.

Features ``f = encode(state, batch)`` (eval mode, no augmentation;
MetaMask multiplies them by its learned mask) are L2-normalised for a bank
split (``train``) and a query split (``test``). For each query the ``k``
most cosine-similar bank entries vote for their label with weight
``exp(sim / temperature)``; the predicted class is the argmax of the summed
weights (ties -> the lower class id).

Keyword arguments (:class:`Knn`): ``k`` (5), ``temperature`` (1.0) -- the
MetaMask reference values; ``bank_split``, ``test_split``, ``data`` (a data
ConfigDict instead of ``config.data``), ``encode_batch_size``,
``query_chunk``, ``num_classes`` (default: from the data meta / labels). Returns ``{"knn_top1": accuracy}`` (fraction) and
writes ``knn.json`` to ``workdir``.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from maskssl.evaluators import common


def _normalize(x, eps=1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def knn_predict(query, bank, bank_labels, num_classes: int, k: int = 5,
                temperature: float = 1.0):
  """Predicted labels ``(Q,)`` for query features ``(Q, D)`` against a bank
  ``(N, D)`` with int labels ``(N,)``; cosine similarity, top-``k``,
  weights ``exp(sim / temperature)``, ties to the lower class id."""
  q = _normalize(jnp.asarray(query, jnp.float32))
  b = _normalize(jnp.asarray(bank, jnp.float32))
  sim = jnp.matmul(q, b.T, precision=jax.lax.Precision.HIGHEST)
  k = min(int(k), b.shape[0])
  top_sim, top_idx = jax.lax.top_k(sim, k)
  weights = jnp.exp(top_sim / temperature)
  onehot = jax.nn.one_hot(jnp.asarray(bank_labels)[top_idx], num_classes,
                          dtype=jnp.float32)
  scores = jnp.sum(onehot * weights[..., None], axis=1)
  return jnp.argmax(scores, axis=-1)


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
               bank_split: str = "train", test_split: str = "test",
               encode_batch_size: int = 256, query_chunk: int = 1024,
               num_classes: int | None = None):
    self.features = common.SplitFeatures(
        common.require(fns, "encode", "knn"), data, (bank_split, test_split),
        encode_batch_size)
    self.k, self.temperature = int(k), float(temperature)
    self.query_chunk, self.num_classes = query_chunk, num_classes

  def run(self, state, workdir) -> dict:
    (bank, fb), (test, fq) = self.features(state)
    ybank = bank.arrays["label"]
    num_classes = int(self.num_classes or bank.meta.get("num_classes") or
                      int(ybank.max()) + 1)
    acc = knn_accuracy(fb, ybank, fq, test.arrays["label"], num_classes,
                       self.k, self.temperature, int(self.query_chunk))
    res = {"knn_top1": acc}
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "knn.json"), "w") as f:
        json.dump(dict(res, k=self.k, temperature=self.temperature,
                       num_bank=len(bank), num_test=len(test),
                       feature_dim=int(fb.shape[1])), f, indent=2)
    return res
