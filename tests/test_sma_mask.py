"""Tests for the SMA self-guided mask generator (maskssl/masks/sma.py).

Includes exact parity with 23 recorded cases of the official implementation
(``../shared/data/sma_mask_reference/cases.npz``, skipped when absent).
"""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl.masks import sma

try:
  from conftest import shared_data_dir
except ImportError:  # e.g. --import-mode=importlib
  import os
  import pathlib

  def shared_data_dir():
    env = os.environ.get("MASKSSL_SHARED_DATA")
    return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

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


# XLA CPU compilation dominates this file's runtime on a loaded 2-core box, so
# each (config, shapes) program is compiled exactly once, at LLVM optimisation
# level 0 (codegen only: HLO semantics and float results are unchanged; the
# parity cases below pass bit-exactly this way, and test_jit_compiles_once and
# test_default_compile_matches use the ordinary jax.jit pipeline).
_FAST = {"xla_backend_optimization_level": 0}
_COMPILED = {}


def _run(name, fn, *args):
  leaves, tree = jax.tree.flatten(args)
  sig = (name, tree, tuple((np.shape(x), np.asarray(x).dtype.str) for x in leaves))
  if sig not in _COMPILED:
    _COMPILED[sig] = jax.jit(fn).lower(*args).compile(compiler_options=_FAST)
  return _COMPILED[sig](*args)


def details(rng, logits, valid, s=0.0, draws=None, traced_s=False, both_paths=False, **cfg):
  """sma_mask_details as numpy; ``both_paths`` also checks top_k == ranks."""
  config = sma.mask_config(**cfg)
  s_arg = jnp.float32(s) if traced_s else None

  def one(path, rng, logits, valid, s_, d):
    c = sma.mask_config(**{**cfg, "path": path}) if path else config
    return sma.sma_mask_details(rng, logits, valid, c, s=s if s_ is None else s_, draws=d)

  if both_paths:
    fn = lambda *a: (one("ranks", *a), one("top_k", *a))  # noqa: E731
  else:
    fn = lambda *a: one(None, *a)  # noqa: E731
  name = (tuple(sorted(config.items())), None if traced_s else float(s), both_paths)
  out = _run(name, fn, rng, jnp.asarray(logits), jnp.asarray(valid), s_arg, draws)
  if both_paths:
    a, b = ({k: np.asarray(v) for k, v in o.items()} for o in out)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"ranks vs top_k path: {k}")
    return a
  return {k: np.asarray(v) for k, v in out.items()}


# --------------------------------------------------------------------------- parity
_CASE_KEYS = [f"c{i:02d}" for i in range(23)]
# Cases whose top_k path is checked against the ranks path inside the same run.
_BOTH_PATHS = {"c00", "c06", "c18", "c20", "c21"}
# Curriculum cases run with a traced s (the production path: one program for
# every s); for s in {0.5, 1} the float32 ratios equal the reference's doubles.
_TRACED_S = {"c20", "c21"}


