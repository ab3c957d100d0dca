"""Linear-probe evaluator (generic: any method with ``encode``).

Two protocols, chosen by ``augment``:

**Reference protocol** (``augment=True``; the default for image data, i.e.
a 4-D ``image_key`` array): the protocol of the official linear-probe
scripts (MAE ``main_linprobe.py``, as used by SD-MAE; VICReg
``evaluate.py``, the protocol MSCN follows):

* every step, a fresh ``RandomResizedCrop(size, crop_scale, crop_ratio)`` +
  horizontal flip (``flip_p``) of the training images, on device
  (:func:`maskssl.data.augment.random_resized_crop`), quantised back to the
  input dtype (uint8, as the reference's PIL crops are), then the frozen
  encoder ``encode(state, batch)`` (the method's eval mode: BatchNorm
  running statistics, no masking, no dropout);
* the normalisation ``norm`` (below) and a linear layer, trained with
  SGD + momentum, linear warm-up (``warmup_epochs``) and cosine decay per
  step, ``epochs`` passes over the (optionally subsampled, ``train_subset``)
  training split in batches of ``batch_size``; only the head learns;
* test: resize the shorter side to ``int(size / test_crop)`` and take the
  centre ``size x size`` crop (torchvision ``Resize`` + ``CenterCrop``;
  ``test_crop = 0.875`` is the 256 -> 224 rule of both references), then
  the encoder, then the head with BatchNorm *running* statistics.
  ``test_crop = 1.0`` with ``size`` equal to the image size is the identity
  (the CIFAR convention: MetaMask's test transform is ToTensor + Normalize).

Resampling is PIL-style bilinear (antialiased triangle filter, the one
resampler of :mod:`maskssl.data.augment`) for both crops; MAE's script uses
bicubic, VICReg's torchvision default bilinear.

**Fixed features** (``augment=False``; the only mode for non-image data): the
training and test splits are encoded once (image data through the test
transform above), and the head is trained on those fixed features (one
``lax.scan``). Much cheaper: one encoder pass instead of ``epochs``.

Normalisation before the linear layer (``norm``):

* ``"batchnorm"`` -- ``BatchNorm1d(affine=False, eps=bn_eps)`` (MAE /
  SD-MAE linear-probe head): batch statistics (biased variance) in
  training, running statistics (momentum ``bn_momentum``, unbiased batch
  variance, as torch) at test.
* ``"batchnorm_scalar"`` -- the same, but the variance is ONE scalar (the
  mean of the per-dimension variances): per-dimension centring, a common
  scale. It keeps the relative scale of the dimensions, so a learned
  per-dimension feature mask (MetaMask's ``h * M``) still reaches the
  probe; ``"batchnorm"`` and ``"standardize"`` divide each dimension by its
  own std and so cancel such a mask exactly. (MetaMask's ``encode`` returns
  ``h * sigmoid(m)`` when ``metamask.encode_apply_mask``, its default; the
  per-dimension centring is harmless, the linear layer's bias absorbs it.)
* ``"standardize"`` -- fixed features only: the exact train-split mean /
  variance (= ``"batchnorm"`` at converged running statistics).
* ``"l2"`` -- each feature vector divided by its L2 norm (as the kNN).
* ``"none"`` -- the raw features (VICReg's plain ``Linear``).

Reports ``accuracy`` (+ ``auc`` for binary labels: ROC-AUC of the class-1
probability) on the test split and ``train_accuracy`` (fixed features: on
the training features; reference protocol: over the augmented batches of
the last epoch, at batch statistics -- no extra encoder pass). Writes
``linear_probe.json`` and the head, ``linear_probe_head.npz`` (``w`` (D, K),
``b``, and for the batchnorm norms the running ``mean`` / ``var``: the
layout :func:`maskssl.interop.vit.linear_probe_rules` maps to the official
``Sequential(BatchNorm1d, Linear)``).

Cost of the reference protocol: ``epochs * n_train`` encoder forwards (vs
``n_train`` for fixed features). Measured once on the shared 2-core CPU
(load ~7): ~16 CPU-ms per 32 px image (crop + eval-mode ResNet-18, width
64), so ~12 CPU-minutes per epoch of 45,000 CIFAR images and ~20 CPU-hours
for 100 epochs, against ~15 CPU-minutes (one pass of the train and test
splits) for the fixed-feature mode; use ``train_subset`` and few
epochs there (the ``:quick`` configs do), the full recipe on an
accelerator.

Keyword arguments: those of :class:`LinearProbe`; ``data`` replaces
``config.data``; ``optim`` (as ``config.optim``) updates the default SGD
(momentum 0.9, lr 0.1, no weight decay, no clipping, cosine); the warm-up is
``warmup_epochs`` (``optim.warmup_steps`` is refused, one place per value).
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maskssl import optim as optim_lib
from maskssl import parallel
from maskssl.config_utils import ConfigError
from maskssl.data import augment as aug_lib
from maskssl.data.base import epoch_permutation, host_slice
from maskssl.evaluators import common, scores

NORMS = ("batchnorm", "batchnorm_scalar", "standardize", "l2", "none")
# the probe's optimiser unless ``optim`` says otherwise (SD-MAE / MAE
# linear probe: SGD momentum 0.9, wd 0, cosine; lr per config)
OPTIM_DEFAULTS = dict(name="sgd", lr=0.1, weight_decay=0.0, clip_norm=0.0,
                      momentum=0.9, schedule="cosine")
_BATCH_STATS = ("batchnorm", "batchnorm_scalar")


# --------------------------------------------------------------------------
# Normalisation of the probe's input (pure)


def standardize(train_x: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
  """Per-feature (x - mean_train) / sqrt(var_train + eps) (biased var)."""
  mu = train_x.mean(0, keepdims=True)
  sd = np.sqrt(train_x.var(0, keepdims=True) + eps)
  return tuple((x - mu) / sd for x in (train_x,) + others)


def init_norm_stats(dim: int, norm: str) -> dict:
  """Running statistics of ``norm`` (torch's initial mean 0, var 1, and
  ``count``, torch's ``num_batches_tracked``)."""
  if norm in ("batchnorm", "batchnorm_scalar", "standardize"):
    var_shape = () if norm == "batchnorm_scalar" else (dim,)
    return dict(mean=jnp.zeros((dim,)), var=jnp.ones(var_shape),
                count=jnp.zeros((), jnp.int32))
  return {}


def norm_apply(x, stats: dict, norm: str, *, train: bool, eps: float = 1e-6,
               momentum: float | None = 0.1):
  """``(normalised x, new stats)`` for features ``x`` (B, D).

  Batchnorm norms: ``train`` uses the batch's mean / biased variance and
  moves the running ones by ``momentum`` (torch ``BatchNorm1d``: the running
  variance takes the unbiased batch variance; ``momentum=None`` is torch's
  cumulative average over the batches seen); otherwise the running ones.
  ``standardize`` always uses ``stats`` (fixed train-split statistics)."""
  if norm in ("none",):
    return x, stats
  if norm == "l2":
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True),
                           1e-12), stats
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
  if norm == "standardize" or not train:
    return (x - stats["mean"]) * jax.lax.rsqrt(stats["var"] + eps), stats
  n = x.shape[0]
  mu = jnp.mean(x, 0)
  sq = jnp.square(x - mu)
  var = jnp.mean(sq, 0) if norm == "batchnorm" else jnp.mean(sq)
  y = (x - mu) * jax.lax.rsqrt(var + eps)
  unbiased = var * (n / max(n - 1, 1))
  count = stats["count"] + 1
  m = 1.0 / count.astype(x.dtype) if momentum is None else momentum
  new = dict(mean=(1 - m) * stats["mean"] + m * mu,
             var=(1 - m) * stats["var"] + m * unbiased, count=count)
  return y, new


