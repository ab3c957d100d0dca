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
  optim:   :class:`maskssl.optim.OptimConfig` (LARS: name="lars").
  total_steps (schedule length). Batches hold images under "image" (every
  image data module writes that key).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from maskssl.data import augment as aug_lib
from maskssl import optim as optim_lib
from maskssl.losses import joint_embedding as je
from maskssl.masks import mscn
from maskssl.methods.base import Method, gradient_step, optax_state
from maskssl.models import heads
from maskssl.models import resnet as resnet_lib
from maskssl.config_utils import from_config

LOSSES = ("simclr", "barlow_twins", "vicreg")


# --------------------------------------------------------------------------
# Config pieces
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PairLossConfig:
  """``config.loss``: the pair loss and its hyper-parameters (the original
  methods' values)."""
  name: str = "vicreg"               # simclr | barlow_twins | vicreg
  temperature: float = 0.1           # simclr (SimCLR ImageNet choice)
  lambd: float = 5e-3                # barlow_twins off-diagonal weight
  bt_standardize: str = "batchnorm"  # biased variance, non-affine BN
  bt_eps: float = 1e-5
  sim_coeff: float = 25.0            # vicreg
  std_coeff: float = 25.0
  cov_coeff: float = 1.0
  vic_eps: float = 1e-4


@dataclasses.dataclass(frozen=True)
class SiameseModelConfig:
  """``config.model``: ResNet backbone + projector."""
  backbone: str = "resnet18"         # resnet18 | resnet50 | resnet_tiny
  stem: str = "cifar"                # cifar | imagenet
  width: Optional[int] = None
  stage_sizes: Optional[Sequence[int]] = None
  init_scheme: str = "kaiming_fan_out"
  zero_init_residual: bool = True
  compute_dtype: str = "float32"
  projector_dims: Optional[Sequence[int]] = None  # None: per-loss default
  projector_width: int = 2048
  projector_init: str = "pytorch"


def default_loss_config(name: str = "vicreg") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dataclasses.asdict(PairLossConfig(name)))


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
  unknown name or key)."""
  c = from_config(PairLossConfig, loss_cfg, "config.loss")
  fn = je.get_loss(c.name)     # raises ValueError on unknown names
  if fn is je.nt_xent:
    return lambda a, b: je.nt_xent(a, b, temperature=float(c.temperature))
  if fn is je.barlow_twins:
    return lambda a, b: je.barlow_twins(
        a, b, lambd=float(c.lambd), standardize=c.bt_standardize,
        eps=float(c.bt_eps))
  if fn is je.vicreg:
    kw = dict(sim_coeff=float(c.sim_coeff), std_coeff=float(c.std_coeff),
              cov_coeff=float(c.cov_coeff), eps=float(c.vic_eps))
    return lambda a, b: je.vicreg(a, b, **kw)
  raise ValueError(f"loss {c.name!r} is not a siamese pair loss")


# --------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------
def build_encoder(model_cfg) -> resnet_lib.ResNet:
  m = from_config(SiameseModelConfig, model_cfg, "config.model (siamese)")
  kw = dict(stem=m.stem, init_scheme=m.init_scheme,
            zero_init_residual=bool(m.zero_init_residual),
            dtype=resnet_lib.dtype_from_name(m.compute_dtype))
  if m.width is not None:
    kw["width"] = int(m.width)
  if m.stage_sizes is not None:
    kw["stage_sizes"] = tuple(int(s) for s in m.stage_sizes)
  return resnet_lib.build_resnet(m.backbone, **kw)


def build_projector(model_cfg, loss_name: str) -> heads.ProjectionMLP:
  m = from_config(SiameseModelConfig, model_cfg, "config.model (siamese)")
  spec = projector_dims(loss_name, int(m.projector_width))
  if m.projector_dims is not None:
    spec["features"] = tuple(int(d) for d in m.projector_dims)
  return heads.ProjectionMLP(
      **spec, init_scheme=m.projector_init,
      dtype=resnet_lib.dtype_from_name(m.compute_dtype))


class _Classifier(nn.Module):
  """Backbone (params key "encoder") + linear head, on raw uint8 batches,
  with the method's eval preprocessing."""
  encoder: nn.Module
  num_outputs: int
  preprocess: Any

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x = self.preprocess(batch["image"])
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
    self.loss_name = from_config(PairLossConfig, config.loss,
                                 "config.loss").name
    if self.loss_name in ("nt_xent", "ntxent"):
      self.loss_name = "simclr"
    self.pair_loss = loss_fn_from_config(config.loss)
    self.encoder = build_encoder(config.model)
    self.projector = build_projector(config.model, self.loss_name)
    self.aug = config.get("augment", None) or default_augment_config()
    self.mcfg = config.get("mscn", None) or mscn.default_config()
    if self.mcfg.enabled:
      mscn.kind_probs(self.mcfg)            # validate early
    self.total_steps = max(int(config.get("total_steps", 0) or 0), 1)
    self.tx, self.schedule = optim_lib.make(config.optim, self.total_steps)

  # ---- helpers ------------------------------------------------------------
  @property
  def masking(self) -> bool:
    return bool(self.mcfg.enabled)

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
    photometric = a.photometric
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
    images = batch["image"]
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
    metrics["emb_rank"] = je.effective_rank(zt)   # collapse monitor
    return total / len(anchors), (metrics, stats)

  def train_step(self, state, batch, rng):
    anchors, target, extra = self.make_inputs(rng, batch["image"])

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
    x = self.eval_inputs(batch["image"])
    return self.encoder.apply(
        {"params": state["params"]["encoder"],
         "batch_stats": state["batch_stats"]["encoder"]}, x,
        train=False).astype(jnp.float32)

  def classifier(self, num_outputs: int):
    return _Classifier(encoder=self.encoder, num_outputs=int(num_outputs),
                       preprocess=self.eval_inputs)


__all__ = ["Siamese", "LOSSES", "default_loss_config",
           "default_augment_config", "projector_dims", "loss_fn_from_config",
           "build_encoder", "build_projector"]