class _Reference:
  """cases.npz opened once per module; arrays are read lazily per key.

  Cases with the same config, shapes and scale are concatenated along the batch
  and run once (one compile per group instead of one per case); c20 and c21
  differ only in the traced s, so they share one compiled program.
  """

  def __init__(self, path):
    self.z = np.load(path)
    self.meta = {c["key"]: c for c in json.loads(str(self.z["cases_json"]))["cases"]}
    self._out = {}

  def cfg(self, key):
    c = self.meta[key]
    return dict(
        ratio=c["masking_ratio"], num_per_query=c["num_per_query"],
        head_aggregation=c["head_aggregation"], mask_self=c["mask_self"],
        mode="transformer" if c["self_attention_mode"] else "perceiver",
        rho=c["select_initial_ratio"], varying_length=c["varying_length"])

  def group(self, key):
    sig = lambda k: (tuple(sorted(self.cfg(k).items())), self.meta[k]["noise_scale"],  # noqa: E731
                     tuple(self.meta[k]["shape"][1:]), f"{k}_fill_perm" in self.z.files)
    return [k for k in _CASE_KEYS if sig(k) == sig(key)]

  def outputs(self, key):
    if key not in self._out:
      keys = self.group(key)
      z = self.z
      cat = lambda name: np.concatenate([z[f"{k}_{name}"] for k in keys])  # noqa: E731
      valid = cat("valid")
      draws = {"head_idx": cat("head_idx"), "query_perm": cat("query_perm"),
               # only used in rows with m = 0 (deviating rows), fixed for replay
               "tie_key": np.zeros(valid.shape, np.float32)}
      if f"{key}_fill_perm" in z.files:
        width = max(z[f"{k}_fill_perm"].shape[1] for k in keys)
        draws["fill_perm"] = np.concatenate([
            np.pad(z[f"{k}_fill_perm"], ((0, 0), (0, width - z[f"{k}_fill_perm"].shape[1])),
                   constant_values=-1) for k in keys])
      out = details(jax.random.PRNGKey(0), cat("logits"), valid, s=self.meta[key]["noise_scale"],
                    draws=draws, both_paths=any(k in _BOTH_PATHS for k in keys),
                    traced_s=key in _TRACED_S, **self.cfg(key))
      start = 0
      for k in keys:
        b = self.meta[k]["shape"][0]
        self._out[k] = {name: v[start:start + b] for name, v in out.items()}
        start += b
    return self._out[key]


_REFERENCE = []


def _open_reference():
  """The shared _Reference (opened at most once per module), or None if absent."""
  if not _REFERENCE:
    path = shared_data_dir() / "sma_mask_reference" / "cases.npz"
    _REFERENCE.append(_Reference(path) if path.is_file() else None)
  return _REFERENCE[0]


@pytest.fixture(scope="module")
def reference():
  ref = _open_reference()
  if ref is None:
    pytest.skip("SMA reference cases (sma_mask_reference/cases.npz) not found")
  yield ref


def test_reference_has_23_cases(shared_data, reference):
  del shared_data
  assert sorted(reference.meta) == _CASE_KEYS
  assert all(f"{k}_mask" in reference.z.files for k in _CASE_KEYS)


@pytest.mark.parametrize("key", _CASE_KEYS)
def test_parity_with_official(shared_data, reference, key):
  """Replays the official torch draws; masks, selections and key masks match.

  Only deliberate deviation: rows with m_b = 0 (no query selected, all-zero
  score; cases c10 and c16). The official topk then breaks an all-way tie
  arbitrarily and masks PAD there; ours masks the same number of VALID tokens
  (uniformly at random in production). Those rows must be exactly the ones
  that differ.
  """
  del shared_data
  z, c = reference.z, reference.meta[key]
  out = reference.outputs(key)
  valid = z[f"{key}_valid"]
  ref_mask, ref_sel = z[f"{key}_mask"], z[f"{key}_selected"]
  np.testing.assert_array_equal(out["sel"], ref_sel)
  np.testing.assert_array_equal(out["m"], z[f"{key}_num_selected"])
  deviating = out["m"] == 0
  ok = ~deviating
  np.testing.assert_array_equal(out["mask"][ok], ref_mask[ok])
  np.testing.assert_array_equal(out["keep"][ok].astype(np.int8), z[f"{key}_attn_mask_out"][ok])
  np.testing.assert_array_equal(out["mask"].sum(-1), ref_mask.sum(-1))
  assert not (out["mask"] & ~valid).any()
  if key in ("c10", "c16"):  # the official really masks padding in those rows
    assert deviating.any() and (ref_mask[deviating] & ~valid[deviating]).any(-1).all()
  else:
    assert not deviating.any(), key
  # Exact counts, except the curriculum case at s=0.5 (two roundings, +-1).
  n = valid.sum(-1)
  want = np.array([int(np.round(np.float32(c["masking_ratio"]) * np.float32(x))) for x in n])
  if not c["varying_length"]:
    want = np.full_like(want, round(c["masking_ratio"] * valid.shape[1]))
  if c["count_exact"]:
    np.testing.assert_array_equal(out["mask"].sum(-1), want)
  else:
    assert np.abs(out["mask"].sum(-1) - want).max() <= 1


