"""Tests for the SMA self-guided mask generator (maskssl/masks/sma.py).

Includes exact parity with 23 recorded cases of the official implementation
(``../shared/data/sma_mask_reference/cases.npz``, skipped when absent).
"""
import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl.masks import sma

NEG = -1e9
F32_MIN = float(np.finfo(np.float32).min)


# --------------------------------------------------------------------------- helpers
def _round_f32(x):
  return int(np.round(np.float32(x)))


def expected_k(r, n):
  """round_half_even(float32(r) * float32(n)), with the >= 1 survivor guard."""
  k = int(np.round(np.float32(r) * np.float32(n)))
  return max(0, min(k, n - 1))


def expected_m(r, k, n):
  return int(np.round(np.float32(np.float32(n) * np.float32(r)) / np.float32(k)))


def make_valid(lengths, n_max):
  lengths = np.asarray(lengths)
  return np.arange(n_max)[None, :] < lengths[:, None]


def make_logits(seed, b, h, lq, n, valid, scale=1.0):
  rs = np.random.RandomState(seed)
  x = (scale * rs.randn(b, h, lq, n)).astype(np.float32)
  return np.where(valid[:, None, None, :], x, F32_MIN).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _jitted(cfg_items, s=None):
  """jit of sma_mask_details with a static config (and static s unless None)."""
  cfg = sma.mask_config(**dict(cfg_items))
  if s is None:
    return jax.jit(lambda rng, lg, v, s_, d: sma.sma_mask_details(rng, lg, v, cfg, s=s_, draws=d))
  return jax.jit(lambda rng, lg, v, d: sma.sma_mask_details(rng, lg, v, cfg, s=s, draws=d))


def details(rng, logits, valid, s=0.0, draws=None, traced_s=False, **cfg):
  items = tuple(sorted(cfg.items()))
  if traced_s:
    out = _jitted(items)(rng, logits, valid, jnp.float32(s), draws)
  else:
    out = _jitted(items, float(s))(rng, logits, valid, draws)
  return {k: np.asarray(v) for k, v in out.items()}


# --------------------------------------------------------------------------- parity
_CASE_KEYS = [f"c{i:02d}" for i in range(23)]


@pytest.fixture(scope="module")
def reference(request):
  """Opens cases.npz once per module (arrays are read lazily, per key)."""
  from conftest import shared_data_dir  # noqa: PLC0415
  path = shared_data_dir() / "sma_mask_reference" / "cases.npz"
  if not path.is_file():
    pytest.skip(f"SMA reference cases not found at {path}")
  z = np.load(path)
  request.addfinalizer(z.close)
  meta = {c["key"]: c for c in json.loads(str(z["cases_json"]))["cases"]}
  return z, meta


def _case_cfg(c):
  return dict(
      ratio=c["masking_ratio"],
      num_per_query=c["num_per_query"],
      head_aggregation=c["head_aggregation"],
      mask_self=c["mask_self"],
      mode="transformer" if c["self_attention_mode"] else "perceiver",
      rho=c["select_initial_ratio"],
      varying_length=c["varying_length"],
  )


def _case_draws(z, key):
  draws = {"head_idx": z[f"{key}_head_idx"], "query_perm": z[f"{key}_query_perm"]}
  if f"{key}_fill_perm" in z.files:
    draws["fill_perm"] = z[f"{key}_fill_perm"]
  return draws


def test_reference_has_23_cases(shared_data, reference):
  del shared_data
  z, meta = reference
  assert sorted(meta) == _CASE_KEYS
  assert all(f"{k}_mask" in z.files for k in _CASE_KEYS)