# --------------------------------------------------------------------------
# Image transforms (pure, on device)


def _quantize(x01, dtype):
  """Back to the input dtype: uint8 rounds and clips (a PIL image)."""
  if dtype == jnp.uint8:
    return jnp.clip(jnp.round(x01 * 255.0), 0, 255).astype(jnp.uint8)
  return x01.astype(dtype)


def train_view(rng, images, size: int, scale=(0.08, 1.0),
               ratio=(3.0 / 4.0, 4.0 / 3.0), flip_p: float = 0.5):
  """RandomResizedCrop(size, scale, ratio) + horizontal flip per example;
  (B, H, W, C) -> (B, size, size, C) in the input dtype."""
  x = aug_lib.random_resized_crop(rng, aug_lib.to_float(images), int(size),
                                  tuple(scale), tuple(ratio), float(flip_p))
  return _quantize(x, images.dtype)


def center_crop_box(height: int, width: int, size: int, crop: float):
  """torchvision ``Resize(int(size / crop))`` (shorter side; the longer one
  ``int(r * long / short)``) then ``CenterCrop(size)``: returns the resized
  ``(rh, rw)`` and the crop's ``(top, left)`` in resized pixels."""
  r = int(size / crop)
  if height <= width:
    rh, rw = r, int(r * width / height)
  else:
    rh, rw = int(r * height / width), r
  top = int(round((rh - size) / 2.0))
  left = int(round((rw - size) / 2.0))
  return (rh, rw), (top, left)


