"""Joint-embedding losses: NT-Xent (SimCLR), Barlow Twins, VICReg.

Pure, jit-friendly functions of two embedding batches ``za, zb: (B, d)``
(one row per example, rows aligned: row ``i`` of ``za`` and of ``zb`` are the
two views of example ``i``). Each returns ``(loss, metrics)`` where ``loss``
is a scalar and ``metrics`` a flat dict of scalars (per-term values and an
embedding-std collapse monitor). All statistics are over the *global* batch
(under ``jit`` with a sharded batch axis the reductions are global), and are
computed in at least float32 (float64 inputs stay float64, for tests).

Conventions (see the MetaMask and MSCN specs):

* :func:`nt_xent`: rows L2-normalised (``x / max(||x||, 1e-12)`` as torch),
  ``S = Z Z^T / tau`` over ``Z = [za; zb]`` (2B rows) with the diagonal
  excluded; ``L = mean_i [-S_{i,p(i)} + logsumexp_{j != i} S_{ij}]``, positive
  ``p(i) = i +- B``. This equals MetaMask's
  ``1/2 (CE([l_uv|l_uu]) + CE([l_vu|l_vv]))``. ``L = ln(2B-1)`` when all
  embeddings coincide.
* :func:`barlow_twins`: per-column standardisation then
  ``C = za_hat^T zb_hat / B`` and
  ``L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` (a SUM).
  ``standardize="unbiased"`` (MetaMask reference): divide by
  ``sqrt(var_ddof1 + eps)`` with ``eps=0`` by default (a constant column
  then divides by zero, as in the reference). ``standardize="batchnorm"``
  (original Barlow Twins / MSCN): non-affine BN, ``sqrt(var_biased + eps)``,
  pass ``eps=1e-5``.
* :func:`vicreg`: ``L = sim_coeff * mean (za - zb)^2
  + std_coeff * 1/2 (v(za) + v(zb)) + cov_coeff * (c(za) + c(zb))`` with
  ``v(z) = mean_k relu(1 - sqrt(var_ddof1(z)_k + eps))``, ``c(z) =
  sum_{i != j} Cov(z)_ij^2 / d``, ``Cov`` with ``1/(B-1)``; defaults
  25/25/1 and ``eps = 1e-4`` as in the VICReg paper/code.

:func:`get_loss` maps a config name (``"simclr"``/``"nt_xent"``,
``"barlow_twins"``, ``"vicreg"``) to the function and raises on unknown
names.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _as_float(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x, eps: float = 1e-12):
  """Row-wise ``x / max(||x||_2, eps)`` (``torch.nn.functional.normalize``)."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def _embedding_std(z):
  """Mean per-dimension std of the L2-normalised embeddings (collapse
  monitor: ~1/sqrt(d) when healthy, 0 when collapsed)."""
  return jnp.mean(jnp.std(l2_normalize(z), axis=0))


def effective_rank(z, eps: float = 1e-7):
  """Effective rank of a ``(B, D)`` batch embedding (RankMe, Garrido et al.
  2023, Eq. 1): ``exp(H(p))``, ``p`` the L1-normalised singular values.
  From the eigenvalues of the smaller Gram matrix (cheap for B, D ~ 1e3);
  no gradient."""
  z = jax.lax.stop_gradient(_as_float(z))
  g = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z
  s = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(g), 0.0))
  p = s / (jnp.sum(s) + eps) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def nt_xent(za, zb, temperature: float = 0.07, normalize_eps: float = 1e-12):
  """NT-Xent (SimCLR) loss; returns ``(loss, metrics)``.

  Args:
    za, zb: ``(B, d)`` embeddings of the two views.
    temperature: softmax temperature ``tau`` (MetaMask: 0.07; SimCLR 0.1).
    normalize_eps: eps of the row L2 normalisation.
  Metrics: ``ntxent``, ``pos_sim`` (mean cosine of the positive pairs),
  ``contrastive_acc`` (fraction of anchors whose positive has the largest
  logit), ``emb_std``.
  """
  za, zb = _as_float(za), _as_float(zb)
  b = za.shape[0]
  z = l2_normalize(jnp.concatenate([za, zb], axis=0), normalize_eps)
  sim = z @ z.T
  logits = sim / temperature
  n = 2 * b
  eye = jnp.eye(n, dtype=bool)
  logits = jnp.where(eye, -jnp.inf, logits)
  pos_idx = (jnp.arange(n) + b) % n
  pos = jnp.take_along_axis(logits, pos_idx[:, None], axis=1)[:, 0]
  lse = jax.nn.logsumexp(logits, axis=1)
  loss = jnp.mean(lse - pos)
  acc = jnp.mean(jnp.argmax(logits, axis=1) == pos_idx)
  pos_sim = jnp.mean(jnp.take_along_axis(sim, pos_idx[:, None], axis=1))
  metrics = dict(ntxent=loss, pos_sim=pos_sim,
                 contrastive_acc=acc.astype(loss.dtype),
                 emb_std=_embedding_std(jnp.concatenate([za, zb], 0)))
  return loss, metrics


