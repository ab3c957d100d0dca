"""Linear-probe evaluator (generic: any method with ``encode``).

Features are ``encode(state, batch)`` over the ``train`` and ``test``
splits (frozen encoder, no augmentation). Optionally they are standardised
with the train mean/variance (= ``BatchNorm(affine=False)`` at its running
statistics, eps 1e-6, spec sdmae sec. 6.3); then a linear softmax classifier
is trained on device with optax (SGD + momentum, warm-up + cosine by
default; one ``lax.scan`` over epochs of shuffled minibatches).

Reports ``accuracy`` (+ ``auc`` for binary labels: ROC-AUC of the class-1
probability) on the test split and ``train_accuracy``.

Keyword arguments: those of :class:`LinearProbe`; ``data`` replaces
``config.data``; ``optim`` (as ``config.optim``) updates the default SGD
momentum 0.9, lr 0.1, no weight decay, no clipping.
"""
from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maskssl import optim as optim_lib
from maskssl.evaluators import common, scores


def standardize(train_x: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
  """Per-feature (x - mean_train) / sqrt(var_train + eps) (biased var)."""
  mu = train_x.mean(0, keepdims=True)
  sd = np.sqrt(train_x.var(0, keepdims=True) + eps)
  return tuple((x - mu) / sd for x in (train_x,) + others)


def fit_linear(train_x, train_y, num_classes: int, *, epochs: int = 90,
               batch_size: int = 512, warmup_epochs: int = 10, optim=None,
               seed: int = 0, weight_decay: float = 0.0):
  """Train ``softmax(x W + b)`` with cross-entropy; returns (W, b)."""
  x = jnp.asarray(train_x, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  n, d = x.shape
  bs = min(int(batch_size), n)
  spe = n // bs
  total = max(1, epochs * spe)
  ocfg = dict(name="sgd", lr=0.1, weight_decay=weight_decay, clip_norm=0.0,
              momentum=0.9, warmup_steps=warmup_epochs * spe,
              schedule="cosine")
  ocfg.update(dict(optim or {}))
  tx, _ = optim_lib.make(ocfg, total)
  params = dict(w=jnp.zeros((d, num_classes)), b=jnp.zeros((num_classes,)))

  def loss_fn(p, xb, yb):
    logits = xb @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, idx):
    p, s = carry
    g = jax.grad(loss_fn)(p, x[idx], y[idx])
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  def epoch(carry, key):
    perm = jax.random.permutation(key, n)[:spe * bs].reshape(spe, bs)
    return jax.lax.scan(step, carry, perm)[0], None

  @jax.jit
  def train(p, key):
    s = tx.init(p)
    keys = jax.random.split(key, epochs)
    return jax.lax.scan(epoch, (p, s), keys)[0][0]

  p = train(params, jax.random.PRNGKey(seed))
  return np.asarray(p["w"]), np.asarray(p["b"])


def probe_scores(train_x, train_y, test_x, test_y, *, num_classes=None,
                 standardize_features: bool = True, **fit_kwargs) -> dict:
  """Fit on train features, score on test features (pure numpy in/out)."""
  train_y = np.asarray(train_y).astype(np.int64)
  test_y = np.asarray(test_y).astype(np.int64)
  k = int(num_classes or max(train_y.max(), test_y.max()) + 1)
  train_x = np.asarray(train_x, np.float32)
  test_x = np.asarray(test_x, np.float32)
  if standardize_features:
    train_x, test_x = standardize(train_x, test_x)
  w, b = fit_linear(train_x, train_y, k, **fit_kwargs)
  lt, le = train_x @ w + b, test_x @ w + b
  out = dict(accuracy=scores.accuracy(test_y, le.argmax(-1)),
             train_accuracy=scores.accuracy(train_y, lt.argmax(-1)))
  if k == 2:
    prob = jax.nn.softmax(jnp.asarray(le), -1)[:, 1]
    out["auc"] = scores.roc_auc(test_y, np.asarray(prob))
  return out


class LinearProbe:
  """Linear softmax probe on frozen ``fns["encode"]`` features."""
  select = "accuracy"

  def __init__(self, fns, data, *, train_split: str = "train",
               test_split: str = "test", standardize: bool = True,
               epochs: int = 90, batch_size: int = 512,
               warmup_epochs: int = 10, optim=None, seed: int = 0,
               encode_batch_size: int = 256, num_classes: int | None = None):
    self.features = common.SplitFeatures(
        common.require(fns, "encode", "linear_probe"), data,
        (train_split, test_split), encode_batch_size)
    self.fit_kwargs = dict(
        epochs=int(epochs), batch_size=int(batch_size),
        warmup_epochs=int(warmup_epochs), seed=int(seed),
        optim=dict(optim) if optim is not None else None)
    if optim is not None:
      optim_lib.optim_config({"name": "sgd", **dict(optim)})  # check keys
    self.standardize, self.num_classes = bool(standardize), num_classes

  def run(self, state, workdir) -> dict:
    (train, ftr), (test, fte) = self.features(state)
    res = probe_scores(
        ftr, train.arrays["label"], fte, test.arrays["label"],
        num_classes=self.num_classes,
        standardize_features=self.standardize, **self.fit_kwargs)
    res = {k: float(v) for k, v in res.items()}
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "linear_probe.json"), "w") as f:
        json.dump(dict(res, num_train=len(train), num_test=len(test),
                       feature_dim=int(ftr.shape[1])), f, indent=2)
    return {k: v for k, v in res.items() if not math.isnan(v)}
