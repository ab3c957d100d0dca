"""SMA self-guided (attention-derived) masks, as pure jit-friendly functions.

Implements spec ``sma.md`` section 3 (static-shape version of the official
``RandomlySelectedCrossAttentionMasking``, Johnathan-Xie/sma @ bdc1877):

1. ``P = softmax(S)`` of the detached layer-1 logits ``S: (B, Nh, Lq, N)``;
2. pick a uniform random subset of ``m`` queries (``m = rnd(n r / k)`` per
   example in transformer mode, ``round(N r / k)`` from the PADDED length in
   Perceiver mode);
3. sum their attention rows (``mean`` over heads, or one random head per
   (example, query) for ``random_mix``);
4. mask the ``K = rnd(r n)`` valid tokens with the largest summed attention
   (optionally a curriculum share ``K2`` of them uniformly at random instead).

Static shapes: counts become boolean masks through sorting. Only the ``m_max``
selected query rows are gathered and soft-maxed (``m_max = rnd(N r / k)`` is a
static bound), so the cost is ``O(B * Nh_used * m_max * N)`` instead of the full
``(B, Nh, Lq, N)`` softmax. Two selection paths give identical results:

* ``"ranks"``: the spec's sort formulation (``ranks(x) < count`` with
  ``ranks = argsort(argsort(x, stable))``, implemented as one stable sort and a
  scatter); the reference path for tests;
* ``"top_k"``: ``lax.top_k`` with the static bounds ``m_max``/``K_max`` and a
  scatter back to ``(B, N)`` (spec 3.2 "Cost").
``path="auto"`` (default) uses ``top_k`` at every size: it is the fast path for
large N and, measured on CPU, also 4x faster at HIGGS size (256, 8, 28, 28):
0.33 ms vs 1.3 ms, because XLA's CPU sort is slow. Ties are always broken
towards the lower index (stable sort / ``lax.top_k``), so both paths give
identical masks (tested).

Rounding is round-half-to-even of float32 products, like ``torch.round`` in the
reference: ``K = round(float32(r) * float32(n))``, ``m = round(float32(n) *
float32(r) / float32(k))``; Perceiver-mode ``m`` uses Python ``round`` on a
double, as the reference does.

Parity: replaying the recorded torch draws of the 23 official reference cases
(``shared/data/sma_mask_reference``) reproduces the official mask, selected
queries and returned key mask bit for bit in 21 cases, and in every row of the
other two (c10, c16) except the rows with ``m = 0`` described below.

Deliberate deviations from the official code (all documented in the tests):

* **Padding is never masked.** The official ``topk`` runs over all N positions,
  pads included (they score 0). When no query is selected (``m = 0`` for
  short sequences) or valid scores underflow to 0, it can pick pad positions.
  Here the top-K is restricted to valid tokens with ties broken towards the
  lower index, so the count is still exactly ``round(r n)`` and every masked
  token is real.
* **Rows with m = 0** (no query selected; the summed score is all zeros) mask
  ``K`` valid tokens uniformly at random (score replaced by a uniform draw,
  ``draws["tie_key"]`` to replay) instead of the reference's arbitrary
  torch.topk tie order (which can pick pads) or an always-first-K bias.
* **Degenerate guard:** ``K1 <= n - 1`` and ``K2 <= n - 1 - K1`` so at least one
  valid key survives (no effect for ratios <= 0.5).
* The branch is keyed on ``cfg.mode``, not on ``Lq == N``; ``mask_self`` is only
  applied in transformer mode (the reference would also overwrite latent
  indices in Perceiver mode, which is meaningless).
* ``mask_self_value="inf"`` (optional) guarantees that selected queries are
  masked even when ``m >= Nh``; the parity default is the literal ``Nh``.
* With a *traced* curriculum scale ``s`` the curriculum ratios are computed in
  float32; with a Python float they are computed in double and then cast to
  float32, exactly like the reference.
* ``varying_length=False`` (the reference's non-default branch, unused by every
  released config) is supported without curriculum for replaying the
  reference; it also never masks pads.

Random draws can be supplied through ``draws`` (for bit-exact replay of the
official torch draws):

* ``head_idx``: int ``(B, Lq)``, the head used for query ``i`` (random_mix);
* ``query_perm``: int ``(B, P)``, torch-style permutation of query indices,
  right-padded with ``-1``; the first ``m_b`` entries are selected.
  Alternatively ``query_key`` / ``query_order``: ``(B, Lq)`` priorities (lower
  is selected first);
* ``fill_perm``: int ``(B, F)``, torch-style permutation over the *candidate*
  list (valid tokens not in the attention top-K, in ascending position order),
  ``-1`` padded; the first ``K2`` are masked. Alternatively ``fill_key`` /
  ``fill_order``: ``(B, N)`` priorities.
Missing draws come from ``rng`` (one ``jax.random.bits`` call; head = bits mod Nh,
keys = the top 24 bits as a float in [0, 1)).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from maskssl.config_utils import ConfigError, from_config

__all__ = [
    "ranks",
    "sma_mask",
    "sma_mask_details",
    "random_mask",
    "curriculum_scale",
    "MaskConfig",
    "mask_config",
    "query_count_bound",
    "mask_counts",
    "mask_count_bound",
    "TOPK_THRESHOLD",
]

# path="auto" uses lax.top_k when max(Lq, N) > TOPK_THRESHOLD (0: always; it
# is faster than sorting at every size measured on CPU).
TOPK_THRESHOLD = 0

_F32_MIN = float(np.finfo(np.float32).min)


@dataclasses.dataclass(frozen=True)
class MaskConfig:
  """The SMA mask: ``config.mask`` (its fields are the schema; hashable, so
  it is static under jit). Defaults: the HIGGS values."""
  ratio: float = 0.2
  num_per_query: int = 3
  head_aggregation: str = "random_mix"  # "mean" | "random_mix"
  mask_self: bool = True  # transformer only (the method clears it otherwise)
  mask_self_value: Any = "num_heads"  # "num_heads" (parity) | "inf"
  mode: str = "transformer"  # set from config.model.encoder_mode
  rho: Optional[float] = None  # curriculum mix; None = off
  varying_length: bool = True  # False: reference's non-default branch
  # selection path ("ranks" | "top_k" | "auto"): identical masks, top_k is
  # ~4x cheaper on CPU (0.5 vs 2.1 ms at B=256, N=28)
  path: str = "top_k"
  mask_mode: str = "sma"  # "sma" | "random" (uniform masks, the baseline)
  curriculum_fraction: float = 0.0  # share of pretraining with the curriculum

  def items(self):
    return dataclasses.asdict(self).items()


class UnknownMaskKey(ConfigError, KeyError):
  pass


def mask_config(**overrides) -> MaskConfig:
  """:class:`MaskConfig` with keyword overrides (unknown key: an error)."""
  try:
    return from_config(MaskConfig, overrides, "config.mask")
  except ConfigError as e:
    raise UnknownMaskKey(str(e)) from None


def ranks(x, axis=-1):
  """Rank of every entry along ``axis`` (0 = smallest); stable: ties by index.

  Equal to ``argsort(argsort(x, stable=True))``; the second sort is replaced by
  the inverse-permutation scatter (one sort instead of two; XLA's CPU sort costs
  ~0.7 ms at (256, 28)).
  """
  x = jnp.moveaxis(jnp.asarray(x), axis, -1)
  order = jnp.argsort(x, axis=-1, stable=True).astype(jnp.int32)
  iota = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), order.shape)
  out = jnp.put_along_axis(jnp.zeros_like(order), order, iota, axis=-1, inplace=False)
  return jnp.moveaxis(out, -1, axis)


def _round_f32(x):
  """Round-half-to-even of a float32 value, as numpy/torch do."""
  return np.round(np.float32(x))


def query_count_bound(cfg, lq: int, n: int) -> int:
  """Static upper bound ``m_max`` on the number of selected queries."""
  r, k = float(cfg.ratio), int(cfg.num_per_query)
  if cfg.mode == "transformer" and getattr(cfg, "varying_length", True):
    # m = rnd(fl(fl(n r) / k)) is monotone in n, so n = N gives the bound.
    m = int(_round_f32(np.float32(np.float32(n) * np.float32(r)) / np.float32(k)))
  else:
    m = round(n * r / k)
  return max(0, min(lq, m))


def mask_count_bound(cfg, n: int) -> int:
  """Static upper bound ``K_max`` on the number of masked tokens (incl. fill)."""
  r = float(cfg.ratio)
  kb = max(int(_round_f32(np.float32(r) * np.float32(n))), round(r * n))
  return max(0, min(n - 1, kb))


def _is_static_number(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _perm_to_key(perm, length: int):
  """torch-style permutation (B, P), -1 padded -> priorities (B, length).

  ``key[b, perm[b, j]] = j``; positions not listed get +inf.
  """
  perm = jnp.asarray(perm).astype(jnp.int32)
  b, p = perm.shape
  idx = jnp.where(perm < 0, length, perm)  # out of range -> dropped
  rows = jnp.arange(b, dtype=jnp.int32)[:, None]
  key = jnp.full((b, length), jnp.inf, jnp.float32)
  pos = jnp.broadcast_to(jnp.arange(p, dtype=jnp.float32)[None], (b, p))
  return key.at[rows, idx].set(pos, mode="drop")


def _scatter_flags(shape, idx, flags):
  """(B, L) bool with ``out[b, idx[b, j]] = flags[b, j]`` (idx distinct per row)."""
  rows = jnp.arange(shape[0], dtype=jnp.int32)[:, None]
  return jnp.zeros(shape, bool).at[rows, idx].set(flags)


def _smallest(key, count, kmax: int, use_topk: bool):
  """(B, L) bool: the ``count[b]`` entries with the smallest key (ties: lower index).

  ``count <= kmax`` must hold; ``kmax`` is a static bound used by the top_k path.
  """
  if kmax <= 0:
    return jnp.zeros(key.shape, bool)
  if use_topk:
    _, idx = jax.lax.top_k(-key, kmax)
  else:  # one stable sort; the first kmax positions in ascending-key order
    idx = jnp.argsort(key, axis=-1, stable=True)[:, :kmax]
  flags = jnp.arange(kmax, dtype=jnp.int32)[None, :] < count[:, None]
  return _scatter_flags(key.shape, idx.astype(jnp.int32), flags)


def _use_topk(cfg, lq: int, n: int) -> bool:
  path = getattr(cfg, "path", "auto") or "auto"
  if path == "auto":
    return max(lq, n) > TOPK_THRESHOLD
  if path not in ("ranks", "top_k"):
    raise ValueError(f"SMA mask path must be auto|ranks|top_k, got {path!r}")
  return path == "top_k"


def _unit_float(bits):
  """uint32 random bits -> float32 in [0, 1) with 24 random bits (exact)."""
  return (bits >> jnp.uint32(8)).astype(jnp.float32) * jnp.float32(2.0**-24)


def _draw(draws, names):
  for name in names:
    if draws is not None and name in draws and draws[name] is not None:
      return draws[name]
  return None


def mask_counts(n, cfg, lq: int, n_keys: int, s=0.0):
  """Per-example counts (spec 3.2 steps 4 and 8) from valid lengths ``n`` (B,).

  Returns a dict: ``m`` (queries), ``k1`` (attention top-K), ``k2`` (random
  curriculum fill), all (B,) int32 after the degenerate guard, plus the static
  bounds ``m_max``, ``k_max`` and the static flag ``curriculum``.
  """
  n = jnp.asarray(n).astype(jnp.int32)
  n_f = n.astype(jnp.float32)
  bsz = n.shape[0]
  r, k = float(cfg.ratio), int(cfg.num_per_query)
  varying = bool(getattr(cfg, "varying_length", True))
  rho = getattr(cfg, "rho", None)

  m_max = query_count_bound(cfg, lq, n_keys)
  if cfg.mode == "transformer" and varying:
    # m = rnd(fl(fl(n r) / k)) exactly as torch computes it in float32. XLA
    # rewrites x / const into x * (1 / const), which changes the float32 result
    # at half-way points (n = 5, r = 0.3, k = 3 gives 0.50000006 -> 1 instead of
    # 0.5 -> 0), so the count comes from a host-computed table over n = 0..N.
    table = np.round(
        np.float32(np.arange(n_keys + 1, dtype=np.float32) * np.float32(r)) / np.float32(k))
    table = np.minimum(table, m_max).astype(np.int32)
    m = jnp.asarray(table)[jnp.clip(n, 0, n_keys)]
  else:
    m = jnp.full((bsz,), m_max, jnp.int32)

  curriculum = rho is not None and not (_is_static_number(s) and float(s) <= 0.0)
  if not curriculum:
    c1, c2 = r, None
  elif _is_static_number(s):  # double, then float32 (as the reference)
    c1, c2 = r * (1.0 - float(rho) * float(s)), r * float(rho) * float(s)
  else:  # traced: float32
    rs = jnp.float32(rho) * jnp.asarray(s, jnp.float32)
    c1 = jnp.float32(r) * (jnp.float32(1.0) - rs)
    c2 = jnp.float32(r) * rs
  n_count = n_f if varying else jnp.full((bsz,), float(n_keys), jnp.float32)
  if not varying and not curriculum:
    k1 = jnp.full((bsz,), round(r * n_keys), jnp.int32)
  else:
    k1 = jnp.round(jnp.float32(c1) * n_count).astype(jnp.int32)
  k_max = mask_count_bound(cfg, n_keys)
  limit = jnp.maximum(n - 1, 0)
  k1 = jnp.clip(k1, 0, jnp.minimum(limit, k_max))
  if curriculum:
    k2 = jnp.round(jnp.asarray(c2, jnp.float32) * n_count).astype(jnp.int32)
    k2 = jnp.clip(k2, 0, jnp.minimum(limit - k1, k_max))
  else:
    k2 = jnp.zeros((bsz,), jnp.int32)
  return dict(m=m, k1=k1, k2=k2, m_max=m_max, k_max=k_max, curriculum=curriculum)


def sma_mask_details(rng, logits, valid, cfg, s=0.0, draws: Optional[Mapping[str, Any]] = None):
  """Like :func:`sma_mask`, but returns a dict of intermediates.

  Keys: ``mask, keep`` (B, N) bool; ``sel`` (B, Lq) bool selected queries;
  ``score`` (B, N) float32 summed attention (after ``mask_self``); ``m, k1, k2``
  (B,) int32 counts; ``top`` / ``fill`` (B, N) bool attention / random parts.
  """
  logits = jax.lax.stop_gradient(jnp.asarray(logits))
  if logits.ndim != 4:
    raise ValueError(f"logits must be (B, Nh, Lq, N), got {logits.shape}")
  bsz, nh, lq, n_keys = logits.shape
  valid = jnp.asarray(valid).astype(bool)
  if valid.shape != (bsz, n_keys):
    raise ValueError(f"valid must be {(bsz, n_keys)}, got {valid.shape}")
  mode = cfg.mode
  if mode not in ("transformer", "perceiver"):
    raise ValueError(f"SMA mask mode must be transformer|perceiver, got {mode!r}")
  if mode == "transformer" and lq != n_keys:
    raise ValueError(f"transformer mode needs Lq == N, got Lq={lq}, N={n_keys}")
  agg = cfg.head_aggregation
  if agg not in ("mean", "random_mix"):
    raise ValueError(f"head_aggregation must be mean|random_mix, got {agg!r}")
  varying = bool(getattr(cfg, "varying_length", True))
  use_topk = _use_topk(cfg, lq, n_keys)
  # One threefry call for every draw (cheaper to compile and to run than
  # split + randint + several uniforms): columns [head | query | tie | fill].
  bits = jax.random.bits(rng, (bsz, 2 * lq + 2 * n_keys), jnp.uint32)
  b_head, b_query = bits[:, :lq], bits[:, lq:2 * lq]
  b_tie, b_fill = bits[:, 2 * lq:2 * lq + n_keys], bits[:, 2 * lq + n_keys:]

  n = valid.sum(-1).astype(jnp.int32)

  # ---- 4/5. query count and query selection --------------------------------
  counts = mask_counts(n, cfg, lq, n_keys, s)
  m, m_max, k_max = counts["m"], counts["m_max"], counts["k_max"]
  k1, k2, curriculum = counts["k1"], counts["k2"], counts["curriculum"]
  qvalid = valid if (mode == "transformer" and varying) else jnp.ones((bsz, lq), bool)

  qkey = _draw(draws, ("query_key", "query_order"))
  if qkey is not None:
    qkey = jnp.asarray(qkey).astype(jnp.float32)
  elif _draw(draws, ("query_perm",)) is not None:
    qkey = _perm_to_key(_draw(draws, ("query_perm",)), lq)
  else:
    qkey = _unit_float(b_query)
  qkey = jnp.where(qvalid, qkey, jnp.inf)

  if m_max > 0:
    if use_topk:
      _, qidx = jax.lax.top_k(-qkey, m_max)  # (B, m_max), selection order
    else:
      qidx = jnp.argsort(qkey, axis=-1, stable=True)[:, :m_max]
    qidx = qidx.astype(jnp.int32)
    w = jnp.arange(m_max, dtype=jnp.int32)[None, :] < m[:, None]  # (B, m_max)
    sel = _scatter_flags((bsz, lq), qidx, w)

    # ---- 2/3/6. softmax of the selected rows only, head aggregation, sum ---
    keymask = valid[:, None, :]
    if agg == "random_mix":
      hidx = _draw(draws, ("head_idx",))
      if hidx is None:
        hidx = (b_head % jnp.uint32(nh)).astype(jnp.int32)
      hidx = jnp.asarray(hidx).astype(jnp.int32)
      hsel = jnp.take_along_axis(hidx, qidx, axis=1)  # (B, m_max)
      rowid = hsel * lq + qidx
      rows = jnp.take_along_axis(
          logits.reshape(bsz, nh * lq, n_keys), rowid[:, :, None], axis=1)
      rows = jnp.where(keymask, rows.astype(jnp.float32), _F32_MIN)
      att = jax.nn.softmax(rows, axis=-1)  # (B, m_max, N)
    else:
      rows = jnp.take_along_axis(logits, qidx[:, None, :, None], axis=2)
      rows = jnp.where(keymask[:, None], rows.astype(jnp.float32), _F32_MIN)
      att = jnp.mean(jax.nn.softmax(rows, axis=-1), axis=1)  # (B, m_max, N)
    score = jnp.sum(jnp.where(w[:, :, None], att, 0.0), axis=1)  # (B, N)
  else:
    sel = jnp.zeros((bsz, lq), bool)
    score = jnp.zeros((bsz, n_keys), jnp.float32)

  # Rows with no selected query (m = 0: short sequences) have an all-zero score.
  # The reference's torch.topk then breaks the tie arbitrarily (and can mask
  # pads); here those rows get a uniform random score instead, so their K
  # masked tokens are uniform over the valid ones (no positional bias).
  tkey = _draw(draws, ("tie_key",))
  if tkey is None:
    tkey = _unit_float(b_tie)
  score = jnp.where((m == 0)[:, None], jnp.asarray(tkey, jnp.float32), score)

  # ---- 7. mask_self -----------------------------------------------------------
  if cfg.mask_self and mode == "transformer":
    value = getattr(cfg, "mask_self_value", "num_heads")
    if value == "num_heads":
      fill_value = float(nh)
    elif value == "inf":
      fill_value = float("inf")
    else:
      raise ValueError(f"mask_self_value must be num_heads|inf, got {value!r}")
    score = jnp.where(sel, jnp.float32(fill_value), score)

  # ---- 9. attention-guided top-K over valid tokens -------------------------------
  neg_score = jnp.where(valid, -score, jnp.inf)  # ascending = descending score
  top = _smallest(neg_score, k1, k_max, use_topk)

  # ---- 10. random fill (curriculum) ------------------------------------------------
  if curriculum:
    cand = valid & ~top
    fkey = _draw(draws, ("fill_key", "fill_order"))
    if fkey is not None:
      fkey = jnp.asarray(fkey).astype(jnp.float32)
    elif _draw(draws, ("fill_perm",)) is not None:
      by_cand = _perm_to_key(_draw(draws, ("fill_perm",)), n_keys)
      cidx = jnp.clip(jnp.cumsum(cand, axis=-1) - 1, 0, n_keys - 1)
      fkey = jnp.take_along_axis(by_cand, cidx, axis=1)
    else:
      fkey = _unit_float(b_fill)
    fkey = jnp.where(cand, fkey, jnp.inf)
    fill = _smallest(fkey, k2, k_max, use_topk)
  else:
    fill = jnp.zeros((bsz, n_keys), bool)

  mask = top | fill
  keep = valid & ~mask
  return dict(mask=mask, keep=keep, sel=sel, score=score, m=m, k1=k1, k2=k2,
              top=top, fill=fill)


def sma_mask(rng, logits, valid, cfg, s=0.0, draws=None):
  """Self-guided mask from layer-1 attention logits.

  Args:
    rng: PRNG key.
    logits: (B, Nh, Lq, N) pre-softmax layer-1 logits (any float dtype; taken
      through ``stop_gradient`` and soft-maxed in float32). Pad keys are set to
      ``finfo(float32).min`` here, whatever they held.
    valid: (B, N) bool, True = real token (right padding).
    cfg: object with ``ratio, num_per_query, head_aggregation, mask_self,
      mask_self_value, mode, rho`` (see :func:`mask_config`).
    s: curriculum scale in [0, 1] (Python float or traced scalar); only used when
      ``cfg.rho`` is not None. ``s = 1, rho = 1`` gives uniform random masks.
    draws: optional precomputed random draws (see module docstring).

  Returns:
    ``(mask, keep)``: (B, N) bool, ``mask`` True = masked (never a pad),
    ``keep = valid & ~mask``.
  """
  out = sma_mask_details(rng, logits, valid, cfg, s=s, draws=draws)
  return out["mask"], out["keep"]


def random_mask(rng, valid, ratio):
  """Uniform baseline: exactly ``round(float32(r) * n_valid)`` valid tokens per row.

  Same rounding and degenerate guard (``<= n - 1``) as :func:`sma_mask`; pads
  are never masked. Returns ``(mask, keep)``.
  """
  valid = jnp.asarray(valid).astype(bool)
  bsz, n_keys = valid.shape
  n = valid.sum(-1).astype(jnp.int32)
  kk = jnp.round(n.astype(jnp.float32) * jnp.float32(ratio)).astype(jnp.int32)
  kk = jnp.clip(kk, 0, jnp.maximum(n - 1, 0))
  key = jnp.where(valid, _unit_float(jax.random.bits(rng, (bsz, n_keys), jnp.uint32)), jnp.inf)
  k_max = max(0, min(n_keys - 1, int(_round_f32(np.float32(ratio) * np.float32(n_keys)))))
  mask = _smallest(key, kk, k_max, True)
  return mask, valid & ~mask


def curriculum_scale(step, total_steps, fraction):
  """Cosine curriculum ``s_t = 0.5 (1 + cos(pi t / T_s))`` for ``t < T_s``, else 0.

  ``T_s = round(fraction * total_steps)`` (static Python ints/floats); ``step``
  may be traced. ``fraction = 0`` (or ``T_s = 0``) gives 0 always.
  """
  t_s = int(round(float(fraction) * float(total_steps)))
  t = jnp.asarray(step, jnp.float32)
  if t_s <= 0:
    return jnp.zeros_like(t)
  val = 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * t / jnp.float32(t_s)))
  return jnp.where(t < t_s, val, 0.0).astype(jnp.float32)