def test_view(images, size: int, crop: float = 0.875):
  """Resize (shorter side to ``int(size / crop)``) + centre crop ``size``;
  deterministic; (B, H, W, C) -> (B, size, size, C) in the input dtype.
  The rows of the full-image resampling matrices (the resize sees the whole
  image, as torchvision's), not a resample of the crop box alone."""
  _, height, width, _ = images.shape
  size = int(size)
  if (height, width) == (size, size) and int(size / crop) == size:
    return images                                    # identity
  (rh, rw), (top, left) = center_crop_box(height, width, size, crop)
  wy = aug_lib.resample_matrix(0, height, height, rh)[top:top + size]
  wx = aug_lib.resample_matrix(0, width, width, rw)[left:left + size]
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("sh,bhwc->bswc", wy, aug_lib.to_float(images), precision=hp)
  x = jnp.einsum("bswc,tw->bstc", x, wx, precision=hp)
  return _quantize(x, images.dtype)


# --------------------------------------------------------------------------
# The head


def make_optimizer(optim, total_steps: int, warmup_steps: int):
  """``(tx, schedule)`` of the probe: :data:`OPTIM_DEFAULTS` updated by
  ``optim``, warm-up ``warmup_steps``."""
  ocfg = dict(OPTIM_DEFAULTS, warmup_steps=int(warmup_steps))
  ocfg.update(dict(optim or {}))
  return optim_lib.make(ocfg, max(1, int(total_steps)))


def init_head(dim: int, num_classes: int, norm: str) -> dict:
  return dict(params=dict(w=jnp.zeros((dim, num_classes)),
                          b=jnp.zeros((num_classes,))),
              stats=init_norm_stats(dim, norm))


def head_logits(head: dict, x, norm: str, eps: float = 1e-6):
  """Test-mode logits (running statistics)."""
  z, _ = norm_apply(jnp.asarray(x, jnp.float32), head["stats"], norm,
                    train=False, eps=eps)
  return z @ head["params"]["w"] + head["params"]["b"]


def head_step(tx, norm: str, eps: float, momentum: float):
  """``step(carry, features, labels) -> (carry, (loss, n_correct))`` with
  ``carry = dict(params, stats, opt)``: one SGD step of the head on a batch
  of (frozen) features, normalised with batch statistics."""

  def step(carry, f, y):
    z, stats = norm_apply(f, carry["stats"], norm, train=True, eps=eps,
                          momentum=momentum)

    def loss_fn(p):
      logits = z @ p["w"] + p["b"]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return ce, logits

    (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(
        carry["params"])
    upd, opt = tx.update(g, carry["opt"], carry["params"])
    new = dict(params=optax.apply_updates(carry["params"], upd),
               stats=stats, opt=opt)
    return new, (loss, jnp.sum(jnp.argmax(logits, -1) == y))
  return step


def fit_probe(train_x, train_y, num_classes: int, *, norm: str = "none",
              epochs: int = 90, batch_size: int = 512, warmup_epochs: int = 10,
              optim=None, seed: int = 0, bn_eps: float = 1e-6,
              bn_momentum: float | None = 0.1) -> dict:
  """Head ``dict(params=dict(w, b), stats)`` trained on fixed features:
  one ``lax.scan`` over epochs of shuffled minibatches (the last partial
  batch dropped). ``norm="standardize"``: exact train statistics."""
  x = jnp.asarray(train_x, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  n, d = x.shape
  bs = min(int(batch_size), n)
  spe = n // bs
  tx, _ = make_optimizer(optim, epochs * spe, warmup_epochs * spe)
  head = init_head(d, num_classes, norm)
  if norm == "standardize":
    xs = np.asarray(train_x, np.float64)
    head["stats"] = dict(mean=jnp.asarray(xs.mean(0), jnp.float32),
                         var=jnp.asarray(xs.var(0), jnp.float32),
                         count=jnp.asarray(n, jnp.int32))
  step = head_step(tx, norm, bn_eps, bn_momentum)

  def epoch(carry, key):
    perm = jax.random.permutation(key, n)[:spe * bs].reshape(spe, bs)
    return jax.lax.scan(lambda c, i: (step(c, x[i], y[i])[0], None),
                        carry, perm)[0], None

  @jax.jit
  def train(head, key):
    carry = dict(head, opt=tx.init(head["params"]))
    carry = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))[0]
    return dict(params=carry["params"], stats=carry["stats"])

  return jax.device_get(train(head, jax.random.PRNGKey(seed)))