@pytest.mark.parametrize("key", _CASE_KEYS)
def test_parity_with_official(shared_data, reference, key):
  """Replays the official torch draws; masks, selections and key masks match.

  Only deliberate deviation: rows with m_b = 0 (no query selected, all-zero
  score). The official topk then breaks an all-way tie arbitrarily and may mask
  PAD; ours masks the same number of VALID tokens (uniformly at random). Those
  rows must be exactly the ones that differ.
  """
  del shared_data
  z, meta = reference
  c = meta[key]
  valid = z[f"{key}_valid"]
  out = details(jax.random.PRNGKey(0), z[f"{key}_logits"], valid, s=c["noise_scale"],
                draws=_case_draws(z, key), **_case_cfg(c))
  ref_mask, ref_sel = z[f"{key}_mask"], z[f"{key}_selected"]
  np.testing.assert_array_equal(out["sel"], ref_sel)
  np.testing.assert_array_equal(out["m"], z[f"{key}_num_selected"])
  deviating = out["m"] == 0  # all-zero score rows (deliberate deviation)
  ok = ~deviating
  np.testing.assert_array_equal(out["mask"][ok], ref_mask[ok])
  np.testing.assert_array_equal(out["keep"][ok].astype(np.int8), z[f"{key}_attn_mask_out"][ok])
  # Deviating rows: same count, never a pad.
  np.testing.assert_array_equal(out["mask"].sum(-1), ref_mask.sum(-1))
  assert not (out["mask"] & ~valid).any()
  if deviating.any():  # the official really differs there (it masks padding)
    assert key in ("c10", "c16"), key
    assert (ref_mask[deviating] & ~valid[deviating]).any()
  else:
    assert key not in ("c10", "c16"), key
  # Exact counts, except the curriculum case at s=0.5 (two roundings, +-1).
  n = valid.sum(-1)
  want = np.array([int(np.round(np.float32(c["masking_ratio"]) * np.float32(x))) for x in n])
  if not c["varying_length"]:
    want = np.full_like(want, round(c["masking_ratio"] * valid.shape[1]))
  if c["count_exact"]:
    np.testing.assert_array_equal(out["mask"].sum(-1), want)
  else:
    assert np.abs(out["mask"].sum(-1) - want).max() <= 1


@pytest.mark.parametrize("key", ["c05", "c06", "c18", "c21"])
def test_parity_top_k_path(shared_data, reference, key):
  """The lax.top_k path reproduces the official cases exactly as well."""
  del shared_data
  z, meta = reference
  c = meta[key]
  args = (jax.random.PRNGKey(0), z[f"{key}_logits"], z[f"{key}_valid"])
  out = details(*args, s=c["noise_scale"], draws=_case_draws(z, key), path="top_k", **_case_cfg(c))
  np.testing.assert_array_equal(out["mask"], z[f"{key}_mask"])
  np.testing.assert_array_equal(out["sel"], z[f"{key}_selected"])


# --------------------------------------------------------------------------- counts
def test_rounding_examples():
  assert expected_k(0.15, 30) == 4 and expected_k(0.15, 10) == 2
  assert expected_k(0.2, 28) == 6 and expected_m(0.2, 3, 28) == 2
  assert expected_k(0.3, 25) == 8 and expected_k(0.3, 15) == 4 and expected_k(0.3, 5) == 2


def test_counts_match_float32_formula_for_all_lengths():
  """In-graph (jit) counts equal numpy float32 round-half-even for n = 0..2048."""
  n = np.arange(0, 2049)
  for r, k in [(0.15, 4), (0.2, 3), (0.3, 3), (0.5, 2)]:
    cfg = sma.mask_config(ratio=r, num_per_query=k)
    f = jax.jit(lambda nn, cfg=cfg: sma.mask_counts(nn, cfg, 2048, 2048))
    out = f(n)
    m_np = np.round(np.float32(n.astype(np.float32) * np.float32(r)) / np.float32(k))
    k_np = np.round(n.astype(np.float32) * np.float32(r))
    np.testing.assert_array_equal(np.asarray(out["m"]), m_np.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(out["k1"]), np.minimum(k_np, np.maximum(n - 1, 0)))
    assert out["m_max"] == int(m_np[-1])


