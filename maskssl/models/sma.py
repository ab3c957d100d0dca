"""SMA model (Self-Guided Masked Autoencoders, Xie et al., ICLR 2024) in flax.linen.

The architecture (arXiv 2402.14789):

* :class:`Preprocessor`: byte ids (``Embed(262, E)``) or continuous tokens
  (``Dense(C_in -> E)``) + learned position table, LayerNorm(eps 1e-12), dropout.
* :class:`SMALayer`: the generic attention block of spec 2.2 (LN only on the
  queries, K/V of a cross layer from the raw ``kv_in``, float32 softmax,
  additive ``NEG`` key masking, exact GELU, widening ``w``, optional query
  residual, dropout and drop-path).
* :class:`SMAEncoder`: ``encoder_mode="transformer"`` (layer 1 = self
  attention with K/V from the raw embeddings, E == D) or ``"perceiver"``
  (learned latents cross-attend to the input in layer 1). The self-guided
  mask is generated *inside* layer 1 from ``stop_gradient`` of its own logits
  (:func:`maskssl.masks.sma.sma_mask`), or a random / precomputed mask is used.
* :class:`SMADecoder`: one cross-attention layer with one learned query per
  position (spec 2.4), output ``V`` logits (bytes) or ``C_in`` values.
  Settled against the official code (``tests/test_parity_sma.py``, the
  ``parity/sma`` cases): the queries are the decoder's **own** learned
  table (``teacher.reconstruction_decoder.decoder_latents.latents``,
  ``share_decoder_queries=False``), **not** the encoder's position table,
  with nothing added (no position embedding, no mask token); they pass
  through the layer's ``LN_a`` before Q; and the decoder layer has **no
  query residual** (``SMABasicDecoder`` default ``use_query_residual=False``:
  ``h1 = o(attn)``), while every encoder layer and the fine-tuning head
  have it. With these, decoder outputs, loss and every gradient match the
  official float64 run to ~1e-15 (position table as queries: 10 % off).
* :class:`SMAPretrainModel`: params ``{"encoder", "decoder"}``.
* :class:`SMAClassifier`: params ``{"encoder", "head"}`` (spec 2.5), same
  encoder structure, so fine-tuning loads ``state["params"]["encoder"]``.

Layout / speed notes (CPU is the target of the throughput benchmark):

* attention tensors are ``(B, H, N, d)`` so every ``dot_general`` has leading
  batch dimensions; the self-attention projection is ONE fused Dense
  (``qkv``), the cross projection one Dense for Q and one fused for K/V;
* ``compact=True`` (spec 2.3 "speed path"): after the mask is known, layer 1
  finishes on a static buffer of the ``N_vis = N - rnd(r N) + 1`` kept tokens
  (ascending position; keys *and* query rows), later layers and the decoder
  keys run on that buffer, and the decoder only evaluates the queries of the
  ``M_max = rnd(r N) + 1`` masked positions (the loss ignores all others).
  This is exactly the full-length ``key_keep`` computation restricted to the
  rows the loss can see (attention is permutation-equivariant and no
  positional information enters after the embedding); tested to 1e-5.
  Precondition: the mask masks ``round(r n)`` (+-1) valid tokens per example,
  which holds for :func:`sma_mask`, :func:`random_mask` and the curriculum
  (a precomputed mask with fewer masked tokens would overflow the buffer:
  use ``compact=False`` for e.g. an all-False mask).

Implementation choices / deviations (function unchanged unless noted):

* :class:`Linear` / :class:`Norm` replace ``nn.Dense`` / ``nn.LayerNorm``
  with the same parameter names and shapes; a LayerNorm that feeds a
  projection has its affine part folded into that projection's weights, the
  ``1/sqrt(d_head)`` scale is folded into the Q weights, LayerNorm uses a
  two-pass float32 variance and a custom VJP, softmax a custom VJP
  (all exact up to float rounding).
* ``share_decoder_queries`` / ``add_mask_token`` (spec 2.4, default off) and
  the optional reconstruction target transform are not implemented.
* The fine-tuning head has no drop-path (treated like a decoder layer).
* ``compute_dtype=bfloat16``: attention logits are computed in float32 from
  the bf16 Q/K; params, softmax and losses stay float32.
  ``compute_dtype=float64`` (under ``jax.enable_x64``, for the parity
  tests) computes everything in float64 (:func:`acc_dtype`).

Parity with the official PyTorch code (Johnathan-Xie/sma @ bdc1877): with
the converted official state_dict (:mod:`maskssl.interop.sma`) and the
recorded mask draws (``draws=`` of :class:`SMAEncoder`), masks are equal
and loss / gradients / activations match to ~1e-15 relative in float64 and
~2e-6 in float32 in transformer mode (continuous, MSE), Perceiver mode
(bytes, CE, widening 2) and for the classification head, on the full-length
and the compact paths (``tests/test_parity_sma.py``).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskssl.masks.sma import MaskConfig

NEG = -1e9
Dtype = Any

_kernel_init = nn.initializers.normal(stddev=0.02)
_embed_init = nn.initializers.normal(stddev=0.02)


class Linear(nn.Module):
  """Dense layer (params ``kernel (in, out)``, ``bias (out,)`` like
  ``nn.Dense``) that can absorb a preceding LayerNorm's affine part and a
  per-output-column scale into its (small) weights:

      y = (xhat * g + b0) @ W + b  ==  xhat @ (g[:, None] W) + (b0 @ W + b)

  so the big ``(B, N, D)`` activations never see the broadcast multiply/add
  of the LayerNorm (forward or backward); exact up to float rounding."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, ln=None, out_scale=None, cols=None):
    """``cols=(a, b)`` computes only output columns ``a:b``."""
    kernel = self.param("kernel", _kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if cols is not None:
      kernel, bias = kernel[:, cols[0]:cols[1]], bias[cols[0]:cols[1]]
    if ln is not None:
      g, b0 = ln
      bias = bias + b0 @ kernel
      kernel = g[:, None] * kernel
    if out_scale is not None:
      kernel = kernel * out_scale
      bias = bias * out_scale
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            (((x.ndim - 1,), (0,)), ((), ())))
    return y + bias.astype(self.dtype)