# --------------------------------------------------------------------------- counts
def test_ranks_matches_double_argsort():
  x = np.random.RandomState(0).randint(0, 4, (3, 5, 9)).astype(np.float32)  # many ties
  got = jax.jit(lambda v: [sma.ranks(v, axis=a) for a in (-1, 1, 0)])(x)
  for axis, g in zip((-1, 1, 0), got):
    want = np.argsort(np.argsort(x, axis=axis, kind="stable"), axis=axis, kind="stable")
    np.testing.assert_array_equal(np.asarray(g), want)


def test_rounding_examples():
  assert expected_k(0.15, 30) == 4 and expected_k(0.15, 10) == 2
  assert expected_k(0.2, 28) == 6 and expected_m(0.2, 3, 28) == 2
  assert expected_k(0.3, 25) == 8 and expected_k(0.3, 15) == 4 and expected_k(0.3, 5) == 2
  assert expected_m(0.3, 3, 5) == 0  # 1.5 / 3 = 0.5 -> 0 (XLA's x * (1/3) would give 1)


def test_counts_match_float32_formula_for_all_lengths():
  """In-graph counts equal numpy float32 round-half-even for n = 0..2048."""
  n = np.arange(0, 2049)
  settings = [(0.15, 4), (0.2, 3), (0.3, 3), (0.5, 2)]
  cfgs = [sma.mask_config(ratio=r, num_per_query=k) for r, k in settings]
  out = jax.jit(lambda nn: [sma.mask_counts(nn, c, 2048, 2048) for c in cfgs])(n)
  for (r, k), o in zip(settings, out):
    m_np = np.round(np.float32(n.astype(np.float32) * np.float32(r)) / np.float32(k))
    k_np = np.round(n.astype(np.float32) * np.float32(r))
    np.testing.assert_array_equal(np.asarray(o["m"]), m_np.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(o["k1"]), np.minimum(k_np, np.maximum(n - 1, 0)))
    np.testing.assert_array_equal(np.asarray(o["k2"]), 0)
    assert o["m_max"] == int(m_np[-1]) and o["k_max"] == int(k_np[-1])


COUNT_LENGTHS = np.array([1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 30, 7, 11, 13, 29, 17])


@pytest.mark.parametrize("ratio,k", [(0.15, 4), (0.5, 2)])
def test_exact_count_transformer(ratio, k):
  n_max, lengths = 30, COUNT_LENGTHS
  valid = make_valid(lengths, n_max)
  logits = make_logits(0, len(lengths), 4, n_max, n_max, valid)
  for seed in range(2):
    out = details(jax.random.PRNGKey(seed), logits, valid, ratio=ratio, num_per_query=k,
                  both_paths=True)
    np.testing.assert_array_equal(out["mask"].sum(-1), [expected_k(ratio, n) for n in lengths])
    np.testing.assert_array_equal(out["sel"].sum(-1), [expected_m(ratio, k, n) for n in lengths])
    assert not (out["mask"] & ~valid).any(), "padding masked"
    assert not (out["sel"] & ~valid).any(), "pad query selected"
    assert out["keep"].any(-1).all(), "row without a surviving key"
    np.testing.assert_array_equal(out["keep"], valid & ~out["mask"])
    np.testing.assert_array_equal(out["k2"], 0)
  if ratio == 0.15:  # the documented rounding cases
    assert out["mask"][list(lengths).index(30)].sum() == 4
    assert out["mask"][list(lengths).index(10)].sum() == 2