@pytest.mark.parametrize("ratio,k", [(0.15, 4), (0.2, 3), (0.3, 3), (0.5, 2)])
def test_exact_count_transformer(ratio, k):
  n_max = 30
  lengths = np.array([1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 30, 7, 11, 13, 29, 17])
  valid = make_valid(lengths, n_max)
  logits = make_logits(0, len(lengths), 4, n_max, n_max, valid)
  for seed in range(2):
    out = details(jax.random.PRNGKey(seed), logits, valid, ratio=ratio, num_per_query=k)
    want_k = np.array([expected_k(ratio, n) for n in lengths])
    np.testing.assert_array_equal(out["mask"].sum(-1), want_k)
    np.testing.assert_array_equal(out["sel"].sum(-1), [expected_m(ratio, k, n) for n in lengths])
    assert not (out["mask"] & ~valid).any(), "padding masked"
    assert not (out["sel"] & ~valid).any(), "pad query selected"
    assert out["keep"].any(-1).all(), "row without a surviving key"
    np.testing.assert_array_equal(out["keep"], valid & ~out["mask"])
    np.testing.assert_array_equal(out["k2"], 0)
  if ratio == 0.15:  # the documented rounding cases
    assert out["mask"][list(lengths).index(30)].sum() == 4
    assert out["mask"][list(lengths).index(10)].sum() == 2


def test_exact_count_perceiver():
  """Perceiver mode: m = round(N r / k) from the PADDED N for every example."""
  n_max, lq = 40, 16
  lengths = np.array([1, 2, 3, 9, 13, 20, 31, 40])
  valid = make_valid(lengths, n_max)
  logits = make_logits(1, len(lengths), 8, lq, n_max, valid)
  for agg in ("mean", "random_mix"):
    out = details(jax.random.PRNGKey(3), logits, valid, ratio=0.15, num_per_query=4,
                  head_aggregation=agg, mask_self=False, mode="perceiver")
    np.testing.assert_array_equal(out["sel"].sum(-1), round(40 * 0.15 / 4))  # = 2
    np.testing.assert_array_equal(out["mask"].sum(-1), [expected_k(0.15, n) for n in lengths])
    assert not (out["mask"] & ~valid).any()
    assert out["keep"].any(-1).all()


def test_degenerate_guard_keeps_one_key():
  valid = make_valid([1, 2, 3, 4], 4)
  logits = make_logits(2, 4, 2, 4, 4, valid)
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.9, num_per_query=1)
  np.testing.assert_array_equal(out["mask"].sum(-1), [0, 1, 2, 3])  # n - 1
  assert out["keep"].any(-1).all()
  assert not (out["mask"] & ~valid).any()


# --------------------------------------------------------------------------- semantics
def test_mask_self_masks_every_selected_query():
  lengths = np.array([28, 28, 20, 15, 9, 28, 24, 12])  # m in {1, 2} < Nh = 8
  valid = make_valid(lengths, 28)
  logits = make_logits(3, 8, 8, 28, 28, valid, scale=3.0)
  for seed in range(3):
    out = details(jax.random.PRNGKey(seed), logits, valid)
    assert out["sel"].sum() > 0
    assert not (out["sel"] & ~out["mask"]).any()
    # without mask_self this is not guaranteed, but the count stays exact
    out2 = details(jax.random.PRNGKey(seed), logits, valid, mask_self=False)
    np.testing.assert_array_equal(out2["mask"].sum(-1), out["mask"].sum(-1))


def test_mask_self_inf_when_m_exceeds_heads():
  """m = 9 >= Nh = 1: only mask_self_value="inf" guarantees it (spec caveat)."""
  valid = make_valid([60, 60], 60)
  logits = make_logits(4, 2, 1, 60, 60, valid, scale=4.0)
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.3, num_per_query=2,
                mask_self_value="inf")
  assert (out["sel"].sum(-1) == 9).all()
  assert not (out["sel"] & ~out["mask"]).any()