@jax.custom_vjp
def normalize(x, eps):
  """``(x - mean) / sqrt(var + eps)`` over the last axis (float32).

  Custom VJP: ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` -- two
  reductions per token instead of the four autodiff derives (LayerNorm
  backward dominated the non-matmul time on XLA:CPU)."""
  return _normalize_fwd(x, eps)[0]


def acc_dtype(dtype) -> Dtype:
  """Statistics / softmax / loss dtype: float32, or float64 for a float64
  model (``jax.enable_x64``; the parity tests run the official float64
  cases). Identical to float32 for float32 / bfloat16 compute."""
  return jnp.promote_types(dtype, jnp.float32)


def _normalize_fwd(x, eps):
  zero = jnp.zeros((), x.dtype)       # remembers the primal dtype
  x = x.astype(acc_dtype(x.dtype))
  mean = jnp.mean(x, axis=-1, keepdims=True)
  xc = x - mean
  rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
  xhat = xc * rstd
  return xhat, (xhat, rstd, zero)


def _normalize_bwd(res, g):
  xhat, rstd, zero = res
  g = g.astype(xhat.dtype)
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  return dx.astype(zero.dtype), None


normalize.defvjp(_normalize_fwd, _normalize_bwd)


@jax.custom_vjp
def softmax(s):
  """float32 softmax over the last axis (one reciprocal per row, custom VJP
  ``ds = p (g - sum(g p))``). Masked keys (``NEG`` added) get exactly 0."""
  return _softmax_fwd(s)[0]


def _softmax_fwd(s):
  s = s.astype(acc_dtype(s.dtype))
  e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
  p = e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))
  return p, p