@pytest.mark.parametrize("agg", ["random_mix"])  # "mean": parity case c18
def test_exact_count_perceiver(agg):
  """Perceiver mode: m = round(N r / k) from the PADDED N for every example."""
  n_max, lq = 40, 16
  lengths = np.array([1, 2, 3, 9, 13, 20, 31, 40])
  valid = make_valid(lengths, n_max)
  logits = make_logits(1, len(lengths), 8, lq, n_max, valid)
  out = details(jax.random.PRNGKey(3), logits, valid, ratio=0.15, num_per_query=4,
                head_aggregation=agg, mask_self=False, mode="perceiver", both_paths=True)
  np.testing.assert_array_equal(out["sel"].sum(-1), round(40 * 0.15 / 4))  # = 2
  np.testing.assert_array_equal(out["mask"].sum(-1), [expected_k(0.15, n) for n in lengths])
  assert not (out["mask"] & ~valid).any()
  assert out["keep"].any(-1).all()


def test_degenerate_guard_and_m0_rows():
  """ratio 0.9: at least one key survives; m = 0 rows are not position-biased."""
  valid = make_valid([1, 2, 3, 4], 4)
  logits = make_logits(2, 4, 2, 4, 4, valid)
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.9, num_per_query=1)
  np.testing.assert_array_equal(out["mask"].sum(-1), [0, 1, 2, 3])  # n - 1
  assert out["keep"].any(-1).all()
  assert not (out["mask"] & ~valid).any()
  # m = round(0.3 n / 3) = 0 for n <= 5: K = round(0.3 n) tokens drawn at random
  valid = make_valid([5, 4, 5, 4, 5, 4, 5, 4], 8)
  logits = make_logits(3, 8, 2, 8, 8, valid)
  counts = np.zeros(8)
  for seed in range(8):
    out = details(jax.random.PRNGKey(seed), logits, valid, ratio=0.3, num_per_query=3)
    np.testing.assert_array_equal(out["m"], 0)
    np.testing.assert_array_equal(out["mask"].sum(-1), [2, 1] * 4)
    assert not (out["mask"] & ~valid).any()
    counts += out["mask"].sum(0)
  assert (counts[:4] > 0).all()  # not always the first tokens


# --------------------------------------------------------------------------- semantics
STD_LENGTHS = np.array([28, 28, 20, 15, 9, 28, 24, 12, 3, 2, 1, 28, 27, 26, 25, 5])


def _std_inputs(seed, scale=3.0):
  valid = make_valid(STD_LENGTHS, 28)
  return valid, make_logits(seed, len(STD_LENGTHS), 8, 28, 28, valid, scale=scale)


def test_mask_self_masks_every_selected_query():
  valid, logits = _std_inputs(3)  # HIGGS config: m <= 2 < Nh = 8
  for seed in range(3):
    out = details(jax.random.PRNGKey(seed), logits, valid)
    assert out["sel"].sum() > 0
    assert not (out["sel"] & ~out["mask"]).any()
    np.testing.assert_array_equal(out["mask"].sum(-1), [expected_k(0.2, n) for n in STD_LENGTHS])


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
  """Keys with a large additive bias get all the attention: they are masked.

  (Single head so that random_mix == mean can share these programs; multi-head
  random_mix is covered by the parity cases.)"""
  b, h, n = 6, 1, 20
  lengths = np.array([20, 20, 15, 18, 10, 20])
  valid = make_valid(lengths, n)
  rs = np.random.RandomState(5)
  logits = 0.1 * rs.randn(b, h, n, n).astype(np.float32)
  want = np.zeros((b, n), bool)
  for i, nb in enumerate(lengths):
    want[i, rs.choice(nb, expected_k(0.2, nb), replace=False)] = True
  logits = logits + 6.0 * want[:, None, None, :]
  logits = np.where(valid[:, None, None, :], logits, F32_MIN).astype(np.float32)
  for seed in range(3):
    out = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation=agg,
                  mask_self=False)
    np.testing.assert_array_equal(out["mask"], want)
    for i in range(b):  # strictly above every other valid token
      assert out["m"][i] > 0
      assert out["score"][i][want[i]].min() > out["score"][i][valid[i] & ~want[i]].max()


