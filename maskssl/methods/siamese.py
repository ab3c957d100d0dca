"""Siamese (joint-embedding) pretraining with optional MSCN masking.

One method, registered as ``"siamese"``: a ResNet backbone (the same flax
module MetaMask uses, :mod:`maskssl.models.resnet`), a projector
(:class:`maskssl.models.heads.ProjectionMLP`) and a joint-embedding loss from
:mod:`maskssl.losses.joint_embedding` chosen by ``config.loss.name``
(``simclr`` NT-Xent, ``barlow_twins``, ``vicreg``). ``config.mscn.enabled``
switches the MSCN masking module (:mod:`maskssl.masks.mscn`) on or off, so
the masking's effect is one config flag; everything else (backbone,
projector, loss, crops, photometric augmentation, optimiser) is unchanged.

Per step, all on device inside the jitted ``train_step`` (rng already folded
with the step by the loop)::

    image uint8 (B,H,W,3) -> two independent views: RandomResizedCrop + flip
       [+ SimCLR colour jitter / grayscale if augment.photometric == "simclr"]
    mscn.enabled = False:  normalise both views (augment.mean/std)
                           L = L_pair(z(A), z(B))
    mscn.enabled = True:   HPF both views; view A -> J masked copies (per-sample
                           kind: focal/spatial/channel, fresh noise fill);
                           view B untouched (asymmetric)
                           L = 1/J sum_j L_pair(z(A_j), z(B))

One forward per view / masked copy, so masked and unmasked inputs never share
BatchNorm batch statistics (running statistics are updated after each forward
in turn, as sequential torch forwards do). Statistics are over the global
batch (no ``axis_name``; the batch axis is sharded under ``jit``).

Train state: ``step``, ``params`` = {"encoder", "projector"}, ``batch_stats``
(same keys), ``opt_state``. ``encode`` returns pooled backbone features in
eval mode with the training preprocessing (HPF when ``mscn.enabled`` and
``mscn.hpf_at_eval``; no masks, no crops).

Config fields read (see configs/mscn_cifar10.py):
  model:   backbone ("resnet18" | "resnet50" | "resnet_tiny"), stem
           ("cifar" | "imagenet"), width, stage_sizes (optional override),
           init_scheme, zero_init_residual, compute_dtype, projector_dims (None:
           per-loss default from the spec, scaled by projector_width),
           projector_width.
  loss:    name, temperature, lambd, bt_standardize, bt_eps, sim_coeff,
           std_coeff, cov_coeff, vic_eps.
  augment: size, scale, ratio, flip_p, photometric ("none" | "simclr"),
           jitter_p, brightness, contrast, saturation, hue, grayscale_p,
           mean, std.
  mscn:    see :func:`maskssl.masks.mscn.default_config`.
  optim:   maskssl.optim fields, plus name="lars" (optax.lars, momentum 0.9,
           trust coefficient 1e-3, biases and norm params excluded from weight
           decay and from the trust ratio).
  total_steps (schedule length), data.image_key (default "image").
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from maskssl import augment as aug_lib
from maskssl import optim as optim_lib
from maskssl.losses import joint_embedding as je
from maskssl.masks import mscn
from maskssl.methods.base import Method, gradient_step, optax_state
from maskssl.models import heads
from maskssl.models import resnet as resnet_lib
from maskssl.config_utils import cfg_get

LOSSES = ("simclr", "barlow_twins", "vicreg")


_get = cfg_get


# --------------------------------------------------------------------------
# Config pieces
# --------------------------------------------------------------------------
def default_loss_config(name: str = "vicreg") -> ml_collections.ConfigDict:
  """Loss hyper-parameters of the original methods [O] (spec sec. 4)."""
  return ml_collections.ConfigDict(dict(
      name=name,
      temperature=0.1,           # simclr (SimCLR ImageNet choice)
      lambd=5e-3,                # barlow_twins off-diagonal weight
      bt_standardize="batchnorm",  # biased variance, non-affine BN
      bt_eps=1e-5,
      sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, vic_eps=1e-4))


def default_augment_config(size: int = 32) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      size=size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p=0.5,
      photometric="none", jitter_p=0.8, brightness=0.4, contrast=0.4,
      saturation=0.4, hue=0.1, grayscale_p=0.2,
      mean=aug_lib.IMAGENET_MEAN, std=aug_lib.IMAGENET_STD))


def projector_dims(loss_name: str, width: int, out_dim: int | None = None
                   ) -> dict[str, Any]:
  """Projector per loss (spec sec. 2.2): simclr F->w->128 (biases);
  barlow_twins F->w->w->w (no biases); vicreg F->w->w->w (no last bias)."""
  if loss_name == "simclr":
    return dict(features=(width, out_dim or 128), use_bias=True)
  if loss_name == "barlow_twins":
    return dict(features=(width, width, out_dim or width), use_bias=False)
  if loss_name == "vicreg":
    return dict(features=(width, width, out_dim or width), use_bias=True,
                last_bias=False)
  raise ValueError(f"unknown loss {loss_name!r}; known: {LOSSES}")


def loss_fn_from_config(loss_cfg):
  """``(za, zb) -> (loss, metrics)`` for ``config.loss`` (raises on an
  unknown name)."""
  name = _get(loss_cfg, "name", "vicreg")
  fn = je.get_loss(name)     # raises ValueError on unknown names
  if fn is je.nt_xent:
    t = float(_get(loss_cfg, "temperature", 0.1))
    return lambda a, b: je.nt_xent(a, b, temperature=t)
  if fn is je.barlow_twins:
    lam = float(_get(loss_cfg, "lambd", 5e-3))
    std = _get(loss_cfg, "bt_standardize", "batchnorm")
    eps = float(_get(loss_cfg, "bt_eps", 1e-5))
    return lambda a, b: je.barlow_twins(a, b, lambd=lam, standardize=std,
                                        eps=eps)
  if fn is je.vicreg:
    kw = dict(sim_coeff=float(_get(loss_cfg, "sim_coeff", 25.0)),
              std_coeff=float(_get(loss_cfg, "std_coeff", 25.0)),
              cov_coeff=float(_get(loss_cfg, "cov_coeff", 1.0)),
              eps=float(_get(loss_cfg, "vic_eps", 1e-4)))
    return lambda a, b: je.vicreg(a, b, **kw)
  raise ValueError(f"loss {name!r} is not a siamese pair loss")


def make_tx(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  """``maskssl.optim.make_optimizer``, plus LARS (``name="lars"``)."""
  if _get(optim_cfg, "name", "adamw") != "lars":
    return optim_lib.make_optimizer(optim_cfg, total_steps)
  schedule = optim_lib.make_schedule(optim_cfg, total_steps)
  mask = lambda p: optim_lib.decay_mask(  # noqa: E731
      p, tuple(_get(optim_cfg, "no_decay_names", ())))
  parts = []
  clip = float(_get(optim_cfg, "clip_norm", 0.0) or 0.0)
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(optax.lars(
      schedule, weight_decay=float(_get(optim_cfg, "weight_decay", 0.0)),
      weight_decay_mask=mask,
      trust_coefficient=float(_get(optim_cfg, "trust_coefficient", 1e-3)),
      eps=float(_get(optim_cfg, "lars_eps", 0.0)), trust_ratio_mask=mask,
      momentum=float(_get(optim_cfg, "momentum", 0.9)),
      nesterov=bool(_get(optim_cfg, "nesterov", False))))
  return optax.chain(*parts)


# --------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------
def build_encoder(model_cfg) -> resnet_lib.ResNet:
  kw = dict(stem=_get(model_cfg, "stem", "cifar"),
            init_scheme=_get(model_cfg, "init_scheme",
                             _get(model_cfg, "init", "kaiming_fan_out")),
            zero_init_residual=bool(_get(model_cfg, "zero_init_residual",
                                         True)),
            dtype=resnet_lib.dtype_from_name(
                _get(model_cfg, "compute_dtype", "float32")))
  width = _get(model_cfg, "width", None)
  if width is not None:
    kw["width"] = int(width)
  stages = _get(model_cfg, "stage_sizes", None)
  if stages is not None:
    kw["stage_sizes"] = tuple(int(s) for s in stages)
  return resnet_lib.build_resnet(_get(model_cfg, "backbone", "resnet18"), **kw)


def build_projector(model_cfg, loss_name: str) -> heads.ProjectionMLP:
  dims = _get(model_cfg, "projector_dims", None)
  spec = projector_dims(loss_name, int(_get(model_cfg, "projector_width",
                                            2048)))
  if dims is not None:
    spec["features"] = tuple(int(d) for d in dims)
  return heads.ProjectionMLP(
      **spec, init_scheme=_get(model_cfg, "projector_init", "pytorch"),
      dtype=resnet_lib.dtype_from_name(_get(model_cfg, "compute_dtype",
                                            "float32")))


class _Classifier(nn.Module):
  """Backbone (params key "encoder") + linear head, on raw uint8 batches,
  with the method's eval preprocessing."""
  encoder: nn.Module
  num_outputs: int
  preprocess: Any
  image_key: str = "image"

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x = self.preprocess(batch[self.image_key])
    y = self.encoder(x, train=train)
    return nn.Dense(self.num_outputs, name="head")(y)