def _softmax_bwd(p, g):
  return (p * (g - jnp.sum(g * p, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


class Norm(nn.Module):
  """LayerNorm (params ``scale``, ``bias`` like ``nn.LayerNorm``), float32
  statistics. ``affine=False`` returns ``(xhat, (scale, bias))`` so the affine
  part can be folded into the next :class:`Linear`."""
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, affine: bool = True):
    d = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    xhat = normalize(x, self.epsilon)
    if affine:
      return (xhat * scale + bias).astype(self.dtype)
    return xhat.astype(self.dtype), (scale, bias)


def _dense(features, dtype, name):
  return Linear(features, dtype, name=name)


def _layer_norm(eps, dtype, name):
  return Norm(eps, dtype, name=name)


# ----------------------------------------------------------------------------
# Mask configuration and static compaction buffers.
# ----------------------------------------------------------------------------
def rnd32(x: float) -> int:
  """Round-half-even of a float32 product (the generator's rounding)."""
  return int(np.round(np.float32(x)))


def masked_count_bound(n: int, ratio: float) -> int:
  """Upper bound on the masked count for padded length ``n`` (+1 curriculum)."""
  return min(n, rnd32(np.float32(n) * np.float32(ratio)) + 1)


def kept_count_bound(n: int, ratio: float) -> int:
  """``N_vis = N - rnd(r N) + 1``: upper bound on kept tokens (spec 2.3)."""
  return min(n, n - rnd32(np.float32(n) * np.float32(ratio)) + 1)


class Compaction(NamedTuple):
  """Static-size gather of the True positions of ``flags (B, N)``.

  ``onehot (B, S, N)`` (small N: gather/scatter as matmuls, which XLA:CPU runs
  far better than gather + scatter-add in the backward) or ``index (B, S)``.
  ``valid (B, S)`` marks the filled buffer slots (ascending position)."""
  index: jax.Array
  onehot: Optional[jax.Array]
  valid: jax.Array


def compaction(flags: jax.Array, size: int, impl: str = "auto") -> Compaction:
  flags = flags.astype(bool)
  b, n = flags.shape
  pos = jnp.cumsum(flags.astype(jnp.int32), axis=1) - 1           # (B, N)
  count = pos[:, -1] + 1
  slots = jnp.arange(size, dtype=jnp.int32)
  valid = slots[None, :] < count[:, None]                         # (B, S)
  if impl == "auto":
    impl = "onehot" if n <= 64 else "take"
  if impl == "onehot":   # O(S N) per example: only for short sequences
    hit = flags[:, None, :] & (pos[:, None, :] == slots[None, :, None])
    onehot = hit.astype(jnp.float32)
    index = jnp.argmax(hit, axis=-1).astype(jnp.int32)
    return Compaction(index, onehot, valid)
  # index path: scatter positions into slots (drops overflow).
  tgt = jnp.where(flags & (pos < size), pos, size)
  index = jnp.zeros((b, size + 1), jnp.int32).at[
      jnp.arange(b)[:, None], tgt].set(
          jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n)),
          mode="drop")[:, :size]
  return Compaction(index, None, valid)


