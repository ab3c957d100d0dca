"""SD-MAE (Luo et al., arXiv 2203.16983) and plain MAE as its weight-0 case.

Paper: Luo et al., arXiv 2203.16983. One code path: ``config.sdmae.sd_weight`` (p)
weights ``L = p L_SD + (1 - p) L_rec``. At ``p == 0`` the two DINO heads are
not created and not run (a Python branch on the static config), so plain MAE
costs exactly an MAE.

Train state: ``step``, ``params`` ({"encoder", "encoder_norm", "decoder",
"pixel_head"} + {"head_enc", "head_dec"} when p > 0), ``opt_state`` and, when
p > 0, ``sd_center`` (1, K) (the DINO-style center, updated without gradient).

Batches: ``{"image": uint8 (B, H, W, 3), ...}``. Augmentation (random resized
crop to ``config.model.image_size``, no flip, no colour jitter; spec sec. 5),
masking and the target all happen on device inside ``train_step``.

Parity with the official code (irsLu/SD-MAE; ``tests/test_parity_sdmae.py``,
weights through :mod:`maskssl.interop.vit`): losses, center update and every
gradient match the official float64 run to ~1e-15 with
``config.model.compute_dtype = "float64"`` (needs ``jax_enable_x64``; images,
targets, losses and the center then run in float64 too, with the float32
ImageNet mean/std and position tables the official float64 run also uses),
and its float32 run to ~1e-6. Deliberate differences:

* mask count ``floor(r N + 1e-9)`` (``masks.random_patches.num_masked``)
  where the official ``RandomMaskingGenerator`` has ``int(r N)``: equal for
  0.6 / 0.75 at N = 16, 196 and every r = k/100 on the usual grids, but e.g.
  29 vs 28 for r = 0.29, N = 100 (0.29 * 100 is 28.999999999999996); the
  guard gives the count the ratio means;
* the target is computed from the [0, 1] pixels, not from un-normalising
  the model input (equal to 1e-15 in float64);
* the student / teacher heads pool before the (linear) weight-normalised
  last layer, the official code after it (equal up to rounding).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from maskssl.losses.distillation import self_distillation_loss
from maskssl.data import augment as aug_lib
from maskssl.losses.mae import normalized_patch_targets
from maskssl.losses.reconstruction import masked_mse
from maskssl.masks.random_patches import (mask_indices, num_masked,
                                          random_patch_mask)
from maskssl.methods.base import Method, optax_state
from maskssl import optim as optim_lib
from maskssl.config_utils import from_config
from maskssl.models.dtypes import dtype_from_name
from maskssl.models import vit


@dataclasses.dataclass(frozen=True)
class SDMAEConfig:
  """``config.sdmae`` (``sd_weight = 0``: plain MAE)."""
  mask_ratio: float = 0.6
  sd_weight: float = 0.2              # p in L = p L_SD + (1 - p) L_rec
  teacher_temp: float = 0.04
  student_temp: float = 0.1
  center_momentum: float = 0.9
  center_on: str = "probs"
  teacher_stop_grad: bool = False
  alpha_visible: float = 0.0          # > 0: also predict visible patches
  target_eps: float = 1e-6
  augment: bool = True                # RandomResizedCrop + flip
  crop_scale: Sequence[float] = (0.08, 1.0)
  crop_ratio: Sequence[float] = (3 / 4, 4 / 3)
  encode_pool: str = "fc_norm"
  head_hidden: int = 2048
  head_bottleneck: int = 256
  head_out: int = 4096


class SDMAE(Method):
  name = "sdmae"

  def __init__(self, config):
    super().__init__(config)
    sd = from_config(SDMAEConfig, config.get("sdmae", None), "config.sdmae")
    self.sdmae_config = sd
    self.mask_ratio = float(sd.mask_ratio)
    self.sd_weight = float(sd.sd_weight)
    self.use_sd = self.sd_weight > 0
    self.sd_kwargs = dict(
        teacher_temp=float(sd.teacher_temp),
        student_temp=float(sd.student_temp),
        center_momentum=float(sd.center_momentum),
        center_on=str(sd.center_on),
        teacher_stop_grad=bool(sd.teacher_stop_grad))
    self.alpha_visible = float(sd.alpha_visible)
    self.target_eps = float(sd.target_eps)
    self.augment = bool(sd.augment)
    self.crop_scale = tuple(sd.crop_scale)
    self.crop_ratio = tuple(sd.crop_ratio)
    self.encode_pool = str(sd.encode_pool)
    self.head_out = int(sd.head_out)
    self.kw = vit.model_kwargs(config.model)
    self.dtype = dtype_from_name(config.model.get("compute_dtype", None))
    # images, targets, losses and the center: float32 (float64 when the
    # compute dtype is, for the parity tests)
    self.float_dtype = vit.float_dtype(self.dtype)
    self.image_size = self.kw["image_size"]
    self.patch_size = self.kw["patch_size"]
    self.num_patches = (self.image_size // self.patch_size) ** 2
    self.n_masked = num_masked(self.num_patches, self.mask_ratio)
    if not 0 < self.n_masked < self.num_patches:
      raise ValueError(f"mask_ratio {self.mask_ratio} masks {self.n_masked} of "
                       f"{self.num_patches} patches; need 0 < N_m < N")
    self.model = vit.SDMAEModel(
        **self.kw, use_heads=self.use_sd,
        head_hidden=int(sd.head_hidden),
        head_bottleneck=int(sd.head_bottleneck),
        head_out=self.head_out, predict_visible=self.alpha_visible > 0,
        dtype=self.dtype)
    self.encoder = vit.Encoder(
        self.patch_size, self.kw["enc_dim"], self.kw["enc_depth"],
        self.kw["enc_heads"], self.kw["mlp_ratio"], 0.0, self.dtype)
    # configs list q_bias, v_bias, mask_token in optim.no_decay_names
    self.tx, self.schedule = optim_lib.make(config.optim,
                                            int(config.total_steps))

  # ---- pieces -------------------------------------------------------------
  def _indices(self, rng, batch_size):
    mask = random_patch_mask(rng, (batch_size, self.num_patches),
                             self.mask_ratio)
    return mask, *mask_indices(mask, self.n_masked)

  def prepare(self, images, rng=None):
    """uint8 NHWC -> [0, 1] float at ``image_size`` (random resized crop when
    ``rng`` is given and augmentation is on, else a plain resize)."""
    x01 = images.astype(self.float_dtype) / 255.0
    b, h, w, c = x01.shape
    if rng is not None and self.augment:
      # torchvision RandomResizedCrop: crop, then PIL-style bilinear resize
      # of the crop alone (MAE main_pretrain.py; no flip)
      boxes = jax.vmap(lambda k: aug_lib.crop_params(
          k, h, w, self.crop_scale, self.crop_ratio))(jax.random.split(rng, b))
      x01 = aug_lib.crop_resize(x01, *boxes, self.image_size)
    elif (h, w) != (self.image_size, self.image_size):
      x01 = jax.image.resize(x01, (b, self.image_size, self.image_size, c),
                             "bilinear")
    return x01

  def init_params(self, rng):
    x = jnp.zeros((1, self.image_size, self.image_size, 3), self.dtype)
    _, ids_vis, ids_mask = self._indices(jax.random.PRNGKey(0), 1)
    return self.model.init(rng, x, ids_vis, ids_mask)["params"]

  def losses(self, params, center, x01, ids_vis, ids_mask):
    """(loss, (metrics, new_center)) for prepared [0,1] images + indices."""
    x = ((x01 - vit.IMAGENET_MEAN) / vit.IMAGENET_STD).astype(self.dtype)
    out = self.model.apply({"params": params}, x, ids_vis, ids_mask)
    target_all = normalized_patch_targets(x01, self.patch_size,
                                          self.target_eps)
    # the masked tokens are already gathered: every position counts
    l_rec = masked_mse(out["pred"], vit.take_tokens(target_all, ids_mask),
                       jnp.ones(ids_mask.shape, bool))
    if self.alpha_visible > 0:
      l_rec = l_rec + self.alpha_visible * masked_mse(
          out["pred_vis"], vit.take_tokens(target_all, ids_vis),
          jnp.ones(ids_vis.shape, bool))
    metrics = dict(loss_rec=l_rec)
    if not self.use_sd:
      return l_rec, (metrics, center)
    l_sd, new_center = self_distillation_loss(out["student"], out["teacher"],
                                              center, **self.sd_kwargs)
    p = self.sd_weight
    metrics.update(loss_sd=l_sd)
    return p * l_sd + (1 - p) * l_rec, (metrics, new_center)

  # ---- Method contract ----------------------------------------------------
  def init_state(self, rng, batch):
    params = self.init_params(rng)
    extra = {}
    if self.use_sd:
      extra["sd_center"] = jnp.zeros((1, self.head_out), self.float_dtype)
    return optax_state(params, self.tx, **extra)

  def train_step(self, state, batch, rng):
    k_aug, k_mask = jax.random.split(rng)
    x01 = self.prepare(batch["image"], k_aug)
    _, ids_vis, ids_mask = self._indices(k_mask, x01.shape[0])
    center = state.get("sd_center", None)
    (loss, (metrics, new_center)), grads = jax.value_and_grad(
        self.losses, has_aux=True)(state["params"], center, x01, ids_vis,
                                   ids_mask)
    updates, opt_state = self.tx.update(grads, state["opt_state"],
                                        state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = dict(state, step=state["step"] + 1, params=params,
                     opt_state=opt_state)
    if self.use_sd:
      new_state["sd_center"] = new_center
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return new_state, {k: jnp.asarray(v, jnp.float32)
                       for k, v in metrics.items()}

  def eval_step(self, state, batch):
    x01 = self.prepare(batch["image"])
    _, ids_vis, ids_mask = self._indices(jax.random.PRNGKey(0), x01.shape[0])
    center = state.get("sd_center", None)
    loss, (metrics, _) = self.losses(state["params"], center, x01, ids_vis,
                                     ids_mask)
    return dict(metrics, loss=loss)

  def encode(self, state, batch):
    """Mean over all patch tokens of the (final-norm-free) encoder, then a
    parameter-free LayerNorm (= the fresh ``fc_norm`` of spec sec. 6.3)."""
    x01 = self.prepare(batch["image"])
    x = ((x01 - vit.IMAGENET_MEAN) / vit.IMAGENET_STD).astype(self.dtype)
    params = state["params"]
    tok = self.encoder.apply({"params": params["encoder"]}, x)
    tok = tok.astype(self.float_dtype)
    if self.encode_pool == "norm_mean":
      ln = vit.nn.LayerNorm(epsilon=1e-6)
      return jnp.mean(ln.apply({"params": params["encoder_norm"]}, tok), 1)
    f = jnp.mean(tok, axis=1)
    if self.encode_pool == "mean":
      return f
    mu = jnp.mean(f, -1, keepdims=True)
    var = jnp.var(f, -1, keepdims=True)
    return (f - mu) * jax.lax.rsqrt(var + 1e-6)

  def classifier(self, num_outputs: int):
    ft = self.config.get("finetune", None) or {}
    return vit.ViTClassifier(
        num_outputs, self.image_size, self.patch_size, self.kw["enc_dim"],
        self.kw["enc_depth"], self.kw["enc_heads"], self.kw["mlp_ratio"],
        drop_path=float(ft.get("drop_path", 0.1)),
        init_scale=float(ft.get("init_scale", 0.001)), dtype=self.dtype)

  def layerwise_lr_scales(self, classifier_params, decay: float):
    """Per-parameter lr multipliers for fine-tuning with layer-wise decay."""
    return vit.layerwise_lr_decay_labels(classifier_params, decay,
                                         self.kw["enc_depth"])

  # ---- visualisation ------------------------------------------------------
  def reconstruct(self, state, images, rng):
    """(original, masked, reconstruction) [0, 1] images (B, S, S, 3); the
    prediction is de-normalised with each masked patch's own mean/std and
    visible patches are pasted from the original."""
    x01 = self.prepare(images)
    mask, ids_vis, ids_mask = self._indices(rng, x01.shape[0])
    x = ((x01 - vit.IMAGENET_MEAN) / vit.IMAGENET_STD).astype(self.dtype)
    out = self.model.apply({"params": state["params"]}, x, ids_vis, ids_mask)
    p, s = self.patch_size, self.image_size
    patches = vit.patchify(x01, p)                        # (B, N, p*p, C)
    mean = patches.mean(2, keepdims=True)
    std = jnp.sqrt(patches.var(2, keepdims=True, ddof=1)) + self.target_eps
    pred = out["pred"].reshape(out["pred"].shape[0], -1, p * p, 3)
    pred = pred * vit.take_tokens(std, ids_mask) + vit.take_tokens(mean,
                                                                   ids_mask)
    b_idx = jnp.arange(x01.shape[0])[:, None]
    recon = patches.at[b_idx, ids_mask].set(pred)
    masked = jnp.where(mask[:, :, None, None], 0.5, patches)
    to_img = lambda t: jnp.clip(vit.unpatchify(t, p, s, s), 0, 1)
    return x01, to_img(masked), to_img(recon)