def _standardize(z, mode: str, eps: float):
  mean = jnp.mean(z, axis=0, keepdims=True)
  zc = z - mean
  if mode == "unbiased":
    var = jnp.sum(zc * zc, axis=0, keepdims=True) / (z.shape[0] - 1)
  elif mode in ("batchnorm", "biased"):
    var = jnp.mean(zc * zc, axis=0, keepdims=True)
  else:
    raise ValueError(f"unknown standardize mode {mode!r}; "
                     "use 'unbiased' or 'batchnorm'")
  return zc / jnp.sqrt(var + eps)


def cross_correlation(za, zb, standardize: str = "unbiased", eps: float = 0.0):
  """The Barlow Twins matrix ``C = za_hat^T zb_hat / B`` (d, d)."""
  za, zb = _as_float(za), _as_float(zb)
  an = _standardize(za, standardize, eps)
  bn = _standardize(zb, standardize, eps)
  return an.T @ bn / za.shape[0]


def barlow_twins(za, zb, lambd: float = 5e-3, standardize: str = "unbiased",
                 eps: float = 0.0):
  """Barlow Twins redundancy-reduction loss; returns ``(loss, metrics)``.

  Args:
    za, zb: ``(B, d)`` embeddings.
    lambd: weight of the off-diagonal term (5e-3).
    standardize: ``"unbiased"`` (std with ddof=1: MetaMask reference) or
      ``"batchnorm"`` (biased variance: original Barlow Twins).
    eps: added to the variance before the square root (MetaMask parity: 0;
      original Barlow Twins: 1e-5).
  Metrics: ``bt_on_diag``, ``bt_off_diag`` (unweighted), ``bt_diag_mean``
  (mean cross-correlation diagonal: 1 when the views agree), ``emb_std``.
  """
  c = cross_correlation(za, zb, standardize, eps)
  diag = jnp.diagonal(c)
  on = jnp.sum((1.0 - diag) ** 2)
  off = jnp.sum(c * c) - jnp.sum(diag * diag)
  loss = on + lambd * off
  metrics = dict(bt_on_diag=on, bt_off_diag=off,
                 bt_diag_mean=jax.lax.stop_gradient(jnp.mean(diag)),
                 emb_std=_embedding_std(jnp.concatenate(
                     [_as_float(za), _as_float(zb)], 0)))
  return loss, metrics


def _off_diag_sq_sum(c):
  return jnp.sum(c * c) - jnp.sum(jnp.diagonal(c) ** 2)


def vicreg(za, zb, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, eps: float = 1e-4):
  """VICReg loss (Bardes et al. 2022); returns ``(loss, metrics)``.

  Metrics: ``vic_inv``, ``vic_var``, ``vic_cov`` (unweighted terms),
  ``emb_std``.
  """
  za, zb = _as_float(za), _as_float(zb)
  n, d = za.shape
  inv = jnp.mean((za - zb) ** 2)

  def var_cov(z):
    zc = z - jnp.mean(z, axis=0, keepdims=True)
    var = jnp.sum(zc * zc, axis=0) / (n - 1)
    v = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(var + eps)))
    cov = zc.T @ zc / (n - 1)
    return v, _off_diag_sq_sum(cov) / d

  va, ca = var_cov(za)
  vb, cb = var_cov(zb)
  var_term = 0.5 * (va + vb)
  cov_term = ca + cb
  loss = sim_coeff * inv + std_coeff * var_term + cov_coeff * cov_term
  metrics = dict(vic_inv=inv, vic_var=var_term, vic_cov=cov_term,
                 emb_std=_embedding_std(jnp.concatenate([za, zb], 0)))
  return loss, metrics


_LOSSES: dict[str, Callable] = {
    "simclr": nt_xent,
    "nt_xent": nt_xent,
    "ntxent": nt_xent,
    "barlow_twins": barlow_twins,
    "vicreg": vicreg,
}


def get_loss(name: str) -> Callable:
  """Loss function by config name; raises ``ValueError`` if unknown."""
  if name not in _LOSSES:
    raise ValueError(f"unknown joint-embedding loss {name!r}; "
                     f"known: {sorted(_LOSSES)}")
  return _LOSSES[name]


__all__ = ["nt_xent", "barlow_twins", "vicreg", "cross_correlation",
           "l2_normalize", "get_loss"]