def gather_rows(x: jax.Array, c: Compaction) -> jax.Array:
  """``x (B, N, ...)`` or unbatched ``x (N, ...)`` -> ``(B, S, ...)``."""
  if c.onehot is not None:
    oh = c.onehot.astype(x.dtype)
    if x.ndim == 2:
      return jnp.einsum("bsn,nd->bsd", oh, x)
    return jnp.einsum("bsn,bnd->bsd", oh, x.reshape(x.shape[:2] + (-1,))
                      ).reshape((x.shape[0], oh.shape[1]) + x.shape[2:])
  if x.ndim == 2:
    return x[c.index]
  idx = c.index.reshape(c.index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def scatter_rows(y: jax.Array, c: Compaction, n: int) -> jax.Array:
  """Inverse of :func:`gather_rows` (zeros at positions not in the buffer)."""
  y = jnp.where(c.valid.reshape(c.valid.shape + (1,) * (y.ndim - 2)), y, 0)
  if c.onehot is not None:
    return jnp.einsum("bsn,bsd->bnd", c.onehot.astype(y.dtype), y)
  b = y.shape[0]
  out = jnp.zeros((b, n) + y.shape[2:], y.dtype)
  return out.at[jnp.arange(b)[:, None], c.index].add(y)


def key_bias(keep: Optional[jax.Array]) -> Optional[jax.Array]:
  """``(B, N)`` bool keep -> additive float32 ``(B, 1, 1, N)`` (0 or NEG)."""
  if keep is None:
    return None
  return jnp.where(keep, 0.0, NEG).astype(jnp.float32)[:, None, None, :]


# ----------------------------------------------------------------------------
# Building blocks.
# ----------------------------------------------------------------------------
class Preprocessor(nn.Module):
  """Token embedding + learned positions + LayerNorm(1e-12) + dropout."""
  input_kind: str = "continuous"     # "continuous" | "bytes"
  c_in: int = 1
  vocab_size: int = 262
  n_max: int = 28
  embed_dim: int = 128
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.input_kind == "bytes":
      e = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                   param_dtype=jnp.float32, embedding_init=_embed_init,
                   name="embed")(inputs.astype(jnp.int32))
    else:
      x = inputs
      if x.ndim == 2:
        x = x[..., None]
      e = _dense(self.embed_dim, self.dtype, "embed")(x.astype(self.dtype))
    n = e.shape[1]
    if n > self.n_max:
      raise ValueError(f"sequence length {n} > n_max {self.n_max}")
    pos = self.param("pos_emb", _embed_init, (self.n_max, self.embed_dim))
    e = e + pos[:n].astype(e.dtype)
    e = _layer_norm(1e-12, self.dtype, "norm")(e)
    return nn.Dropout(self.dropout)(e, deterministic=not train)