@pytest.mark.parametrize("agg", ["mean", "random_mix"])
def test_highest_summed_attention_is_masked(agg):
  """Keys with a large additive bias get all the attention: they are masked."""
  b, h, n = 6, 4, 20
  lengths = np.array([20, 20, 15, 18, 10, 20])
  valid = make_valid(lengths, n)
  rs = np.random.RandomState(5)
  logits = 0.1 * rs.randn(b, h, n, n).astype(np.float32)
  want = np.zeros((b, n), bool)
  for i, nb in enumerate(lengths):
    hot = rs.choice(nb, expected_k(0.2, nb), replace=False)
    want[i, hot] = True
  logits = logits + 6.0 * want[:, None, None, :]
  logits = np.where(valid[:, None, None, :], logits, F32_MIN).astype(np.float32)
  for seed in range(3):
    out = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation=agg,
                  mask_self=False)
    np.testing.assert_array_equal(out["mask"], want)
    # and the summed score ranks them strictly above every other valid token
    for i in range(b):
      if out["m"][i] > 0:
        hot_min = out["score"][i][want[i]].min()
        cold_max = out["score"][i][valid[i] & ~want[i]].max()
        assert hot_min > cold_max


def test_score_is_summed_softmax_rows():
  """Score equals the hand-computed sum of softmax rows of the selected queries."""
  valid = make_valid([12, 9], 12)
  logits = make_logits(6, 2, 3, 12, 12, valid)
  qkey = np.random.RandomState(0).rand(2, 12).astype(np.float32)
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.5, num_per_query=2,
                head_aggregation="mean", mask_self=False, draws={"query_key": qkey})
  for b, nb in enumerate([12, 9]):
    m = expected_m(0.5, 2, nb)
    chosen = np.argsort(np.where(valid[b], qkey[b], np.inf), kind="stable")[:m]
    x = logits[b].astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = p.mean(0)[chosen].sum(0)
    np.testing.assert_allclose(out["score"][b], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.where(out["sel"][b])[0], np.sort(chosen))


def test_random_mix_single_head_equals_mean():
  lengths = np.array([28, 21, 14, 7, 28, 3])
  valid = make_valid(lengths, 28)
  logits = make_logits(7, 6, 1, 28, 28, valid, scale=2.0)
  for seed in range(3):
    a = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation="random_mix")
    b = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation="mean")
    np.testing.assert_array_equal(a["mask"], b["mask"])
    np.testing.assert_array_equal(a["score"], b["score"])


def test_bf16_logits_and_no_gradient():
  valid = make_valid([28, 20], 28)
  logits = make_logits(8, 2, 8, 28, 28, valid)
  cfg = sma.mask_config()
  m32, _ = sma.sma_mask(jax.random.PRNGKey(0), logits, valid, cfg)
  m16, k16 = sma.sma_mask(jax.random.PRNGKey(0), jnp.asarray(logits, jnp.bfloat16), valid, cfg)
  assert m16.dtype == jnp.bool_ and k16.dtype == jnp.bool_
  np.testing.assert_array_equal(m16.sum(-1), m32.sum(-1))

  def loss(lg, fixed_mask=None):
    mask = sma.sma_mask(jax.random.PRNGKey(0), lg, valid, cfg)[0] if fixed_mask is None else fixed_mask
    p = jax.nn.softmax(lg + NEG * mask[:, None, None, :], axis=-1)
    return jnp.sum(p * jnp.arange(28.0))

  g = jax.grad(loss)(jnp.asarray(logits))
  g_const = jax.grad(lambda lg: loss(lg, m32))(jnp.asarray(logits))
  np.testing.assert_allclose(g, g_const, rtol=1e-6, atol=1e-7)


