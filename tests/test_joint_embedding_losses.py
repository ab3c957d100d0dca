"""NT-Xent, Barlow Twins and VICReg against hand-computed / NumPy values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
enable_x64 = lambda: jax.enable_x64(True)

from maskssl.losses import joint_embedding as je


def np_ntxent(u, v, tau):
  u = u / np.linalg.norm(u, axis=1, keepdims=True)
  v = v / np.linalg.norm(v, axis=1, keepdims=True)
  b = len(u)
  def ce(z):  # target column i
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    return np.mean(lse - z[np.arange(b), np.arange(b)])
  l_uv, l_uu = u @ v.T / tau, u @ u.T / tau - 1e9 * np.eye(b)
  l_vu, l_vv = v @ u.T / tau, v @ v.T / tau - 1e9 * np.eye(b)
  return 0.5 * (ce(np.concatenate([l_uv, l_uu], 1)) +
                ce(np.concatenate([l_vu, l_vv], 1)))


def np_bt(a, b, lam, ddof=1, eps=0.0):
  an = (a - a.mean(0)) / np.sqrt(a.var(0, ddof=ddof) + eps)
  bn = (b - b.mean(0)) / np.sqrt(b.var(0, ddof=ddof) + eps)
  c = an.T @ bn / len(a)
  on = ((1 - np.diag(c)) ** 2).sum()
  off = (c ** 2).sum() - (np.diag(c) ** 2).sum()
  return on + lam * off


def test_ntxent_hand_computed_two_pairs():
  # B=2, 2-d unit vectors; positives aligned, negatives orthogonal/opposite.
  u = np.array([[1.0, 0.0], [0.0, 1.0]])
  v = np.array([[1.0, 0.0], [0.0, 2.0]])  # norm does not matter
  tau = 0.5
  # anchor u0: pos u0.v0=1; negs u0.v1=0, u0.u1=0 -> loss = -2 + log(e^2+1+1)
  expected = -1 / tau + math.log(math.exp(1 / tau) + 2.0)
  # every anchor has the same structure by symmetry
  loss, m = je.nt_xent(jnp.array(u), jnp.array(v), temperature=tau)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["pos_sim"], 1.0, rtol=1e-6)
  assert float(m["contrastive_acc"]) == 1.0


def test_ntxent_matches_numpy_and_properties():
  rng = np.random.default_rng(0)
  u, v = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  with enable_x64():
    loss, _ = je.nt_xent(jnp.array(u), jnp.array(v), temperature=0.07)
    np.testing.assert_allclose(loss, np_ntxent(u, v, 0.07), rtol=1e-10)
    swapped, _ = je.nt_xent(jnp.array(v), jnp.array(u), temperature=0.07)
    np.testing.assert_allclose(swapped, loss, rtol=1e-12)
    same = np.ones((6, 5))
    l_same, _ = je.nt_xent(jnp.array(same), jnp.array(same), temperature=0.3)
    np.testing.assert_allclose(l_same, math.log(11), rtol=1e-12)
    l_hot, _ = je.nt_xent(jnp.array(u), jnp.array(v), temperature=1e6)
    assert abs(float(l_hot) - math.log(11)) < 1e-4
  # well separated aligned pairs, small tau -> ~0
  e = np.eye(4)
  l_sep, _ = je.nt_xent(jnp.array(e), jnp.array(e), temperature=0.01)
  assert float(l_sep) < 1e-6


def test_barlow_twins_matches_numpy_and_closed_form():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
  with enable_x64():
    loss, m = je.barlow_twins(jnp.array(a), jnp.array(b), lambd=5e-3)
    np.testing.assert_allclose(loss, np_bt(a, b, 5e-3), rtol=1e-10)
    # invariant to positive per-column affine maps of a
    a2 = a * np.array([2.0, 0.5, 3.0, 7.0]) + np.array([1.0, -2.0, 0.0, 5.0])
    loss2, _ = je.barlow_twins(jnp.array(a2), jnp.array(b), lambd=5e-3)
    np.testing.assert_allclose(loss2, loss, rtol=1e-10)
    # batchnorm-style standardisation is a different (biased) number
    loss_bn, _ = je.barlow_twins(jnp.array(a), jnp.array(b), 5e-3,
                                 standardize="batchnorm", eps=1e-5)
    np.testing.assert_allclose(loss_bn, np_bt(a, b, 5e-3, 0, 1e-5), rtol=1e-10)
  # ddof=1 pin: a=b with D<=B-1 orthogonal zero-mean columns:
  # C = (B-1)/B I, L = D/B^2 (biased std would give 0).
  bsz, d = 4, 3
  h = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
  assert np.allclose(h.T @ h, bsz * np.eye(d)) and np.allclose(h.mean(0), 0)
  loss, _ = je.barlow_twins(jnp.array(h), jnp.array(h), lambd=5e-3)
  np.testing.assert_allclose(loss, d / bsz ** 2, rtol=1e-6)
  loss_bn, _ = je.barlow_twins(jnp.array(h), jnp.array(h), 5e-3,
                               standardize="batchnorm", eps=1e-5)
  assert float(loss_bn) < 1e-3


def test_vicreg_hand_computed():
  # z = [[0,0],[2,2]]: inv 0 (za=zb); var_ddof1 = 2 per dim -> std = sqrt(2+1e-4) > 1
  z = jnp.array([[0.0, 0.0], [2.0, 2.0]])
  loss, m = je.vicreg(z, z)
  np.testing.assert_allclose(m["vic_inv"], 0.0, atol=0)
  np.testing.assert_allclose(m["vic_var"], 0.0, atol=0)
  # Cov = [[2,2],[2,2]] -> off-diag sum sq = 8, /d = 4, two views -> 8
  np.testing.assert_allclose(m["vic_cov"], 8.0, rtol=1e-6)
  np.testing.assert_allclose(loss, 8.0, rtol=1e-6)
  # different views, decorrelated columns
  za = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.3], [0.0, -0.3]])
  zb = za * 0.0
  loss, m = je.vicreg(za, zb)
  inv = np.mean(np.asarray(za) ** 2)
  std = np.sqrt(np.array([2 / 3, 0.18 / 3]) + 1e-4)
  var_a = np.mean(np.maximum(0, 1 - std))
  var_b = np.mean(np.maximum(0, 1 - np.sqrt(1e-4)))
  np.testing.assert_allclose(m["vic_inv"], inv, rtol=1e-6)
  np.testing.assert_allclose(m["vic_var"], 0.5 * (var_a + var_b), rtol=1e-6)
  np.testing.assert_allclose(m["vic_cov"], 0.0, atol=1e-7)
  np.testing.assert_allclose(loss, 25 * inv + 25 * 0.5 * (var_a + var_b), rtol=1e-6)


def test_get_loss_registry():
  assert je.get_loss("simclr") is je.nt_xent
  assert je.get_loss("vicreg") is je.vicreg
  with pytest.raises(ValueError):
    je.get_loss("byol")


def test_losses_jit_and_grad():
  rng = np.random.default_rng(2)
  a, b = jnp.array(rng.normal(size=(8, 6)), jnp.float32), jnp.array(rng.normal(size=(8, 6)), jnp.float32)
  for fn in (je.nt_xent, je.barlow_twins, je.vicreg):
    g = jax.jit(jax.grad(lambda x: fn(x, b)[0]))(a)
    assert g.shape == a.shape and bool(jnp.all(jnp.isfinite(g)))