def _split_heads(x: jax.Array, h: int) -> jax.Array:
  """``(B, N, H*d)`` -> ``(B, H, N, d)``."""
  b, n, c = x.shape
  return x.reshape(b, n, h, c // h).transpose(0, 2, 1, 3)


class SMALayer(nn.Module):
  """Spec 2.2 block: attention (queries LN'd) + MLP, both pre-LN residual."""
  num_heads: int = 8
  qk_dim: int = 128
  v_dim: int = 128
  widening: int = 1
  cross: bool = True              # K/V from the raw kv_in (else from LN_a(q))
  query_residual: bool = True
  attn_dropout: float = 0.0
  hidden_dropout: float = 0.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.qk_dim % self.num_heads or self.v_dim % self.num_heads:
      raise ValueError(f"widths {self.qk_dim}/{self.v_dim} not divisible by "
                       f"{self.num_heads} heads")
    self.ln_a = _layer_norm(1e-5, self.dtype, "ln_a")
    if self.cross:
      self.q_proj = _dense(self.qk_dim, self.dtype, "q")
      self.kv_proj = _dense(self.qk_dim + self.v_dim, self.dtype, "kv")
    else:
      self.qkv_proj = _dense(2 * self.qk_dim + self.v_dim, self.dtype, "qkv")
    self.o_proj = _dense(self.v_dim, self.dtype, "o")
    self.ln_b = _layer_norm(1e-5, self.dtype, "ln_b")
    self.mlp_in = _dense(self.widening * self.v_dim, self.dtype, "mlp_in")
    self.mlp_out = _dense(self.v_dim, self.dtype, "mlp_out")
    self.attn_drop = nn.Dropout(self.attn_dropout)
    self.hidden_drop = nn.Dropout(self.hidden_dropout)

  # -- projections ---------------------------------------------------------
  @property
  def _scale(self):
    return 1.0 / math.sqrt(self.qk_dim / self.num_heads)

  def query(self, q_in):
    """``LN_a(q_in) -> Dense`` : ``(..., Nq, qk)`` (cross layers), already
    multiplied by ``1/sqrt(d_head)`` (folded into the weights)."""
    xhat, ln = self.ln_a(q_in, affine=False)
    return self.q_proj(xhat, ln,
                       out_scale=jnp.asarray(self._scale, acc_dtype(self.dtype)))

  def keyvalue(self, kv_in, ln=None):
    """``Dense(kv_in)`` (raw, not normalised) -> ``(K, V)``, ``(B, Nk, qk)``
    and ``(B, Nk, v)``; ``ln`` folds a caller's LayerNorm affine (``kv_in``
    is then its ``xhat``). One fused projection, split with ``lax.split``
    (whose transpose is a concatenate, not pads + adds)."""
    k, v = jax.lax.split(self.kv_proj(kv_in, ln), (self.qk_dim, self.v_dim),
                         axis=-1)
    return k, v

  def key(self, kv_in):
    """Only the K part of :meth:`keyvalue` (mask logits need no V)."""
    return self.kv_proj(kv_in, cols=(0, self.qk_dim))

  def self_qkv(self, x):
    xhat, ln = self.ln_a(x, affine=False)
    col = jnp.concatenate([
        jnp.full((self.qk_dim,), self._scale, acc_dtype(self.dtype)),
        jnp.ones((self.qk_dim + self.v_dim,), acc_dtype(self.dtype))])
    y = self.qkv_proj(xhat, ln, out_scale=col)
    q, k, v = jax.lax.split(y, (self.qk_dim, self.qk_dim, self.v_dim), axis=-1)
    return q, (k, v)

  # -- attention -----------------------------------------------------------
  def logits(self, q, k, bias=None):
    """Scaled float32 logits ``(B, H, Nq, Nk)`` with the key bias added.
    ``q`` may be unbatched ``(Nq, qk)`` (learned queries / latents)."""
    if q.ndim == 2:
      q = jnp.broadcast_to(q[None], (k.shape[0],) + q.shape)
    qh, kh = _split_heads(q, self.num_heads), _split_heads(k, self.num_heads)
    acc = acc_dtype(qh.dtype)
    s = jnp.einsum("bhqd,bhkd->bhqk", qh.astype(acc),
                   kh.astype(acc))      # float32 logits (spec 2.6)
    return s if bias is None else s + bias

  def attend(self, q, kv, bias, train: bool = False):
    """Softmax attention of ``q`` over ``kv = (K, V)``: ``(B, Nq, H*dv)``."""
    k, v = kv
    p = softmax(self.logits(q, k, bias))
    self.sow("intermediates", "attn", p)
    p = self.attn_drop(p, deterministic=not train)
    vh = _split_heads(v, self.num_heads)
    o = jnp.einsum("bhqk,bhkd->bhqd", p.astype(vh.dtype), vh)
    b, h, nq, dv = o.shape
    return o.transpose(0, 2, 1, 3).reshape(b, nq, h * dv)

  def finish(self, q_in, q, kv, bias, train: bool = False):
    """Attention, output projection, residuals and MLP."""
    o = self.attend(q, kv, bias, train)
    a = self.hidden_drop(self.o_proj(o), deterministic=not train)
    a = self._drop_path(a, train)
    h1 = (q_in + a) if self.query_residual else a
    xhat, ln = self.ln_b(h1, affine=False)
    m = self.mlp(xhat, ln)
    m = self._drop_path(self.hidden_drop(m, deterministic=not train), train)
    return h1 + m

  def mlp(self, xhat, ln):
    """The feed-forward block on the normalised ``xhat`` (``ln``: the
    LayerNorm affine folded into ``mlp_in``)."""
    return self.mlp_out(nn.gelu(self.mlp_in(xhat, ln), approximate=False))

  def _drop_path(self, x, train):
    if not train or self.drop_path == 0.0:
      return x
    keep = 1.0 - self.drop_path
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    m = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(m, x / keep, jnp.zeros_like(x))

  def __call__(self, q_in, kv_in=None, bias=None, train: bool = False):
    """Full layer; ``kv_in`` only for cross layers."""
    if self.cross:
      q, kv = self.query(q_in), self.keyvalue(kv_in)
    else:
      q, kv = self.self_qkv(q_in)
    return self.finish(q_in, q, kv, bias, train)


# ----------------------------------------------------------------------------
# Encoder.
# ----------------------------------------------------------------------------
class SMAEncoder(nn.Module):
  """Preprocessor + layer 1 (mask generation) + ``num_self_layers`` layers.

  ``__call__(inputs, valid, train, masking, mask, s)`` returns
  ``(h, mask, h_keep)``:

  * ``h``: ``(B, N, D)`` (transformer), ``(B, N_vis, D)`` (transformer,
    compact path) or ``(B, L, D)`` (perceiver);
  * ``mask``: ``(B, N)`` bool, True = masked (all-False without masking);
  * ``h_keep``: key mask aligned with the rows of ``h`` (``valid`` in eval,
    ``valid & ~mask`` on the full-length path, the buffer fill on the compact
    path, ``None`` in perceiver mode).
  """
  input_kind: str = "continuous"
  c_in: int = 1
  vocab_size: int = 262
  n_max: int = 28
  embed_dim: int = 128
  encoder_mode: str = "transformer"
  num_latents: int = 256
  latent_dim: int = 128
  num_self_layers: int = 4
  self_heads: int = 8
  self_qk_dim: Optional[int] = None
  self_widening: int = 1
  cross_heads: int = 8
  cross_qk_dim: Optional[int] = None
  cross_widening: int = 1
  hidden_dropout: float = 0.0
  attn_dropout: float = 0.0
  drop_path: float = 0.0
  mask_spec: MaskConfig = MaskConfig()
  mask_mode: str = "sma"             # "sma" | "random"
  compact: bool = False
  gather_impl: str = "auto"
  dtype: Dtype = jnp.float32

  def _layer(self, name, *, cross, heads, qk, w, drop_path):
    return SMALayer(num_heads=heads, qk_dim=qk, v_dim=self.latent_dim,
                    widening=w, cross=cross, query_residual=True,
                    attn_dropout=self.attn_dropout,
                    hidden_dropout=self.hidden_dropout, drop_path=drop_path,
                    dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, inputs, valid=None, *, train: bool = False,
               masking: bool = False, mask=None, s=0.0, draws=None):
    """``draws``: optional recorded mask draws handed to :func:`sma_mask`
    (replay of the official torch draws, see :mod:`maskssl.masks.sma`)."""
    transformer = self.encoder_mode == "transformer"
    if self.encoder_mode not in ("transformer", "perceiver"):
      raise ValueError(f"encoder_mode {self.encoder_mode!r}")
    x = Preprocessor(self.input_kind, self.c_in, self.vocab_size, self.n_max,
                     self.embed_dim, self.hidden_dropout, self.dtype,
                     name="preprocessor")(inputs, train)
    b, n, _ = x.shape
    if valid is None:
      valid = jnp.ones((b, n), bool)
    valid = valid.astype(bool)
    self_qk = self.self_qk_dim or self.latent_dim
    if transformer:
      if self.embed_dim != self.latent_dim:
        raise ValueError("transformer mode needs embed_dim == latent_dim")
      layer0 = self._layer("layer_0", cross=True, heads=self.self_heads,
                           qk=self_qk, w=self.self_widening, drop_path=0.0)
      q_in = x
    else:
      layer0 = self._layer("layer_0", cross=True, heads=self.cross_heads,
                           qk=self.cross_qk_dim or self.latent_dim,
                           w=self.cross_widening, drop_path=0.0)
      q_in = self.param("latents", _embed_init,
                        (self.num_latents, self.latent_dim)).astype(self.dtype)
    valid_bias = key_bias(valid)
    use_mask = masking or mask is not None
    # Transformer + compact + masking: layer 1 runs on the kept tokens only
    # (their rows of x gathered into the N_vis buffer); the mask logits need
    # Q and K of all tokens but no gradient, so they are computed from
    # stop_gradient(x) and no V / backward is spent on masked tokens.
    kept_only = self.compact and transformer and use_mask
    if not kept_only:
      q = layer0.query(q_in)
      kv = layer0.keyvalue(x)

    if not use_mask:
      h = layer0.finish(q_in, q, kv, valid_bias, train)
      mask = jnp.zeros((b, n), bool)
      h_keep = valid
    else:
      if mask is None:
        from maskssl.masks import sma as sma_masks  # pylint: disable=g-import-not-at-top
        rng = self.make_rng("mask")
        if self.mask_mode == "random":
          mask, keep = sma_masks.random_mask(rng, valid, self.mask_spec.ratio)
        elif self.mask_mode == "sma":
          if kept_only:
            xs = jax.lax.stop_gradient(x)
            q_all, k_all = layer0.query(xs), layer0.key(xs)
          else:
            q_all, k_all = q, kv[0]
          logits = jax.lax.stop_gradient(
              layer0.logits(q_all, k_all, valid_bias))
          self.sow("intermediates", "mask_logits", logits)
          mask, keep = sma_masks.sma_mask(rng, logits, valid, self.mask_spec,
                                          s=s, draws=draws)
        else:
          raise ValueError(f"mask_mode {self.mask_mode!r}")
      else:
        mask = mask.astype(bool) & valid
        keep = valid & ~mask
      mask = jax.lax.stop_gradient(mask)
      keep = jax.lax.stop_gradient(keep)
      if kept_only:
        c = compaction(keep, kept_count_bound(n, self.mask_spec.ratio),
                       self.gather_impl)
        xk = gather_rows(x, c)     # queries AND keys: the kept tokens
        h = layer0.finish(xk, layer0.query(xk), layer0.keyvalue(xk),
                          key_bias(c.valid), train)
        h_keep = c.valid
      elif self.compact:           # perceiver: compact the keys / values
        c = compaction(keep, kept_count_bound(n, self.mask_spec.ratio),
                       self.gather_impl)
        sizes = tuple(a.shape[-1] for a in kv)
        g = gather_rows(jnp.concatenate([a.astype(self.dtype) for a in kv],
                                        axis=-1), c)
        if self.dtype == jnp.float32:
          kv = tuple(jax.lax.split(g, sizes, axis=-1))
        else:  # lax.split's transpose rejects mixed-dtype cotangents
          kv = (g[..., :sizes[0]], g[..., sizes[0]:])
        h = layer0.finish(q_in, q, kv, key_bias(c.valid), train)
        h_keep = c.valid
      else:
        h = layer0.finish(q_in, q, kv, key_bias(keep), train)
        h_keep = keep
    if not transformer:
      h_keep = None
    bias = key_bias(h_keep)
    for i in range(self.num_self_layers):
      h = self._layer(f"layer_{i + 1}", cross=False, heads=self.self_heads,
                      qk=self_qk, w=self.self_widening,
                      drop_path=self.drop_path)(h, None, bias, train)
    return h, mask, h_keep


# ----------------------------------------------------------------------------
# Decoder, pretraining model, classifier.
# ----------------------------------------------------------------------------
class SMADecoder(nn.Module):
  """Spec 2.4: learned per-position queries cross-attend to LN(encoder out)."""
  n_max: int = 28
  embed_dim: int = 128
  out_dim: int = 1
  num_heads: int = 1
  qk_dim: Optional[int] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, enc, h_keep, n: int, query_rows: Optional[Compaction] = None,
               train: bool = False):
    """``enc (B, Nk, D)`` -> ``(B, n, out)`` or ``(B, S, out)`` for the query
    rows selected by ``query_rows`` (compact path: masked positions only)."""
    queries = self.param("queries", _embed_init, (self.n_max, self.embed_dim))
    kv_hat, ln = _layer_norm(1e-5, self.dtype, "ln_pre")(enc, affine=False)
    layer = SMALayer(num_heads=self.num_heads,
                     qk_dim=self.qk_dim or self.embed_dim, v_dim=self.embed_dim,
                     widening=1, cross=True, query_residual=False,
                     dtype=self.dtype, name="layer")
    q = layer.query(queries[:n].astype(self.dtype))          # (n, qk)
    if query_rows is not None:
      q = gather_rows(q, query_rows)                          # (B, S, qk)
    h = layer.finish(None, q, layer.keyvalue(kv_hat, ln), key_bias(h_keep),
                     train)
    h, ln = _layer_norm(1e-12, self.dtype, "ln_final")(h, affine=False)
    return _dense(self.out_dim, self.dtype, "out")(h, ln).astype(
        acc_dtype(self.dtype))