# --------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------
class Siamese(Method):
  """Joint-embedding siamese network; MSCN masking via ``config.mscn``."""

  name = "siamese"

  def __init__(self, config):
    super().__init__(config)
    self.loss_name = _get(config.loss, "name", "vicreg")
    if self.loss_name in ("nt_xent", "ntxent"):
      self.loss_name = "simclr"
    self.pair_loss = loss_fn_from_config(config.loss)
    self.encoder = build_encoder(config.model)
    self.projector = build_projector(config.model, self.loss_name)
    self.aug = config.get("augment", None) or default_augment_config()
    self.mcfg = config.get("mscn", None) or mscn.default_config()
    if _get(self.mcfg, "enabled", False):
      mscn.kind_probs(self.mcfg)            # validate early
    self.image_key = config.data.get("image_key", "image")
    self.total_steps = max(int(config.get("total_steps", 0) or 0), 1)
    self._tx = None

  # ---- helpers ------------------------------------------------------------
  @property
  def tx(self) -> optax.GradientTransformation:
    if self._tx is None:
      self._tx = make_tx(self.config.optim, self.total_steps)
    return self._tx

  @property
  def schedule(self):
    return optim_lib.make_schedule(self.config.optim, self.total_steps)

  @property
  def masking(self) -> bool:
    return bool(_get(self.mcfg, "enabled", False))

  def _normalize(self, x01):
    return aug_lib.normalize(x01, tuple(self.aug.mean), tuple(self.aug.std))

  def _resize(self, x01):
    b, h, w, _ = x01.shape
    s = int(self.aug.size)
    if (h, w) == (s, s):
      return x01
    zeros = jnp.zeros((b,), jnp.int32)
    return aug_lib.crop_resize(x01, zeros, zeros, jnp.full((b,), h),
                               jnp.full((b,), w), s)

  def view(self, rng, images) -> jax.Array:
    """One augmented view in [0, 1]: crop + flip [+ photometric]."""
    a = self.aug
    k_crop, k_jit, k_gray = jax.random.split(rng, 3)
    x = aug_lib.to_float(images)
    x = aug_lib.random_resized_crop(k_crop, x, int(a.size), tuple(a.scale),
                                    tuple(a.ratio), float(a.flip_p))
    photometric = _get(a, "photometric", "none")
    if photometric == "simclr":
      if a.jitter_p > 0:
        x = aug_lib.color_jitter(k_jit, x, a.brightness, a.contrast,
                                 a.saturation, a.hue, a.jitter_p)
      if a.grayscale_p > 0:
        x = aug_lib.random_grayscale(k_gray, x, a.grayscale_p)
    elif photometric != "none":
      raise ValueError(f"augment.photometric must be 'none' or 'simclr', "
                       f"got {photometric!r}")
    return x

  def make_inputs(self, rng, images):
    """Network inputs for one step: ``(anchors: list of J arrays, target,
    metrics)``; all on device, static shapes."""
    k_a, k_b, k_m = jax.random.split(rng, 3)
    va, vb = self.view(k_a, images), self.view(k_b, images)
    if not self.masking:
      return [self._normalize(va)], self._normalize(vb), {}
    v = mscn.mscn_views(k_m, va, vb, self.mcfg)
    j = v["anchors"].shape[0]
    extra = dict(mask_frac=jnp.mean(v["masks"].astype(jnp.float32)))
    return [v["anchors"][i] for i in range(j)], v["target"], extra

  def eval_inputs(self, images):
    """Eval preprocessing: resize to augment.size, then HPF (if MSCN and
    ``hpf_at_eval``) or the baseline normalisation. No masks, no crops."""
    x = self._resize(aug_lib.to_float(images))
    if not self.masking:
      return self._normalize(x)
    cfg = self.mcfg.copy_and_resolve_references()
    cfg.hpf = bool(cfg.hpf and cfg.get("hpf_at_eval", True))
    return mscn.preprocess(x, cfg)

  def _forward(self, params, stats, x, train: bool = True):
    variables = {"params": params["encoder"],
                 "batch_stats": stats["encoder"]}
    if train:
      y, enc_upd = self.encoder.apply(variables, x, train=True,
                                      mutable=["batch_stats"])
      z, proj_upd = self.projector.apply(
          {"params": params["projector"],
           "batch_stats": stats["projector"]}, y, train=True,
          mutable=["batch_stats"])
      return z, dict(encoder=enc_upd["batch_stats"],
                     projector=proj_upd["batch_stats"])
    y = self.encoder.apply(variables, x, train=False)
    z = self.projector.apply({"params": params["projector"],
                              "batch_stats": stats["projector"]}, y,
                             train=False)
    return z, stats

  # ---- contract -----------------------------------------------------------
  def init_state(self, rng, batch):
    images = batch[self.image_key]
    s = int(self.aug.size)
    x = jnp.zeros((min(images.shape[0], 2), s, s, images.shape[-1]),
                  jnp.float32)
    k_e, k_p = jax.random.split(rng)
    ev = self.encoder.init(k_e, x, train=False)
    y = jnp.zeros((x.shape[0], self.encoder.num_features), jnp.float32)
    pv = self.projector.init(k_p, y, train=False)
    params = dict(encoder=ev["params"], projector=pv["params"])
    stats = dict(encoder=ev.get("batch_stats", {}),
                 projector=pv.get("batch_stats", {}))
    return optax_state(params, self.tx, batch_stats=stats)

  def loss(self, params, stats, anchors, target):
    """``1/J sum_j L(z(anchor_j), z(target))``; returns (loss, (metrics,
    new batch_stats))."""
    zt, stats = self._forward(params, stats, target)
    total, metrics = 0.0, {}
    for a in anchors:
      za, stats = self._forward(params, stats, a)
      l, m = self.pair_loss(za, zt)
      total = total + l
      for k, v in m.items():
        metrics[k] = metrics.get(k, 0.0) + v / len(anchors)
    return total / len(anchors), (metrics, stats)

  def train_step(self, state, batch, rng):
    anchors, target, extra = self.make_inputs(rng, batch[self.image_key])

    def loss_fn(params):
      loss, (metrics, stats) = self.loss(params, state["batch_stats"],
                                         anchors, target)
      return loss, dict(metrics, _stats=stats)

    new_state, metrics = gradient_step(state, self.tx, loss_fn)
    new_state["batch_stats"] = metrics.pop("_stats")
    metrics.update(extra)
    return new_state, {k: jnp.asarray(v, jnp.float32)
                       for k, v in metrics.items()}

  def encode(self, state, batch):
    x = self.eval_inputs(batch[self.image_key])
    return self.encoder.apply(
        {"params": state["params"]["encoder"],
         "batch_stats": state["batch_stats"]["encoder"]}, x,
        train=False).astype(jnp.float32)

  def classifier(self, num_outputs: int):
    return _Classifier(encoder=self.encoder, num_outputs=int(num_outputs),
                       preprocess=self.eval_inputs, image_key=self.image_key)


__all__ = ["Siamese", "LOSSES", "default_loss_config",
           "default_augment_config", "projector_dims", "loss_fn_from_config",
           "make_tx", "build_encoder", "build_projector"]