def test_score_is_summed_softmax_rows():
  """Score equals the hand-computed sum of softmax rows of the selected queries."""
  valid = make_valid([12, 9], 12)
  logits = make_logits(6, 2, 3, 12, 12, valid)
  logits[1, :, :, 9:] = 5.0  # pads hold garbage: they must still get probability 0
  qkey = np.random.RandomState(0).rand(2, 12).astype(np.float32)
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.5, num_per_query=2,
                head_aggregation="mean", mask_self=False, draws={"query_key": qkey})
  for b, nb in enumerate([12, 9]):
    m = expected_m(0.5, 2, nb)
    chosen = np.argsort(np.where(valid[b], qkey[b], np.inf), kind="stable")[:m]
    x = np.where(valid[b], logits[b], -np.inf).astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = p.mean(0)[chosen].sum(0)
    np.testing.assert_allclose(out["score"][b], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.where(out["sel"][b])[0], np.sort(chosen))


def test_random_mix_single_head_equals_mean():
  lengths = np.array([20, 17, 14, 7, 20, 3])  # shapes/configs shared with the test above
  valid = make_valid(lengths, 20)
  logits = make_logits(7, 6, 4, 20, 20, valid, scale=2.0)[:, :1]
  for seed in range(3):
    a = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation="random_mix",
                mask_self=False)
    b = details(jax.random.PRNGKey(seed), logits, valid, head_aggregation="mean",
                mask_self=False)
    np.testing.assert_array_equal(a["mask"], b["mask"])
    np.testing.assert_array_equal(a["score"], b["score"])