class SMAPretrainModel(nn.Module):
  """Encoder + reconstruction decoder. Params ``{"encoder", "decoder"}``.

  Returns a dict: ``pred`` (float32 ``(B, N, V)``, or ``(B, M_max, V)`` on
  the compact path), ``loss_mask`` aligned with ``pred`` rows, ``index``
  (``(B, M_max)`` positions of the ``pred`` rows, or None), ``mask``."""
  encoder: SMAEncoder
  decoder_heads: int = 1
  decoder_qk_dim: Optional[int] = None
  out_dim: int = 1

  def setup(self):
    e = self.encoder          # adopted as the child "encoder" (field name)
    self.dec = SMADecoder(n_max=e.n_max, embed_dim=e.embed_dim,
                          out_dim=self.out_dim, num_heads=self.decoder_heads,
                          qk_dim=self.decoder_qk_dim, dtype=e.dtype,
                          name="decoder")

  def __call__(self, inputs, valid=None, *, train: bool = True,
               masking: bool = True, mask=None, s=0.0, full_output=False,
               draws=None):
    h, mask, h_keep = self.encoder(inputs, valid, train=train,
                                   masking=masking, mask=mask, s=s,
                                   draws=draws)
    n = mask.shape[1]
    if self.encoder.compact and not full_output and (masking or
                                                      mask is not None):
      rows = compaction(mask, masked_count_bound(n, self.encoder.mask_spec.ratio),
                        self.encoder.gather_impl)
      pred = self.dec(h, h_keep, n, rows, train)
      return dict(pred=pred, loss_mask=rows.valid, index=rows.index, mask=mask,
                  rows=rows)
    if h.shape[1] != n and self.encoder.encoder_mode == "transformer":
      raise ValueError("full_output needs compact=False")
    pred = self.dec(h, h_keep, n, None, train)
    return dict(pred=pred, loss_mask=mask, index=None, mask=mask, rows=None)