def test_masked_and_pad_keys_get_exactly_zero_probability():
  """The model applies S + NEG * mask; masked and pad keys get probability 0."""
  lengths = np.array([28, 17, 9, 3])
  valid = make_valid(lengths, 28)
  logits = make_logits(9, 4, 8, 28, 28, valid, scale=5.0)
  mask, keep = sma.sma_mask(jax.random.PRNGKey(1), logits, valid, sma.mask_config())
  p = np.asarray(jax.nn.softmax(jnp.asarray(logits) + NEG * mask[:, None, None, :], axis=-1))
  assert np.asarray(mask).sum() > 0
  assert (p[np.broadcast_to(~np.asarray(keep)[:, None, None, :], p.shape)] == 0.0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
  assert np.isfinite(p).all()


# --------------------------------------------------------------------------- curriculum
def test_curriculum_s1_rho1_is_independent_of_logits():
  lengths = np.array([28, 25, 14, 9, 28, 3])
  valid = make_valid(lengths, 28)
  a = make_logits(10, 6, 8, 28, 28, valid)
  b = make_logits(11, 6, 8, 28, 28, valid, scale=5.0)
  for traced in (False, True):
    oa = details(jax.random.PRNGKey(0), a, valid, s=1.0, rho=1.0, traced_s=traced)
    ob = details(jax.random.PRNGKey(0), b, valid, s=1.0, rho=1.0, traced_s=traced)
    np.testing.assert_array_equal(oa["mask"], ob["mask"])
    np.testing.assert_array_equal(oa["k1"], 0)
    np.testing.assert_array_equal(oa["mask"].sum(-1), [expected_k(0.2, n) for n in lengths])
    assert not (oa["mask"] & ~valid).any()


def test_curriculum_s0_and_partial():
  lengths = np.array([28, 27, 26, 25, 24, 23, 22, 21, 20, 15, 10, 5])
  valid = make_valid(lengths, 28)
  logits = make_logits(12, len(lengths), 8, 28, 28, valid)
  base = details(jax.random.PRNGKey(2), logits, valid)
  for traced in (False, True):
    o0 = details(jax.random.PRNGKey(2), logits, valid, s=0.0, rho=1.0, traced_s=traced)
    np.testing.assert_array_equal(o0["k2"], 0)
    np.testing.assert_array_equal(o0["mask"], base["mask"])  # deterministic, = no curriculum
  want = np.array([expected_k(0.2, n) for n in lengths])
  for s in (0.1, 0.25, 0.5, 0.75, 0.9):
    for traced in (False, True):
      o = details(jax.random.PRNGKey(3), logits, valid, s=s, rho=1.0, traced_s=traced)
      assert np.abs(o["mask"].sum(-1) - want).max() <= 1
      np.testing.assert_array_equal(o["mask"].sum(-1), o["k1"] + o["k2"])
      assert not (o["top"] & o["fill"]).any()
      assert not (o["mask"] & ~valid).any()
      assert o["keep"].any(-1).all()


def test_curriculum_scale_values():
  # T_s = round(0.25 * 1000) = 250
  f = jax.jit(lambda t: sma.curriculum_scale(t, 1000, 0.25))
  for t, want in [(0, 1.0), (125, 0.5), (250, 0.0), (900, 0.0),
                  (50, 0.5 * (1 + np.cos(np.pi * 50 / 250))),
                  (200, 0.5 * (1 + np.cos(np.pi * 200 / 250)))]:
    np.testing.assert_allclose(float(f(jnp.int32(t))), want, atol=1e-6)
  assert float(sma.curriculum_scale(0, 1000, 0.0)) == 0.0
  assert float(sma.curriculum_scale(jnp.int32(7), 10, 0.25)) == 0.0  # T_s = round(2.5) = 2


# --------------------------------------------------------------------------- static shapes, paths
def test_jit_compiles_once_for_different_lengths():
  cfg = sma.mask_config(rho=1.0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(rng, logits, valid, s):
    return sma.sma_mask(rng, logits, valid, cfg, s=s)

  for i, lengths in enumerate([[28, 28, 28], [5, 17, 28], [1, 2, 3]]):
    valid = make_valid(np.array(lengths), 28)
    mask, _ = f(jax.random.PRNGKey(i), make_logits(i, 3, 8, 28, 28, valid), valid, jnp.float32(0.3 * i))
    assert not (np.asarray(mask) & ~valid).any()


@pytest.mark.parametrize("agg,mode,rho", [("random_mix", "transformer", None),
                                         ("mean", "transformer", 1.0),
                                         ("mean", "perceiver", None)])
def test_top_k_path_equals_ranks_path(agg, mode, rho):
  lq = 40 if mode == "transformer" else 12
  lengths = np.array([40, 33, 20, 7, 2, 40, 39, 1])
  valid = make_valid(lengths, 40)
  logits = make_logits(13, 8, 4, lq, 40, valid, scale=2.0)
  # ties on purpose: repeated logits rows give exactly tied scores
  logits[:, :, :, 10:20] = logits[:, :, :, :10]
  cfg = dict(ratio=0.3, num_per_query=2, head_aggregation=agg, mode=mode, rho=rho,
             mask_self=mode == "transformer")
  for seed in range(2):
    a = details(jax.random.PRNGKey(seed), logits, valid, s=0.4, path="ranks", **cfg)
    b = details(jax.random.PRNGKey(seed), logits, valid, s=0.4, path="top_k", **cfg)
    for name in ("mask", "sel", "score", "top", "fill"):
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_auto_path_large_n():
  """N > 1024 switches to the top_k path automatically; same result as ranks."""
  n = 1100
  lengths = np.array([1100, 700])
  valid = make_valid(lengths, n)
  logits = make_logits(14, 2, 1, 8, n, valid)
  cfg = dict(ratio=0.5, num_per_query=64, head_aggregation="mean", mask_self=False,
             mode="perceiver")
  assert sma._use_topk(sma.mask_config(**cfg), 8, n)
  a = details(jax.random.PRNGKey(0), logits, valid, **cfg)
  b = details(jax.random.PRNGKey(0), logits, valid, path="ranks", **cfg)
  np.testing.assert_array_equal(a["mask"], b["mask"])
  np.testing.assert_array_equal(a["mask"].sum(-1), [550, 350])
  assert not (a["mask"] & ~valid).any()


# --------------------------------------------------------------------------- random baseline
def test_random_mask_exact_counts_and_no_pads():
  lengths = np.array([1, 2, 3, 10, 30, 25, 15, 5])
  valid = make_valid(lengths, 30)
  f = jax.jit(sma.random_mask, static_argnums=2)
  seen = np.zeros((len(lengths), 30))
  for seed in range(20):
    mask, keep = map(np.asarray, f(jax.random.PRNGKey(seed), valid, 0.15))
    np.testing.assert_array_equal(mask.sum(-1), [expected_k(0.15, n) for n in lengths])
    assert not (mask & ~valid).any()
    assert keep.any(-1).all()
    np.testing.assert_array_equal(keep, valid & ~mask)
    seen += mask
  assert (seen[4] > 0).sum() >= 20  # n=30, 4 per draw: spread over positions
  big = make_valid(np.array([1500, 999]), 1500)
  mask, _ = sma.random_mask(jax.random.PRNGKey(0), big, 0.3)
  np.testing.assert_array_equal(np.asarray(mask).sum(-1), [450, 300])
  assert not (np.asarray(mask) & ~big).any()


def test_mask_config_defaults_and_overrides():
  cfg = sma.mask_config()
  assert (cfg.ratio, cfg.num_per_query, cfg.head_aggregation, cfg.mask_self,
          cfg.mask_self_value, cfg.mode, cfg.rho) == (0.2, 3, "random_mix", True,
                                                      "num_heads", "transformer", None)
  assert sma.mask_config(rho=1.0).rho == 1.0
  with pytest.raises(KeyError):
    sma.mask_config(ratoi=0.3)