def test_bf16_logits_zero_probability_and_no_gradient():
  """bf16 logits work; S + NEG * mask gives masked and pad keys probability 0
  exactly; no gradient flows through the selection."""
  valid, logits = _std_inputs(8, scale=5.0)
  cfg = sma.mask_config()

  def loss(lg, fixed_mask):
    mask = sma.sma_mask(jax.random.PRNGKey(1), lg, valid, cfg)[0]
    use = mask if fixed_mask is None else fixed_mask
    p = jax.nn.softmax(lg + NEG * use[:, None, None, :], axis=-1)
    return jnp.sum(p * jnp.arange(28.0)), (mask, p)

  def fn(lg):
    (_, (mask, p)), g = jax.value_and_grad(loss, has_aux=True)(lg, None)
    g_const = jax.grad(lambda x: loss(x, mask)[0])(lg)
    m16, k16 = sma.sma_mask(jax.random.PRNGKey(1), lg.astype(jnp.bfloat16), valid, cfg)
    return mask, p, g, g_const, m16, k16

  mask, p, g, g_const, m16, k16 = map(np.asarray, _run("grad", fn, jnp.asarray(logits)))
  keep = valid & ~mask
  assert mask.sum() > 0
  assert (p[np.broadcast_to(~keep[:, None, None, :], p.shape)] == 0.0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(g, g_const, rtol=1e-6, atol=1e-7)
  assert np.abs(g).max() > 0
  assert m16.dtype == np.bool_ and k16.dtype == np.bool_
  np.testing.assert_array_equal(m16.sum(-1), mask.sum(-1))
  assert not (m16 & ~valid).any()


# --------------------------------------------------------------------------- curriculum
def test_curriculum_s1_rho1_is_independent_of_logits():
  valid, a = _std_inputs(10, scale=1.0)
  _, b = _std_inputs(11, scale=5.0)
  for traced in (False, True):
    oa = details(jax.random.PRNGKey(0), a, valid, s=1.0, rho=1.0, traced_s=traced, both_paths=traced)
    ob = details(jax.random.PRNGKey(0), b, valid, s=1.0, rho=1.0, traced_s=traced, both_paths=traced)
    np.testing.assert_array_equal(oa["mask"], ob["mask"])
    np.testing.assert_array_equal(oa["k1"], 0)
    np.testing.assert_array_equal(oa["mask"].sum(-1), [expected_k(0.2, n) for n in STD_LENGTHS])
    assert not (oa["mask"] & ~valid).any()


def test_curriculum_s0_and_partial():
  valid, logits = _std_inputs(12, scale=1.0)
  base = details(jax.random.PRNGKey(2), logits, valid)
  o0 = details(jax.random.PRNGKey(2), logits, valid, s=0.0, rho=1.0, traced_s=True,
               both_paths=True)
  np.testing.assert_array_equal(o0["k2"], 0)
  np.testing.assert_array_equal(o0["mask"], base["mask"])  # deterministic, = no curriculum
  want = np.array([expected_k(0.2, n) for n in STD_LENGTHS])
  for s in (0.1, 0.25, 0.5, 0.75, 0.9):
    o = details(jax.random.PRNGKey(3), logits, valid, s=s, rho=1.0, traced_s=True,
                both_paths=True)
    assert np.abs(o["mask"].sum(-1) - want).max() <= 1
    np.testing.assert_array_equal(o["mask"].sum(-1), o["k1"] + o["k2"])
    assert not (o["top"] & o["fill"]).any()
    assert not (o["mask"] & ~valid).any()
    assert o["keep"].any(-1).all()
    assert o["k2"].sum() > 0 and o["k1"].sum() > 0
  # Python-float s: the ratios are computed in double (reference); same counts here
  o = details(jax.random.PRNGKey(3), logits, valid, s=0.5, rho=1.0)
  np.testing.assert_array_equal(o["k1"] + o["k2"], details(
      jax.random.PRNGKey(3), logits, valid, s=0.5, rho=1.0, traced_s=True,
      both_paths=True)["mask"].sum(-1))


def test_curriculum_scale_values():
  # T_s = round(0.25 * 1000) = 250
  f = jax.jit(lambda t: sma.curriculum_scale(t, 1000, 0.25))
  for t, want in [(0, 1.0), (125, 0.5), (250, 0.0), (900, 0.0),
                  (50, 0.5 * (1 + np.cos(np.pi * 50 / 250))),
                  (200, 0.5 * (1 + np.cos(np.pi * 200 / 250)))]:
    np.testing.assert_allclose(float(f(jnp.int32(t))), want, atol=1e-6)
  assert float(sma.curriculum_scale(0, 1000, 0.0)) == 0.0
  assert float(sma.curriculum_scale(7, 10, 0.25)) == 0.0  # T_s = round(2.5) = 2
  assert float(sma.curriculum_scale(1, 10, 0.25)) == pytest.approx(0.5, abs=1e-6)


# --------------------------------------------------------------------------- static shapes, paths
def test_jit_compiles_once_for_different_lengths():
  """Ordinary jax.jit (default XLA options): one trace for batches with different
  valid lengths and curriculum scales; also replays parity case c05 (64 x 28,
  padded, s = 0) bit-exactly through this production-compiled program."""
  cfg = sma.mask_config(rho=1.0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(rng, logits, valid, s, draws):
    return sma.sma_mask(rng, logits, valid, cfg, s=s, draws=draws)

  rs = np.random.RandomState(0)
  b = 64
  batches = [(np.full(b, 28), 0.0), (rs.randint(1, 29, b), 0.3), (np.arange(b) % 3 + 1, 0.6)]
  for i, (lengths, s) in enumerate(batches):
    valid = make_valid(lengths, 28)
    draws = {"head_idx": rs.randint(0, 8, (b, 28)),
             "query_perm": np.argsort(rs.rand(b, 28), axis=1)}
    mask, keep = f(jax.random.PRNGKey(i), make_logits(i, b, 8, 28, 28, valid), valid,
                   jnp.float32(s), draws)
    mask, keep = np.asarray(mask), np.asarray(keep)
    assert not (mask & ~valid).any()
    want = np.array([expected_k(0.2, n) for n in lengths])
    assert np.abs(mask.sum(-1) - want).max() <= (1 if s else 0)  # curriculum: +-1
    assert keep.any(-1).all()
  ref = _open_reference()
  if ref is not None:
    z = ref.z
    draws = {"head_idx": z["c05_head_idx"], "query_perm": z["c05_query_perm"]}
    mask, keep = f(jax.random.PRNGKey(0), z["c05_logits"], z["c05_valid"], jnp.float32(0.0),
                   draws)
    np.testing.assert_array_equal(np.asarray(mask), z["c05_mask"])
    np.testing.assert_array_equal(np.asarray(keep).astype(np.int8), z["c05_attn_mask_out"])


def test_top_k_path_with_ties():
  """Exactly tied scores: both paths break ties towards the lower index."""
  valid = make_valid(COUNT_LENGTHS, 30)
  logits = make_logits(13, len(COUNT_LENGTHS), 4, 30, 30, valid, scale=2.0)
  logits[:, :, :, 10:20] = logits[:, :, :, :10]  # keys j and j+10 tie exactly
  out = details(jax.random.PRNGKey(0), logits, valid, ratio=0.5, num_per_query=2,
                both_paths=True)
  np.testing.assert_array_equal(out["mask"].sum(-1), [expected_k(0.5, n) for n in COUNT_LENGTHS])
  score = np.where(valid, out["score"], -np.inf)
  assert (score[:, 10:20] == score[:, :10]).sum() > 0  # ties really present
  for i in range(len(COUNT_LENGTHS)):  # lower index wins every exact tie at the boundary
    kth = np.sort(score[i])[::-1][out["k1"][i] - 1] if out["k1"][i] else np.inf
    tied = np.where(score[i] == kth)[0]
    chosen = tied[out["top"][i][tied]]
    assert (chosen == tied[:len(chosen)]).all()


def test_auto_path_large_n():
  """path="auto" uses lax.top_k (large N here); same result as the ranks path."""
  n = 1100
  valid = make_valid(np.array([1100, 700]), n)
  logits = make_logits(14, 2, 1, 8, n, valid)
  cfg = dict(ratio=0.5, num_per_query=64, head_aggregation="mean", mask_self=False,
             mode="perceiver")
  assert sma._use_topk(sma.mask_config(**cfg), 8, n)
  assert sma._use_topk(sma.mask_config(**cfg), 8, 28)  # faster on CPU at every size
  assert not sma._use_topk(sma.mask_config(path="ranks"), 28, 28)
  out = details(jax.random.PRNGKey(0), logits, valid, both_paths=True, **cfg)
  np.testing.assert_array_equal(out["mask"].sum(-1), [550, 350])
  np.testing.assert_array_equal(out["sel"].sum(-1), [8, 8])  # round(8.6) = 9 > Lq = 8
  assert not (out["mask"] & ~valid).any()


# --------------------------------------------------------------------------- random baseline
def test_random_mask_exact_counts_and_no_pads():
  lengths = np.array([1, 2, 3, 10, 30, 25, 15, 5])
  valid = make_valid(lengths, 30)
  big = make_valid(np.array([1500, 999]), 1500)

  def fn(rngs):
    small = jax.vmap(lambda r: sma.random_mask(r, valid, 0.15))(rngs)
    return small, sma.random_mask(rngs[0], big, 0.3)

  (mask, keep), (mbig, _) = _run("random", fn, jax.random.split(jax.random.PRNGKey(0), 20))
  mask, keep, mbig = np.asarray(mask), np.asarray(keep), np.asarray(mbig)
  np.testing.assert_array_equal(mask.sum(-1), np.broadcast_to(
      [expected_k(0.15, n) for n in lengths], (20, len(lengths))))
  assert not (mask & ~valid).any()
  assert keep.any(-1).all()
  np.testing.assert_array_equal(keep, valid & ~mask)
  assert (mask[:, 4].sum(0) > 0).sum() >= 20  # n=30, 4 per draw: spread over positions
  np.testing.assert_array_equal(mbig.sum(-1), [450, 300])
  assert not (mbig & ~big).any()


def test_mask_config_defaults_and_overrides():
  cfg = sma.mask_config()
  assert (cfg.ratio, cfg.num_per_query, cfg.head_aggregation, cfg.mask_self,
          cfg.mask_self_value, cfg.mode, cfg.rho) == (0.2, 3, "random_mix", True,
                                                      "num_heads", "transformer", None)
  assert sma.mask_config(rho=1.0).rho == 1.0
  with pytest.raises(KeyError):
    sma.mask_config(ratoi=0.3)
