"""Linear-probe evaluator (generic: any method with ``encode``).

Features are ``method.encode(state, batch)`` over the ``train`` and ``test``
splits (frozen encoder, no augmentation). Optionally they are standardised
with the train mean/variance (= ``BatchNorm(affine=False)`` at its running
statistics, eps 1e-6, spec sdmae sec. 6.3); then a linear softmax classifier
is trained on device with optax (SGD + momentum, warm-up + cosine by
default; one ``lax.scan`` over epochs of shuffled minibatches).

Reports ``accuracy`` (+ ``auc`` for binary labels: ROC-AUC of the class-1
probability) on the test split and ``train_accuracy``.

eval_config fields (all optional): ``train_split`` ("train"), ``test_split``
("test"), ``data`` (a data ConfigDict to use instead of ``config.data``),
``standardize`` (True), ``epochs`` (90), ``batch_size`` (512),
``warmup_epochs`` (10), ``optim`` (as ``config.optim``; default SGD
momentum 0.9, lr 0.1, no weight decay, no clipping), ``seed`` (0),
``encode_batch_size`` (256), ``num_classes`` (from the labels).
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
from maskssl import parallel
from maskssl.data import load_split
from maskssl.evaluators import common, scores
from maskssl.config_utils import cfg_get


_get = cfg_get


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
  ocfg = optim_lib.default_optim_config(
      name="sgd", lr=0.1, weight_decay=weight_decay, clip_norm=0.0,
      momentum=0.9, warmup_steps=warmup_epochs * spe, schedule="cosine")
  if optim is not None:
    ocfg.update(dict(optim))
  tx = optim_lib.make_optimizer(ocfg, total)
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


def run(config, eval_config, method, state, workdir) -> dict:
  ecfg = eval_config
  data_cfg = _get(ecfg, "data", None) or config.data
  mesh = parallel.make_mesh()
  train = load_split(data_cfg, _get(ecfg, "train_split", "train"))
  test = load_split(data_cfg, _get(ecfg, "test_split", "test"))
  ebs = int(_get(ecfg, "encode_batch_size", 256))
  ftr = common.encode_features(method, state, train, ebs, mesh)
  fte = common.encode_features(method, state, test, ebs, mesh)
  optim = _get(ecfg, "optim", None)
  res = probe_scores(
      ftr, train.arrays["label"], fte, test.arrays["label"],
      num_classes=_get(ecfg, "num_classes", None),
      standardize_features=bool(_get(ecfg, "standardize", True)),
      epochs=int(_get(ecfg, "epochs", 90)),
      batch_size=int(_get(ecfg, "batch_size", 512)),
      warmup_epochs=int(_get(ecfg, "warmup_epochs", 10)),
      optim=dict(optim) if optim is not None else None,
      seed=int(_get(ecfg, "seed", 0)))
  res = {k: float(v) for k, v in res.items()}
  if workdir and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "linear_probe.json"), "w") as f:
      json.dump(dict(res, num_train=len(train), num_test=len(test),
                     feature_dim=int(ftr.shape[1])), f, indent=2)
  if any(math.isnan(v) for v in res.values()):
    res = {k: v for k, v in res.items() if not math.isnan(v)}
  return res