class SMAClassificationHead(nn.Module):
  """Spec 2.5: one learned query, one SMALayer (query residual on), LN, Dense."""
  num_outputs: int
  dim: int = 128
  qk_dim: Optional[int] = None
  num_heads: int = 1
  attn_dropout: float = 0.0
  hidden_dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, enc, h_keep, train: bool = False):
    query = self.param("query", _embed_init, (1, self.dim)).astype(self.dtype)
    kv_in = _layer_norm(1e-5, self.dtype, "ln_pre")(enc)
    h = SMALayer(num_heads=self.num_heads, qk_dim=self.qk_dim or self.dim,
                 v_dim=self.dim, widening=1, cross=True, query_residual=True,
                 attn_dropout=self.attn_dropout,
                 hidden_dropout=self.hidden_dropout, drop_path=0.0,
                 dtype=self.dtype, name="layer")(query, kv_in,
                                                 key_bias(h_keep), train)
    h = _layer_norm(1e-12, self.dtype, "ln")(h[:, 0])
    return _dense(self.num_outputs, self.dtype, "out")(h).astype(
        acc_dtype(self.dtype))


class SMAClassifier(nn.Module):
  """Fine-tuning model, params ``{"encoder", "head"}``; masking off.

  Called as ``apply({"params": p}, batch, train=...)`` with a batch dict
  holding ``x`` (continuous) or ``tokens`` (bytes) and optionally ``valid``."""
  encoder: SMAEncoder
  num_outputs: int
  head_dim: Optional[int] = None
  head_qk_dim: Optional[int] = None
  head_heads: int = 1
  attn_dropout: float = 0.0
  hidden_dropout: float = 0.0

  def setup(self):
    self.head = SMAClassificationHead(
        num_outputs=self.num_outputs,
        dim=self.head_dim or self.encoder.latent_dim,
        qk_dim=self.head_qk_dim, num_heads=self.head_heads,
        attn_dropout=self.attn_dropout, hidden_dropout=self.hidden_dropout,
        dtype=self.encoder.dtype, name="head")

  def __call__(self, batch, train: bool = False):
    inputs = batch["tokens"] if self.encoder.input_kind == "bytes" else batch["x"]
    h, _, h_keep = self.encoder(inputs, batch.get("valid"), train=train,
                            masking=False)
    return self.head(h, h_keep, train)
