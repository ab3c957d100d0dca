"""SMA pretraining method (Xie et al., ICLR 2024, arXiv 2402.14789):
self-guided masked reconstruction with the mask generated inside encoder
layer 1.

Config fields read (``config.model``; defaults = HIGGS particle model):
  input "continuous" | "bytes";  c_in (1);  vocab_size (262);  n_max (28)
  embed_dim E (128);  latent_dim D (128, == E in transformer mode)
  encoder_mode "transformer" | "perceiver";  num_latents L (256)
  num_self_layers (4);  self_heads (8);  self_qk_dim (D);  self_widening (1)
  cross_heads (8);  cross_qk_dim (D);  cross_widening (1)   (perceiver only)
  decoder_heads (1);  decoder_qk_dim (E)
  head_dim / head_qk_dim / head_heads (D / D / 1)   fine-tune head (spec 2.5)
  hidden_dropout / attn_dropout / drop_path (0)     pretraining
  finetune_hidden_dropout / finetune_attn_dropout / finetune_drop_path
      (default: the pretraining values)             fine-tuning
  compute_dtype "float32" | "bfloat16" | "float64" (under jax x64: parity
      tests);  compact (True);  gather_impl "auto"
``config.mask``: :class:`maskssl.masks.sma.MaskConfig`.
``config.optim``: see :class:`maskssl.optim.OptimConfig`;
``config.total_steps`` (schedule and curriculum length).

Batches: continuous ``{"x": (B, N, C_in) or (B, N) float, "valid": (B, N)}``,
bytes ``{"tokens": (B, N) int, "valid": (B, N)}``; ``valid`` may be omitted
(all real tokens). Reconstruction targets are the inputs themselves.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from maskssl.losses.reconstruction import masked_cross_entropy, masked_mse
from maskssl import optim as optim_lib
from maskssl.config_utils import ConfigError, from_config
from maskssl.masks.sma import MaskConfig
from maskssl.methods.base import Method, gradient_step, optax_state
from maskssl.models import sma as sma_models
from maskssl.models.dtypes import dtype_from_name


@dataclasses.dataclass(frozen=True)
class SMAModelConfig:
  """``config.model`` of SMA (the fields are the schema; defaults: the
  HIGGS particle model)."""
  input: str = "continuous"          # "continuous" | "bytes"
  c_in: int = 1
  vocab_size: int = 262
  n_max: int = 28
  embed_dim: Optional[int] = None    # E (None: latent_dim)
  latent_dim: int = 128              # D (== E in transformer mode)
  encoder_mode: str = "transformer"  # "transformer" | "perceiver"
  num_latents: int = 256             # L (perceiver)
  num_self_layers: int = 4
  self_heads: int = 8
  self_qk_dim: Optional[int] = None
  self_widening: int = 1
  cross_heads: int = 8               # perceiver only
  cross_qk_dim: Optional[int] = None
  cross_widening: int = 1
  decoder_heads: int = 1
  decoder_qk_dim: Optional[int] = None
  head_dim: Optional[int] = None     # fine-tune head (D / D / 1)
  head_qk_dim: Optional[int] = None
  head_heads: int = 1
  hidden_dropout: float = 0.0        # pretraining
  attn_dropout: float = 0.0
  drop_path: float = 0.0
  finetune_hidden_dropout: Optional[float] = None  # None: pretraining's
  finetune_attn_dropout: Optional[float] = None
  finetune_drop_path: Optional[float] = None
  compute_dtype: str = "float32"     # | "bfloat16" | "float64" (x64 parity)
  compact: bool = True
  gather_impl: str = "auto"


class SMA(Method):
  """Self-guided masked autoencoder (pretraining) + fine-tune classifier."""

  name = "sma"

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    mk = dict(config.get("mask", None) or {})
    mode = m.get("encoder_mode", SMAModelConfig.encoder_mode)
    if mk.get("mode", mode) != mode:
      raise ConfigError(f"config.mask.mode={mk['mode']!r} contradicts "
                        f"config.model.encoder_mode={mode!r}; drop "
                        "config.mask.mode (it follows the model)")
    spec = from_config(MaskConfig, mk, "config.mask")
    # the mask follows the encoder; perceiver queries are latents, not
    # tokens, so there is no "self" to mask
    spec = dataclasses.replace(spec, mode=mode, mask_self=bool(
        spec.mask_self) and mode == "transformer")
    self.mask_spec = spec
    self.mask_mode = spec.mask_mode
    self.curriculum_fraction = float(spec.curriculum_fraction or 0.0)
    self.total_steps = int(config.get("total_steps", 0) or 0)
    m = from_config(SMAModelConfig, m, "config.model (SMA)")
    self.model_config = m
    self.input_kind, mode = m.input, m.encoder_mode
    self.dtype = dtype_from_name(m.compute_dtype)
    d = int(m.latent_dim)
    e = int(m.embed_dim if m.embed_dim is not None else d)
    self.c_in, self.vocab_size = int(m.c_in), int(m.vocab_size)
    enc_kw = dict(
        input_kind=self.input_kind, c_in=self.c_in, vocab_size=self.vocab_size,
        n_max=int(m.n_max), embed_dim=e, encoder_mode=mode,
        num_latents=int(m.num_latents), latent_dim=d,
        num_self_layers=int(m.num_self_layers), self_heads=int(m.self_heads),
        self_qk_dim=m.self_qk_dim, self_widening=int(m.self_widening),
        cross_heads=int(m.cross_heads), cross_qk_dim=m.cross_qk_dim,
        cross_widening=int(m.cross_widening),
        mask_spec=spec, mask_mode=self.mask_mode,
        gather_impl=m.gather_impl, dtype=self.dtype)
    self.encoder = sma_models.SMAEncoder(
        hidden_dropout=float(m.hidden_dropout),
        attn_dropout=float(m.attn_dropout), drop_path=float(m.drop_path),
        compact=bool(m.compact), **enc_kw)
    pick = lambda ft, pre: float(pre if ft is None else ft)  # noqa: E731
    self.ft_dropouts = dict(
        hidden=pick(m.finetune_hidden_dropout, m.hidden_dropout),
        attn=pick(m.finetune_attn_dropout, m.attn_dropout),
        path=pick(m.finetune_drop_path, m.drop_path))
    self.ft_encoder = sma_models.SMAEncoder(
        hidden_dropout=self.ft_dropouts["hidden"],
        attn_dropout=self.ft_dropouts["attn"],
        drop_path=self.ft_dropouts["path"], compact=False, **enc_kw)
    self.head_kw = dict(head_dim=m.head_dim, head_qk_dim=m.head_qk_dim,
                        head_heads=int(m.head_heads))
    out_dim = self.vocab_size if self.input_kind == "bytes" else self.c_in
    self.model = sma_models.SMAPretrainModel(
        encoder=self.encoder, decoder_heads=int(m.decoder_heads),
        decoder_qk_dim=m.decoder_qk_dim, out_dim=out_dim)
    self.tx, self.schedule = optim_lib.make(config.optim, self.total_steps)

  # ---- helpers ---------------------------------------------------------------
  def inputs(self, batch):
    if self.input_kind == "bytes":
      x = jnp.asarray(batch["tokens"]).astype(jnp.int32)
    else:
      # float32 (float64 for a float64 model): the reconstruction target
      x = jnp.asarray(batch["x"]).astype(sma_models.acc_dtype(self.dtype))
      if x.ndim == 2:
        x = x[..., None]
    valid = batch.get("valid") if hasattr(batch, "get") else None
    if valid is None:
      valid = jnp.ones(x.shape[:2], bool)
    return x, jnp.asarray(valid).astype(bool)

  def curriculum(self, step):
    """Traced curriculum scale ``s_t`` (0 when the curriculum is off)."""
    if (self.mask_mode != "sma" or self.curriculum_fraction <= 0
        or self.mask_spec.rho is None):
      return jnp.zeros((), jnp.float32)
    from maskssl.masks.sma import curriculum_scale  # pylint: disable=g-import-not-at-top
    return curriculum_scale(step, max(self.total_steps, 1),
                            self.curriculum_fraction)

  def loss_from_output(self, out, x):
    """Batch-global masked loss from :class:`SMAPretrainModel` output."""
    target = x
    if out["rows"] is not None:   # compact: pred rows are masked positions
      target = sma_models.gather_rows(
          x if self.input_kind != "bytes" else x[..., None].astype(jnp.float32),
          out["rows"])
      if self.input_kind == "bytes":
        target = jnp.round(target[..., 0]).astype(jnp.int32)
    if self.input_kind == "bytes":
      return masked_cross_entropy(out["pred"], target, out["loss_mask"])
    return masked_mse(out["pred"], target, out["loss_mask"])

  # ---- contract --------------------------------------------------------------
  def init_params(self, rng, batch):
    x, valid = self.inputs(batch)
    k1, k2, k3 = jax.random.split(rng, 3)
    return self.model.init({"params": k1, "mask": k2, "dropout": k3}, x, valid,
                           train=False, masking=True)["params"]

  def init_state(self, rng, batch):
    return optax_state(self.init_params(rng, batch), self.tx)

  def loss_fn(self, params, batch, rng, s, mask=None, draws=None):
    """``draws``: recorded mask draws (parity tests replay the official
    torch draws; see :mod:`maskssl.masks.sma`)."""
    x, valid = self.inputs(batch)
    k_mask, k_drop = jax.random.split(rng)
    out = self.model.apply({"params": params}, x, valid, train=True,
                           masking=True, mask=mask, s=s, draws=draws,
                           rngs={"mask": k_mask, "dropout": k_drop})
    loss = self.loss_from_output(out, x)
    n_valid = jnp.maximum(1.0, jnp.sum(valid.astype(jnp.float32)))
    frac = jnp.sum(out["mask"].astype(jnp.float32)) / n_valid
    metrics = dict(mask_fraction=frac, curriculum_s=jnp.asarray(s, jnp.float32))
    if mask is None and self.curriculum_fraction > 0 and (
        self.mask_mode == "sma" and self.mask_spec.rho is not None):
      metrics["mask_attn_share"] = self.attention_share(valid, s)
    return loss, metrics

  def attention_share(self, valid, s):
    """Share of the masked tokens chosen by attention (not at random) under
    the curriculum, from the mask generator's own counts (monitor)."""
    from maskssl.masks.sma import mask_counts  # pylint: disable=g-import-not-at-top
    n_keys = valid.shape[1]
    lq = (n_keys if self.mask_spec.mode == "transformer"
          else self.encoder.num_latents)
    c = mask_counts(jnp.sum(valid, -1), self.mask_spec, lq, n_keys, s)
    k1, k2 = jnp.sum(c["k1"]), jnp.sum(c["k2"])
    return k1.astype(jnp.float32) / jnp.maximum(k1 + k2, 1).astype(jnp.float32)

  def train_step(self, state, batch, rng, mask=None):
    """One AdamW step. ``mask`` (optional, (B, N) bool) replaces the
    generated mask (tests and the benchmark's precomputed-mask comparison)."""
    s = self.curriculum(state["step"])
    return gradient_step(state, self.tx,
                         lambda p: self.loss_fn(p, batch, rng, s, mask))

  def eval_step(self, state, batch):
    """Reconstruction loss on a held-out batch (fixed mask rng, s = 0)."""
    loss, metrics = self.loss_fn(state["params"], batch, jax.random.PRNGKey(0),
                                 jnp.zeros((), jnp.float32))
    return dict(metrics, loss=loss)

  def encode(self, state, batch):
    """Pooled features: mean of valid encoder outputs (transformer) or of the
    latents (perceiver); eval mode, no masking."""
    x, valid = self.inputs(batch)
    h, _, h_keep = self.model.apply(
        {"params": state["params"]}, x, valid, train=False, masking=False,
        method=lambda mdl, *a, **k: mdl.encoder(*a, **k))
    h = h.astype(jnp.float32)
    if h_keep is None:
      return jnp.mean(h, axis=1)
    w = h_keep.astype(jnp.float32)[..., None]
    return jnp.sum(h * w, axis=1) / jnp.maximum(1.0, jnp.sum(w, axis=1))

  def classifier(self, num_outputs: int):
    return sma_models.SMAClassifier(
        encoder=self.ft_encoder, num_outputs=int(num_outputs),
        attn_dropout=self.ft_dropouts["attn"],
        hidden_dropout=self.ft_dropouts["hidden"], **self.head_kw)
