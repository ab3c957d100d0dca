"""Vision Transformer pieces for SD-MAE / MAE (Luo et al., arXiv 2203.16983).

* Patch embedding as a Dense on row-major patches (pixel-major, channel-minor
  flattening; identical to a stride-p conv), PyTorch-default uniform init.
* Fixed 1-D *interleaved* sin-cos positions over the flattened patch index
  (not a parameter), no CLS token.
* Pre-norm blocks, LayerNorm eps 1e-6, exact-erf GELU, attention with a
  bias-free ``qkv`` kernel plus learnable ``q_bias``/``v_bias`` (key bias 0).
* :class:`Encoder` (patch embed + blocks; the final LayerNorm lives outside it
  so pretraining -> fine-tuning transfers ``params["encoder"]`` 1:1),
  :class:`Decoder`, :class:`DINOHead` (weight-normalised output, gain 1),
  :class:`SDMAEModel` (heads created only when ``use_heads``) and
  :class:`ViTClassifier` (mean-pool -> fc_norm -> head, spec sec. 6.1).
* :func:`layerwise_lr_decay_labels` / :func:`scale_by_layerwise_decay`:
  BEiT/MAE layer-wise learning-rate decay for fine-tuning.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskssl import constants
from maskssl.config_utils import from_config
import optax

IMAGENET_MEAN = np.array(constants.IMAGENET_MEAN, np.float32)
IMAGENET_STD = np.array(constants.IMAGENET_STD, np.float32)

# name -> (encoder dim, depth, heads, decoder dim, depth, heads)
VARIANTS = {
    "tiny": (192, 12, 3, 192, 2, 2),
    "small": (384, 12, 6, 192, 4, 3),
    "smallEx": (384, 12, 6, 192, 8, 3),
    "base": (768, 12, 12, 192, 4, 3),
}

xavier = nn.initializers.xavier_uniform()
# PyTorch's default Linear/Conv init: U(+-1/sqrt(fan_in)).
torch_uniform = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
trunc02 = nn.initializers.truncated_normal(0.02, lower=-1.0, upper=1.0)


def float_dtype(dtype):
  """The dtype softmax / norms / losses run in: float32 for bf16 and f32
  compute, float64 for float64 (parity runs), so a float64 model is float64
  end to end."""
  return jnp.promote_types(dtype, jnp.float32)


def torch_bias(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def sincos_1d(n: int, d: int) -> np.ndarray:
  """``PE[p, j] = sin/cos(p / 10000^(2 floor(j/2) / d))``, sin at even j."""
  pos = np.arange(n, dtype=np.float64)[:, None]
  j = np.arange(d)
  angle = pos / np.power(10000.0, 2 * (j // 2) / d)[None, :]
  pe = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
  return pe.astype(np.float32)


def patchify(images: jax.Array, p: int) -> jax.Array:
  """(B, H, W, C) -> (B, N, p*p, C); patch index py*W/p + px, pixel qy*p+qx."""
  b, h, w, c = images.shape
  if h % p or w % p:
    raise ValueError(f"image {h}x{w} is not divisible by patch size {p}")
  x = images.reshape(b, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p, c)


def unpatchify(patches: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """Inverse of :func:`patchify`; accepts (B, N, p*p, C) or (B, N, p*p*C)."""
  b, n = patches.shape[:2]
  c = patches.size // (b * n * p * p)
  x = patches.reshape(b, h // p, w // p, p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def take_tokens(x: jax.Array, ids: jax.Array) -> jax.Array:
  """Gather tokens ``x[b, ids[b, k]]`` for (B, N, ...) x and (B, K) ids."""
  idx = ids.reshape(ids.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


class Attention(nn.Module):
  dim: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, _ = x.shape
    hd = self.dim // self.num_heads
    qkv = nn.Dense(3 * self.dim, use_bias=False, kernel_init=xavier,
                   dtype=self.dtype, name="qkv")(x)
    q_bias = self.param("q_bias", nn.initializers.zeros, (self.dim,))
    v_bias = self.param("v_bias", nn.initializers.zeros, (self.dim,))
    bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])
    qkv = (qkv + bias.astype(qkv.dtype)).reshape(b, n, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * (hd ** -0.5), k)
    attn = jax.nn.softmax(logits.astype(float_dtype(logits.dtype)),
                          axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, self.dim)
    return nn.Dense(self.dim, kernel_init=xavier, dtype=self.dtype,
                    name="proj")(out)


class Block(nn.Module):
  dim: int
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  def _drop(self, y, deterministic):
    if deterministic or self.drop_path == 0.0:
      return y
    keep = 1.0 - self.drop_path
    rng = self.make_rng("dropout")
    m = jax.random.bernoulli(rng, keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    return y * m.astype(y.dtype) / keep

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    ln = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
    x = x + self._drop(Attention(self.dim, self.num_heads, self.dtype,
                                 name="attn")(ln(name="norm1")(x)),
                       deterministic)
    hidden = int(self.dim * self.mlp_ratio)
    y = nn.Dense(hidden, kernel_init=xavier, dtype=self.dtype,
                 name="fc1")(ln(name="norm2")(x))
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(self.dim, kernel_init=xavier, dtype=self.dtype, name="fc2")(y)
    return x + self._drop(y, deterministic)


class Encoder(nn.Module):
  """Patch embedding + position table + blocks (no final norm).

  ``__call__(images, ids_vis=None)``: images (B, H, W, C) float (already
  normalised); with ``ids_vis`` (B, N_v) only those patches are embedded and
  encoded (static shapes), otherwise all N.
  """
  patch_size: int = 16
  dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, ids_vis=None, deterministic: bool = True):
    p = self.patch_size
    patches = patchify(images, p)
    b, n = patches.shape[:2]
    patches = patches.reshape(b, n, -1)
    pe = jnp.asarray(sincos_1d(n, self.dim))
    if ids_vis is not None:
      patches = take_tokens(patches, ids_vis)
      pe = pe[ids_vis]
    fan_in = patches.shape[-1]
    x = nn.Dense(self.dim, kernel_init=torch_uniform,
                 bias_init=torch_bias(fan_in), dtype=self.dtype,
                 name="patch_embed")(patches)
    x = x + pe.astype(x.dtype)
    for i in range(self.depth):
      dp = self.drop_path * i / max(self.depth - 1, 1)
      x = Block(self.dim, self.num_heads, self.mlp_ratio, dp, self.dtype,
                name=f"block_{i}")(x, deterministic)
    return x


class Decoder(nn.Module):
  """e2d projection, [visible, masked] sequence, blocks, final LayerNorm."""
  num_patches: int
  dim: int = 192
  depth: int = 4
  num_heads: int = 3
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, ids_vis, ids_mask):
    b = z.shape[0]
    y = nn.Dense(self.dim, use_bias=False, kernel_init=torch_uniform,
                 dtype=self.dtype, name="e2d")(z)
    pe = jnp.asarray(sincos_1d(self.num_patches, self.dim))
    mask_token = self.param("mask_token", trunc02, (1, 1, self.dim))
    vis = y + pe[ids_vis].astype(y.dtype)
    msk = (jnp.broadcast_to(mask_token, (b, ids_mask.shape[1], self.dim))
           + pe[ids_mask]).astype(y.dtype)
    x = jnp.concatenate([vis, msk], axis=1)
    for i in range(self.depth):
      x = Block(self.dim, self.num_heads, self.mlp_ratio, 0.0, self.dtype,
                name=f"block_{i}")(x)
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)


class WeightNormDense(nn.Module):
  """``x @ (V / ||V||_2 over axis 0)``; only V trainable (gain fixed at 1)."""
  features: int

  @nn.compact
  def __call__(self, x):
    v = self.param("kernel", torch_uniform, (x.shape[-1], self.features))
    w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-12)
    return x @ w.astype(x.dtype)


class DINOHead(nn.Module):
  hidden: int = 2048
  bottleneck: int = 256
  out: int = 4096
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, pool_axis=None):
    """Per-token head; with ``pool_axis`` the result is mean-pooled over that
    axis. The last layer is linear, so the pool is taken *before* it:
    ``mean(u) @ W == mean(u @ W)`` (exact up to rounding) and the
    256->4096 matmul runs once per image instead of once per token."""
    dense = functools.partial(nn.Dense, kernel_init=trunc02, dtype=self.dtype)
    x = nn.gelu(dense(self.hidden, name="fc1")(x), approximate=False)
    x = nn.gelu(dense(self.hidden, name="fc2")(x), approximate=False)
    x = dense(self.bottleneck, name="fc3")(x)
    x = x.astype(float_dtype(x.dtype))
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    if pool_axis is not None:
      x = jnp.mean(x, axis=pool_axis)
    return WeightNormDense(self.out, name="last")(x)


class SDMAEModel(nn.Module):
  """Encoder + decoder (+ two DINO heads when ``use_heads``).

  Returns a dict: ``pred`` (B, N_m, p*p*C) pixel predictions of the masked
  patches, ``z`` (B, N_v, De) normed encoder tokens, and, with heads,
  ``student``/``teacher`` (B, out) mean-pooled head outputs; with
  ``predict_visible`` also ``pred_vis``.
  """
  image_size: int = 224
  patch_size: int = 16
  channels: int = 3
  enc_dim: int = 384
  enc_depth: int = 12
  enc_heads: int = 6
  dec_dim: int = 192
  dec_depth: int = 4
  dec_heads: int = 3
  mlp_ratio: float = 4.0
  use_heads: bool = True
  head_hidden: int = 2048
  head_bottleneck: int = 256
  head_out: int = 4096
  predict_visible: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, ids_vis, ids_mask):
    n = (self.image_size // self.patch_size) ** 2
    nv = ids_vis.shape[1]
    z = Encoder(self.patch_size, self.enc_dim, self.enc_depth, self.enc_heads,
                self.mlp_ratio, 0.0, self.dtype, name="encoder")(images,
                                                                 ids_vis)
    z = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(z)
    d = Decoder(n, self.dec_dim, self.dec_depth, self.dec_heads,
                self.mlp_ratio, self.dtype, name="decoder")(z, ids_vis,
                                                            ids_mask)
    pix = nn.Dense(self.patch_size ** 2 * self.channels, kernel_init=xavier,
                   dtype=self.dtype, name="pixel_head")
    fdt = float_dtype(self.dtype)
    out = dict(z=z.astype(fdt), pred=pix(d[:, nv:]).astype(fdt))
    if self.predict_visible:
      out["pred_vis"] = pix(d[:, :nv]).astype(fdt)
    if self.use_heads:
      head = functools.partial(DINOHead, self.head_hidden,
                               self.head_bottleneck, self.head_out, self.dtype)
      out["student"] = head(name="head_enc")(z, pool_axis=1)
      out["teacher"] = head(name="head_dec")(d[:, :nv], pool_axis=1)
    return out


def preprocess(images: jax.Array, image_size: int,
               dtype=jnp.float32) -> jax.Array:
  """uint8 (or [0,1] float) NHWC -> resized, ImageNet-normalised float32
  (float64 when ``dtype`` is float64). The mean/std stay the float32
  constants, as torchvision's ``Normalize`` uses them (also in a float64
  run), so float64 parity with the official code needs exactly these."""
  x = images.astype(float_dtype(dtype))
  if jnp.issubdtype(images.dtype, jnp.integer):
    x = x / 255.0
  b, h, w, c = x.shape
  if (h, w) != (image_size, image_size):
    x = jax.image.resize(x, (b, image_size, image_size, c), "bilinear")
  return (x - IMAGENET_MEAN) / IMAGENET_STD


class ViTClassifier(nn.Module):
  """Downstream model (spec sec. 6.1): encoder -> mean over all tokens ->
  ``fc_norm`` -> Dense head (trunc-normal 0.02 x ``init_scale``).

  Called as ``apply(vars, batch, train=bool, rngs={"dropout": k})`` with
  ``batch["image"]`` uint8 NHWC.
  """
  num_outputs: int
  image_size: int = 224
  patch_size: int = 16
  enc_dim: int = 384
  enc_depth: int = 12
  enc_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path: float = 0.1
  init_scale: float = 0.001
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch, train: bool = False):
    images = batch["image"] if isinstance(batch, dict) else batch
    x = preprocess(images, self.image_size, self.dtype).astype(self.dtype)
    x = Encoder(self.patch_size, self.enc_dim, self.enc_depth, self.enc_heads,
                self.mlp_ratio, self.drop_path, self.dtype,
                name="encoder")(x, None, deterministic=not train)
    x = jnp.mean(x.astype(float_dtype(self.dtype)), axis=1)
    x = nn.LayerNorm(epsilon=1e-6, name="fc_norm")(x)
    init = nn.initializers.truncated_normal(0.02 * self.init_scale, lower=-1,
                                            upper=1)
    return nn.Dense(self.num_outputs, kernel_init=init, name="head")(x)


# ---- layer-wise learning-rate decay ---------------------------------------

def _layer_id(path: tuple[str, ...], num_layers: int) -> int:
  if "encoder" not in path:
    return num_layers + 1            # fc_norm, head (and anything new)
  for name in path:
    if name == "patch_embed":
      return 0
    m = re.fullmatch(r"block_(\d+)", name)
    if m:
      return int(m.group(1)) + 1
  return 0


def layerwise_lr_decay_labels(params, decay: float, num_layers: int):
  """Tree of lr scales ``decay ** (num_layers + 1 - layer_id)`` (BEiT/MAE):
  patch embedding id 0, encoder block i id i+1, everything outside
  ``params["encoder"]`` (fc_norm, head) id num_layers+1 (scale 1)."""
  def scale(path, _):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    return float(decay ** (num_layers + 1 - _layer_id(names, num_layers)))
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layerwise_decay(params, decay: float, num_layers: int
                             ) -> optax.GradientTransformation:
  """Chain after an (AdamW) optimiser: multiplies each update by its layer's
  scale, i.e. a per-layer learning rate (weight decay included, as BEiT)."""
  scales = layerwise_lr_decay_labels(params, decay, num_layers)

  def f(updates, _params=None):
    return jax.tree_util.tree_map(lambda u, s: u * s, updates, scales)
  return optax.stateless(f)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """``config.model`` of SD-MAE / MAE: a variant (``VARIANTS``) and
  overrides (0: the variant's value)."""
  variant: str = "small"
  image_size: int = 224
  patch_size: int = 16
  enc_dim: int = 0
  enc_depth: int = 0
  enc_heads: int = 0
  dec_dim: int = 0
  dec_depth: int = 0
  dec_heads: int = 0
  mlp_ratio: float = 4.0
  compute_dtype: Optional[str] = None   # None: float32


def model_kwargs(model_cfg) -> dict:
  """Resolve ``config.model`` (variant + overrides) into module kwargs."""
  c = from_config(ViTConfig, model_cfg, "config.model (ViT)")
  ed, edep, eh, dd, ddep, dh = VARIANTS[c.variant]
  return dict(
      image_size=int(c.image_size), patch_size=int(c.patch_size),
      enc_dim=int(c.enc_dim or ed), enc_depth=int(c.enc_depth or edep),
      enc_heads=int(c.enc_heads or eh), dec_dim=int(c.dec_dim or dd),
      dec_depth=int(c.dec_depth or ddep), dec_heads=int(c.dec_heads or dh),
      mlp_ratio=float(c.mlp_ratio))