def fit_linear(train_x, train_y, num_classes: int, **kwargs):
  """:func:`fit_probe` without normalisation: ``(W, b)`` of
  ``softmax(x W + b)``."""
  head = fit_probe(train_x, train_y, num_classes, norm="none", **kwargs)
  return np.asarray(head["params"]["w"]), np.asarray(head["params"]["b"])


def _scores(y, logits, k: int) -> dict:
  out = dict(accuracy=scores.accuracy(y, np.asarray(logits).argmax(-1)))
  if k == 2:
    prob = jax.nn.softmax(jnp.asarray(logits), -1)[:, 1]
    out["auc"] = scores.roc_auc(y, np.asarray(prob))
  return out


def probe_scores(train_x, train_y, test_x, test_y, *, num_classes=None,
                 norm: str = "standardize", bn_eps: float = 1e-6,
                 return_head: bool = False, **fit_kwargs):
  """Fit on fixed train features, score on test features (numpy in/out)."""
  train_y = np.asarray(train_y).astype(np.int64)
  test_y = np.asarray(test_y).astype(np.int64)
  k = int(num_classes or max(train_y.max(), test_y.max()) + 1)
  train_x = np.asarray(train_x, np.float32)
  test_x = np.asarray(test_x, np.float32)
  head = fit_probe(train_x, train_y, k, norm=norm, bn_eps=bn_eps,
                   **fit_kwargs)
  out = _scores(test_y, head_logits(head, test_x, norm, bn_eps), k)
  out["train_accuracy"] = scores.accuracy(
      train_y, np.asarray(head_logits(head, train_x, norm, bn_eps)).argmax(-1))
  return (out, head) if return_head else out


# --------------------------------------------------------------------------
# The evaluator


