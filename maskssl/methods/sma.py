"""SMA pretraining method (spec shared/specs/sma.md): self-guided masked
reconstruction with the mask generated inside encoder layer 1.

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
``config.mask``: ratio, num_per_query, head_aggregation, mask_self,
  mask_self_value, rho, mask_mode "sma" | "random", curriculum_fraction (0).
``config.optim``: see :func:`maskssl.optim.make_optimizer`;
``config.total_steps`` (schedule and curriculum length).

Batches: continuous ``{"x": (B, N, C_in) or (B, N) float, "valid": (B, N)}``,
bytes ``{"tokens": (B, N) int, "valid": (B, N)}``; ``valid`` may be omitted
(all real tokens). Reconstruction targets are the inputs themselves.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maskssl.losses.reconstruction import masked_cross_entropy, masked_mse
from maskssl.methods.base import Method, gradient_step, optax_state
from maskssl.models import sma as sma_models
from maskssl.config_utils import cfg_get


_get = cfg_get


def make_tx(config, total_steps: int):
  """``maskssl.optim.make_optimizer`` (AdamW, clip 1.0, no decay on biases/LN,
  warm-up + cosine)."""
  from maskssl.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  return make_optimizer(config.optim, total_steps)


class SMA(Method):
  """Self-guided masked autoencoder (pretraining) + fine-tune classifier."""

  name = "sma"

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    mk = config.get("mask", None) if hasattr(config, "get") else None
    self.input_kind = _get(m, "input", "continuous")
    mode = _get(m, "encoder_mode", "transformer")
    self.mask_mode = _get(mk, "mask_mode", "sma")
    self.curriculum_fraction = float(_get(mk, "curriculum_fraction", 0.0) or 0.0)
    self.total_steps = int(_get(config, "total_steps", 0) or 0)
    self.dtype = sma_models.as_dtype(_get(m, "compute_dtype", "float32"))
    spec = sma_models.MaskSpec.from_config(mk if mk is not None else {}, mode)
    self.mask_spec = spec
    d = int(_get(m, "latent_dim", 128))
    e = int(_get(m, "embed_dim", d))
    self.c_in = int(_get(m, "c_in", 1))
    self.vocab_size = int(_get(m, "vocab_size", 262))
    enc_kw = dict(
        input_kind=self.input_kind, c_in=self.c_in, vocab_size=self.vocab_size,
        n_max=int(_get(m, "n_max", 28)), embed_dim=e, encoder_mode=mode,
        num_latents=int(_get(m, "num_latents", 256)), latent_dim=d,
        num_self_layers=int(_get(m, "num_self_layers", 4)),
        self_heads=int(_get(m, "self_heads", 8)),
        self_qk_dim=_get(m, "self_qk_dim", None),
        self_widening=int(_get(m, "self_widening", 1)),
        cross_heads=int(_get(m, "cross_heads", 8)),
        cross_qk_dim=_get(m, "cross_qk_dim", None),
        cross_widening=int(_get(m, "cross_widening", 1)),
        mask_spec=spec, mask_mode=self.mask_mode,
        gather_impl=_get(m, "gather_impl", "auto"), dtype=self.dtype)
    self.encoder = sma_models.SMAEncoder(
        hidden_dropout=float(_get(m, "hidden_dropout", 0.0)),
        attn_dropout=float(_get(m, "attn_dropout", 0.0)),
        drop_path=float(_get(m, "drop_path", 0.0)),
        compact=bool(_get(m, "compact", True)), **enc_kw)
    self.ft_dropouts = dict(
        hidden=float(_get(m, "finetune_hidden_dropout",
                          _get(m, "hidden_dropout", 0.0))),
        attn=float(_get(m, "finetune_attn_dropout",
                        _get(m, "attn_dropout", 0.0))),
        path=float(_get(m, "finetune_drop_path", _get(m, "drop_path", 0.0))))
    self.ft_encoder = sma_models.SMAEncoder(
        hidden_dropout=self.ft_dropouts["hidden"],
        attn_dropout=self.ft_dropouts["attn"],
        drop_path=self.ft_dropouts["path"], compact=False, **enc_kw)
    self.head_kw = dict(head_dim=_get(m, "head_dim", None),
                        head_qk_dim=_get(m, "head_qk_dim", None),
                        head_heads=int(_get(m, "head_heads", 1)))
    out_dim = self.vocab_size if self.input_kind == "bytes" else self.c_in
    self.model = sma_models.SMAPretrainModel(
        encoder=self.encoder,
        decoder_heads=int(_get(m, "decoder_heads", 1)),
        decoder_qk_dim=_get(m, "decoder_qk_dim", None), out_dim=out_dim)
    self._tx = None

  # ---- helpers ---------------------------------------------------------------
  @property
  def tx(self):
    if self._tx is None:
      self._tx = make_tx(self.config, max(self.total_steps, 1))
    return self._tx

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
    return loss, dict(mask_fraction=frac, curriculum_s=jnp.asarray(s, jnp.float32))

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