class LinearProbe:
  """Linear probe on frozen ``fns["encode"]`` features (see module doc).

  Fields (defaults: the SD-MAE / MAE linear probe, from SD-MAE's code, Luo
  et al., arXiv 2203.16983; the configs set each method's values):
    augment: ``True`` reference protocol (per-epoch crops + flip), ``False``
      fixed features, ``None`` (default) = ``True`` for image data (a 4-D
      ``image_key`` array in the training split), else ``False``.
    norm: one of :data:`NORMS` (default ``"batchnorm"``: the MAE head).
    bn_eps, bn_momentum: BatchNorm eps (1e-6, MAE) and running-statistics
      momentum (0.1, torch; ``None``: the cumulative average, torch's
      ``momentum=None`` -- for short probes, where the initial running
      variance 1 would still outweigh features of small variance).
    size: crop size fed to ``encode`` (``None``: the image's shorter side).
      Set it to the encoder's input size when that differs from the data
      (PCam 96 px into a ViT at 224), so the crop is resized once.
    crop_scale, crop_ratio, flip_p: the training RandomResizedCrop + flip
      (torchvision defaults (0.08, 1), (3/4, 4/3), 0.5).
    test_crop: test transform ``Resize(int(size / test_crop))`` +
      ``CenterCrop(size)``; in (0, 1]; 0.875 = the references' 256 / 224.
    epochs, batch_size, warmup_epochs, optim: the head's SGD (90 epochs,
      batch 512, 10 warm-up epochs, lr 0.1 cosine unless ``optim`` says).
    train_subset: > 0: probe on this many training examples (a seeded,
      sorted random subset, fixed across runs and online evaluations).
    seed: shuffling, crops and the subset.
    encode_batch_size: batch of the (test / fixed-feature) encoder passes.
    num_classes: default: data meta ``num_classes`` or max label + 1.
    image_key: the batch key holding images.
  """
  select = "accuracy"

  def __init__(self, fns, data, *, train_split: str = "train",
               test_split: str = "test", augment: bool | None = None,
               norm: str = "batchnorm", bn_eps: float = 1e-6,
               bn_momentum: float | None = 0.1, size: int | None = None,
               crop_scale: Sequence[float] = (0.08, 1.0),
               crop_ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
               flip_p: float = 0.5, test_crop: float = 0.875,
               epochs: int = 90, batch_size: int = 512,
               warmup_epochs: int = 10, optim=None, train_subset: int = 0,
               seed: int = 0, encode_batch_size: int = 256,
               num_classes: int | None = None, image_key: str = "image"):
    self.encode = common.require(fns, "encode", "linear_probe")
    self.features = common.SplitFeatures(self.encode, data,
                                         (train_split, test_split),
                                         encode_batch_size)
    if norm not in NORMS:
      raise ConfigError(f"config.evals linear_probe: unknown norm {norm!r}; "
                        f"use one of {NORMS}")
    if augment and norm == "standardize":
      raise ConfigError("linear_probe norm='standardize' needs fixed "
                        "features (augment=False); use 'batchnorm'")
    if int(epochs) < 1:
      raise ConfigError(f"linear_probe epochs={epochs}: use >= 1")
    if not 0.0 < float(test_crop) <= 1.0:
      raise ConfigError(f"linear_probe test_crop={test_crop}: use (0, 1]")
    optim = dict(optim) if optim is not None else None
    if optim is not None:
      for k in ("warmup_steps", "warmup_fraction"):
        if k in optim:
          raise ConfigError(f"linear_probe optim.{k}: the warm-up is "
                            "warmup_epochs")
      optim_lib.optim_config(dict(OPTIM_DEFAULTS, **optim))  # check keys
    if "mask_values" in fns and norm in ("batchnorm", "standardize"):
      logging.warning(
          "linear_probe norm=%r rescales every feature dimension and so "
          "cancels the method's per-dimension mask; 'batchnorm_scalar', "
          "'l2' or 'none' keep it", norm)
    self.augment, self.norm = augment, norm
    self.bn_eps = float(bn_eps)
    self.bn_momentum = None if bn_momentum is None else float(bn_momentum)
    self.size = None if size is None else int(size)
    self.crop_scale = tuple(float(v) for v in crop_scale)
    self.crop_ratio = tuple(float(v) for v in crop_ratio)
    self.flip_p, self.test_crop = float(flip_p), float(test_crop)
    self.epochs, self.batch_size = int(epochs), int(batch_size)
    self.warmup_epochs, self.optim = int(warmup_epochs), optim
    self.train_subset, self.seed = int(train_subset), int(seed)
    self.encode_batch_size = int(encode_batch_size)
    self.num_classes, self.image_key = num_classes, image_key
    self._cache = {}

  # ------------------------------------------------------------ helpers --
  def _splits(self):
    """(train, test) datasets, the train one subsampled (cached)."""
    if "splits" not in self._cache:
      train, test = self.features.splits()
      if 0 < self.train_subset < len(train):
        idx = np.random.default_rng(self.seed).permutation(len(train))
        train = train.take(np.sort(idx[:self.train_subset]))
      self._cache["splits"] = (train, test)
    return self._cache["splits"]

  def _is_image(self, ds) -> bool:
    x = ds.arrays.get(self.image_key, None)
    return x is not None and np.ndim(x) == 4

  def _crop_size(self, ds) -> int:
    return self.size or int(min(ds.arrays[self.image_key].shape[1:3]))

  def _test_encode(self, size: int):
    """``fn(state, batch)``: test transform of the images, then encode (one
    function per size, so the jitted inference is reused)."""
    key = ("test_encode", size)
    if key not in self._cache:
      encode, ik, crop = self.encode, self.image_key, self.test_crop

      def fn(state, batch):
        return encode(state, dict(batch, **{ik: test_view(batch[ik], size,
                                                          crop)}))
      self._cache[key] = fn
    return self._cache[key]

  def _num_classes(self, train, test) -> int:
    return int(self.num_classes or train.meta.get("num_classes") or
               max(train.arrays["label"].max(), test.arrays["label"].max())
               + 1)

  # ---------------------------------------------------- reference mode --
  def _fit_augmented(self, state, train, k: int, size: int, mesh):
    """Head trained on per-step crops of the training images; returns
    ``(head, train_accuracy over the last epoch)``."""
    images = train.arrays[self.image_key]
    labels = np.asarray(train.arrays["label"]).astype(np.int32)
    n = len(train)
    bs = common.eval_batch_size(min(self.batch_size, n), mesh)
    if bs > n:
      raise ConfigError(f"linear_probe: {n} training examples, fewer than "
                        f"one batch of {bs} (one per device)")
    spe = n // bs
    tx, _ = make_optimizer(self.optim, self.epochs * spe,
                           self.warmup_epochs * spe)
    rep = parallel.replicated(mesh)
    key = ("train_step", size, k, bs, spe)
    if key not in self._cache:
      step = head_step(tx, self.norm, self.bn_eps, self.bn_momentum)
      encode, ik, seed = self.encode, self.image_key, self.seed
      scale, ratio, flip_p = self.crop_scale, self.crop_ratio, self.flip_p

      def train_step(carry, t, state, x, y):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), t)
        x = train_view(rng, x, size, scale, ratio, flip_p)
        f = encode(state, {ik: x})
        f = jax.lax.stop_gradient(f.reshape(f.shape[0], -1)
                                  .astype(jnp.float32))
        return step(carry, f, y)
      self._cache[key] = jax.jit(train_step, out_shardings=rep)
    train_step = self._cache[key]

    # the feature width, from one abstract encoder call
    shape = jax.eval_shape(
        lambda s, x: self.encode(s, {self.image_key: x}), state,
        jax.ShapeDtypeStruct((bs, size, size, images.shape[-1]),
                             images.dtype)).shape
    head = init_head(int(np.prod(shape[1:])), k, self.norm)
    carry = dict(head, opt=tx.init(head["params"]))
    put = lambda a: jax.make_array_from_process_local_data(  # noqa: E731
        rep, np.asarray(a))
    carry = jax.tree.map(put, carry)
    sl = host_slice(bs, jax.process_index(), jax.process_count())
    t = 0
    for epoch in range(self.epochs):
      perm = epoch_permutation(n, self.seed, epoch)
      outs = []
      for s in range(spe):
        idx = perm[s * bs:(s + 1) * bs][sl]
        b = parallel.global_batch(dict(x=images[idx], y=labels[idx]), mesh)
        carry, out = train_step(carry, put(np.int32(t)), state, b["x"],
                                b["y"])
        outs.append(out)
        t += 1
      losses, correct = zip(*jax.device_get(outs))
      logging.info("linear_probe epoch %d/%d: loss %.4f, train acc %.4f",
                   epoch + 1, self.epochs, float(np.mean(losses)),
                   float(np.sum(correct)) / (spe * bs))
    train_acc = float(np.sum(correct)) / (spe * bs)
    head = jax.device_get(dict(params=carry["params"], stats=carry["stats"]))
    return head, train_acc

  # -------------------------------------------------------------- run ---
  def run(self, state, workdir) -> dict:
    train, test = self._splits()
    k = self._num_classes(train, test)
    mesh = parallel.make_mesh()
    image = self._is_image(train)
    augment = image if self.augment is None else bool(self.augment)
    if augment and not image:
      raise ConfigError(f"linear_probe augment=True needs images (a 4-D "
                        f"{self.image_key!r} array) in the training split")
    if image:
      size = self._crop_size(train)
      encode = self._test_encode(size)
    else:
      size, encode = None, self.encode
    ebs = self.encode_batch_size
    fte = common.features(encode, state, test, ebs, mesh)
    yte = np.asarray(test.arrays["label"]).astype(np.int64)
    if augment:
      head, train_acc = self._fit_augmented(state, train, k, size, mesh)
      res = _scores(yte, head_logits(head, fte, self.norm, self.bn_eps), k)
      res["train_accuracy"] = train_acc
    else:
      ftr = common.features(encode, state, train, ebs, mesh)
      res, head = probe_scores(
          ftr, train.arrays["label"], fte, yte, num_classes=k,
          norm=self.norm, bn_eps=self.bn_eps, bn_momentum=self.bn_momentum,
          epochs=self.epochs, batch_size=self.batch_size,
          warmup_epochs=self.warmup_epochs, optim=self.optim,
          seed=self.seed, return_head=True)
    res = {key: float(v) for key, v in res.items()}
    if workdir and jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "linear_probe.json"), "w") as f:
        json.dump(dict(res, num_train=len(train), num_test=len(test),
                       feature_dim=int(fte.shape[1]), augment=augment,
                       norm=self.norm, size=size, epochs=self.epochs),
                  f, indent=2)
      np.savez(os.path.join(workdir, "linear_probe_head.npz"),
               **head["params"], **head["stats"])
    return {key: v for key, v in res.items() if not math.isnan(v)}
