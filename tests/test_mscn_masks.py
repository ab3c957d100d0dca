"""MSCN mask operations: HPF, grid/channel/focal masks, mixture, fill, views."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl.masks import mscn


def _cfg(**kw):
  c = mscn.default_config(32)
  c.update(kw)
  return c


def _np_blur_reference(x, k, sigma):
  """Hand-written separable Gaussian with reflect padding, float64 loops."""
  half = (k - 1) // 2
  w = np.array([np.exp(-0.5 * (i / sigma) ** 2) for i in range(-half, half + 1)])
  w /= w.sum()
  x = np.asarray(x, np.float64)
  b, h, wd, c = x.shape
  xp = np.pad(x, ((0, 0), (half, half), (0, 0), (0, 0)), mode="reflect")
  y = np.zeros_like(x)
  for i in range(h):
    for t in range(k):
      y[:, i] += w[t] * xp[:, i + t]
  yp = np.pad(y, ((0, 0), (0, 0), (half, half), (0, 0)), mode="reflect")
  z = np.zeros_like(x)
  for j in range(wd):
    for t in range(k):
      z[:, :, j] += w[t] * yp[:, :, j + t]
  return z


# ---------------------------------------------------------------- HPF ----
def test_kernel_sums_to_one_and_matches_hand_values():
  w = mscn.gaussian_kernel1d(5, 1.0)
  e = np.exp(-0.5 * np.array([4.0, 1.0, 0.0, 1.0, 4.0]))
  np.testing.assert_allclose(w, e / e.sum(), rtol=0, atol=1e-15)
  # Hand numbers: exp(-2)=0.135335, exp(-0.5)=0.606531 -> centre 1/2.483731.
  np.testing.assert_allclose(w[2], 1.0 / 2.4837326, rtol=1e-6)
  for k, s in [(3, 0.71), (13, 5.0), (11, 5.0)]:
    assert abs(mscn.gaussian_kernel1d(k, s).sum() - 1.0) < 1e-12
  with pytest.raises(ValueError):
    mscn.gaussian_kernel1d(4, 1.0)


def test_resolution_scaled_hpf_defaults():
  c = mscn.default_config()
  assert mscn.resolve_hpf(c, 224) == (13, 5.0)
  k, s = mscn.resolve_hpf(c, 32)
  assert k == 3 and abs(s - 5 * 32 / 224) < 1e-12
  c.hpf_kernel, c.hpf_sigma = 11, 5.0
  assert mscn.resolve_hpf(c, 32) == (11, 5.0)


@pytest.mark.parametrize("k,sigma", [(3, 0.71), (5, 1.3), (13, 5.0)])
def test_blur_matches_hand_computed_separable_gaussian(k, sigma):
  x = np.random.default_rng(0).uniform(size=(2, 16, 15, 3)).astype(np.float32)
  got = np.asarray(mscn.gaussian_blur(jnp.asarray(x), k, sigma))
  np.testing.assert_allclose(got, _np_blur_reference(x, k, sigma), atol=2e-6)
  hp = np.asarray(mscn.high_pass(jnp.asarray(x), k, sigma, 0.08))
  np.testing.assert_allclose(hp, (x - _np_blur_reference(x, k, sigma)) / 0.08,
                             atol=3e-5)


@pytest.mark.parametrize("value", [0.0, 0.3, 0.7071, 1.0, 0.123456])
def test_hpf_of_constant_image_is_zero_including_borders(value):
  x = jnp.full((2, 32, 32, 3), value, jnp.float32)
  for k, s in [(3, 0.71), (13, 5.0), (11, 5.0)]:
    hp = np.asarray(mscn.high_pass(x, k, s, 0.08))
    assert np.abs(hp).max() < 1e-6, (k, s, np.abs(hp).max())
  # Per-channel different constants, full preprocess incl. imagenet norm.
  x = jnp.broadcast_to(jnp.asarray([0.2, 0.5, 0.9]), (2, 32, 32, 3))
  for inp in ("unit", "imagenet_norm"):
    hp = np.asarray(mscn.preprocess(x, _cfg(hpf_input=inp)))
    assert np.abs(hp).max() < 1e-6


def test_zero_padding_would_fail_the_constant_test():
  """Sanity of the test above: a zero-padded blur leaves a dark border."""
  x = np.ones((1, 8, 8, 1))
  w = mscn.gaussian_kernel1d(3, 0.71)
  y = np.apply_along_axis(lambda r: np.convolve(r, w, mode="same"), 1, x)
  assert abs(1 - y[0, 0, 0, 0]) > 0.1


def test_hpf_is_linear_and_kills_ramps_away_from_border():
  r = np.random.default_rng(1)
  a = jnp.asarray(r.uniform(size=(2, 24, 24, 3)), jnp.float32)
  b = jnp.asarray(r.uniform(size=(2, 24, 24, 3)), jnp.float32)
  f = lambda x: mscn.high_pass(x, 5, 1.3, 0.08)
  np.testing.assert_allclose(f(0.7 * a - 1.9 * b), 0.7 * f(a) - 1.9 * f(b),
                             atol=2e-5)
  k = 7
  ramp = jnp.broadcast_to(jnp.linspace(0, 1, 24)[None, None, :, None],
                          (1, 24, 24, 3))
  hp = np.asarray(mscn.high_pass(ramp, k, 2.0, 1.0))
  p = (k - 1) // 2
  assert np.abs(hp[:, :, p:-p]).max() < 1e-6
  assert np.abs(hp).max() > 1e-3       # non-zero at the borders (reflect)


# -------------------------------------------------------- grid masks ----
def test_grid_mask_counts_equal_requested_counts():
  cfg = _cfg(grid=4, ratio_lo=0.05, ratio_hi=0.9)
  x = jnp.zeros((64, 32, 32, 3))
  rng = jax.random.PRNGKey(3)
  m = np.asarray(mscn.grid_mask(rng, x, cfg))
  cnt = np.asarray(mscn.mask_counts(jax.random.split(rng)[0], 64, cfg))
  assert m.dtype == bool and m.shape == x.shape
  assert len(set(cnt.tolist())) > 3          # ratios really vary per image
  np.testing.assert_array_equal(m.sum(axis=(1, 2, 3)), cnt * 8 * 8 * 3)
  # Same cells in every channel, and whole cells only.
  assert (m == m[..., :1]).all()
  cells = m[..., 0].reshape(64, 4, 8, 4, 8)
  assert ((cells.all(axis=(2, 4))) | (~cells.any(axis=(2, 4)))).all()
  np.testing.assert_array_equal(cells.all(axis=(2, 4)).sum((1, 2)), cnt)


def test_grid_mask_fixed_ratio_and_non_divisible_size():
  cfg = _cfg(grid=7, ratio_lo=0.3, ratio_hi=0.3)    # round(49 * .3) = 15
  x = jnp.zeros((8, 30, 31, 3))
  m = np.asarray(mscn.grid_mask(jax.random.PRNGKey(0), x, cfg))
  ids = mscn.cell_ids(30, 31, 7)
  for b in range(8):
    masked_cells = np.unique(ids[m[b, ..., 0]])
    assert len(masked_cells) == 15
    np.testing.assert_array_equal(m[b, ..., 0], np.isin(ids, masked_cells))


def test_channel_masks_differ_across_channels_with_equal_counts():
  cfg = _cfg(grid=4, ratio_lo=0.25, ratio_hi=0.5)
  x = jnp.zeros((32, 32, 32, 3))
  rng = jax.random.PRNGKey(5)
  m = np.asarray(mscn.channel_mask(rng, x, cfg))
  cnt = np.asarray(mscn.mask_counts(jax.random.split(rng)[0], 32, cfg))
  per_channel = m.sum(axis=(1, 2))                    # (B, C)
  np.testing.assert_array_equal(per_channel, np.repeat(cnt[:, None] * 64, 3, 1))
  differs = ~((m[..., 0] == m[..., 1]).all((1, 2)) &
              (m[..., 1] == m[..., 2]).all((1, 2)))
  assert differs.mean() > 0.8


def test_channel_mask_noise_is_independent_per_channel():
  cfg = _cfg(grid=4, ratio_lo=1.0, ratio_hi=1.0, noise_std=0.25)
  x = jnp.zeros((64, 32, 32, 3))
  m = mscn.channel_mask(jax.random.PRNGKey(0), x, cfg)
  assert bool(m.all())
  out = np.asarray(mscn.fill(jax.random.PRNGKey(1), x, m, cfg))
  c = np.corrcoef(out.reshape(-1, 3).T)
  assert np.abs(c[np.triu_indices(3, 1)]).max() < 0.02


# ------------------------------------------------------------ focal ----
@pytest.mark.parametrize("keep,size", [(200 / 224, 32), (0.43, 32), (0.5, 20)])
def test_focal_mask_keeps_exactly_one_block(keep, size):
  cfg = _cfg(focal_keep=keep)
  x = jnp.zeros((64, size, size, 3))
  m = np.asarray(mscn.focal_mask(jax.random.PRNGKey(2), x, cfg))
  s = int(round(keep * size))
  corners = set()
  for b in range(64):
    vis = ~m[b, ..., 0]
    ys, xs = np.nonzero(vis)
    y0, x0 = ys.min(), xs.min()
    expect = np.zeros_like(vis)
    expect[y0:y0 + s, x0:x0 + s] = True
    np.testing.assert_array_equal(vis, expect)
    assert (m[b] == m[b, ..., :1]).all()
    corners.add((y0, x0))
  assert len(corners) > 4                    # the corner is random
  np.testing.assert_allclose(m.mean(), 1 - s * s / size**2)


# ---------------------------------------------------------- mixture ----
def test_mixture_probabilities_within_binomial_bounds():
  cfg = _cfg(kind_probs=(0.2, 0.24, 0.56))
  n = 20000
  kinds = np.asarray(mscn.sample_kinds(jax.random.PRNGKey(7), n, cfg))
  for i, p in enumerate(cfg.kind_probs):
    freq = (kinds == i).mean()
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (i, freq, p)
  # Zero-probability kinds are never drawn; weights are normalised.
  cfg2 = _cfg(kind_probs=(0.0, 3.0, 1.0))
  k2 = np.asarray(mscn.sample_kinds(jax.random.PRNGKey(8), n, cfg2))
  assert (k2 != 0).all()
  assert abs((k2 == 1).mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / n)
  with pytest.raises(ValueError):
    mscn.sample_kinds(jax.random.PRNGKey(0), 4, _cfg(kind_probs=(1.0, 0.0)))


def test_mixture_mask_selects_the_sampled_kind_per_sample():
  cfg = _cfg(grid=4, ratio_lo=0.25, ratio_hi=0.5, focal_keep=0.5)
  x = jnp.zeros((200, 32, 32, 3))
  rng = jax.random.PRNGKey(11)
  m, kind = mscn.mixture_mask(rng, x, cfg)
  m, kind = np.asarray(m), np.asarray(kind)
  k_kind, k_f, k_s, k_c = jax.random.split(rng, 4)
  cands = [np.asarray(f(k, x, cfg)) for f, k in
           [(mscn.focal_mask, k_f), (mscn.grid_mask, k_s),
            (mscn.channel_mask, k_c)]]
  assert set(kind.tolist()) == {0, 1, 2}
  for i in range(3):
    np.testing.assert_array_equal(m[kind == i], cands[i][kind == i])


# ------------------------------------------------------------- fill ----
def test_noise_fill_statistics_and_exact_unmasked_values():
  cfg = _cfg(noise_std=0.25)
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 32, 32, 3))
  m = mscn.grid_mask(jax.random.PRNGKey(1), x, _cfg(ratio_lo=.5, ratio_hi=.5))
  out = np.asarray(mscn.fill(jax.random.PRNGKey(2), x, m, cfg))
  m, xn = np.asarray(m), np.asarray(x)
  np.testing.assert_array_equal(out[~m], xn[~m])          # bit for bit
  vals = out[m]
  assert abs(vals.mean()) < 0.01
  assert abs(vals.std() / 0.25 - 1) < 0.02
  # Fresh per step (different keys) and per sample.
  out2 = np.asarray(mscn.fill(jax.random.PRNGKey(3), x, m, cfg))
  assert abs(np.corrcoef(out[m], out2[m])[0, 1]) < 0.02
  full = np.asarray(mscn.fill(jax.random.PRNGKey(4), jnp.zeros((2, 64, 64, 3)),
                              jnp.ones((2, 64, 64, 3), bool), cfg))
  assert abs(np.corrcoef(full[0].ravel(), full[1].ravel())[0, 1]) < 0.03
  zero = np.asarray(mscn.fill(jax.random.PRNGKey(2), x, m, _cfg(fill="zero")))
  assert (zero[m] == 0).all() and (zero[~m] == xn[~m]).all()
  with pytest.raises(ValueError):
    mscn.fill(jax.random.PRNGKey(2), x, m, _cfg(fill="mean"))


# ------------------------------------------------------------ views ----
def test_asymmetric_mode_leaves_target_untouched_and_multi_mask():
  cfg = _cfg(n_masked_views=3, ratio_lo=0.25, ratio_hi=0.5)
  r = np.random.default_rng(0)
  xa = jnp.asarray(r.uniform(size=(8, 32, 32, 3)), jnp.float32)
  xb = jnp.asarray(r.uniform(size=(8, 32, 32, 3)), jnp.float32)
  v = mscn.mscn_views(jax.random.PRNGKey(0), xa, xb, cfg)
  hb = np.asarray(mscn.preprocess(xb, cfg))
  ha = np.asarray(mscn.preprocess(xa, cfg))
  np.testing.assert_array_equal(np.asarray(v["target"]), hb)
  assert not np.asarray(v["target_mask"]).any()
  anchors, masks = np.asarray(v["anchors"]), np.asarray(v["masks"])
  assert anchors.shape == (3, 8, 32, 32, 3) and masks.shape == anchors.shape
  for j in range(3):                        # copies share the crop
    np.testing.assert_array_equal(anchors[j][~masks[j]], ha[~masks[j]])
    assert masks[j].any(axis=(1, 2, 3)).all()
  assert not (masks[0] == masks[1]).all() and not (masks[1] == masks[2]).all()
  both = mscn.mscn_views(jax.random.PRNGKey(0), xa, xb,
                         _cfg(mask_both_views=True))
  assert np.asarray(both["target_mask"]).any(axis=(1, 2, 3)).all()
  # No HPF: preprocess is just the [0,1] conversion.
  nohpf = mscn.preprocess(xa, _cfg(hpf=False))
  np.testing.assert_array_equal(np.asarray(nohpf), np.asarray(xa))


def test_views_compile_once_with_static_shapes():
  cfg = _cfg()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(rng, xa, xb):
    return mscn.mscn_views(rng, xa, xb, cfg)

  xa = jnp.zeros((4, 32, 32, 3))
  shapes = set()
  for i in range(4):
    out = f(jax.random.PRNGKey(i), xa, xa + 0.5)
    shapes.add(tuple(out["anchors"].shape))
  assert shapes == {(2, 4, 32, 32, 3)}
  chex.clear_trace_counter()


# ---------------------------------------------------------- gallery ----
def test_gallery_columns_and_png(tmp_path):
  from maskssl.tools import show_masks
  imgs = (np.random.default_rng(0).uniform(size=(2, 32, 32, 3)) * 255
          ).astype(np.uint8)
  cols = show_masks.gallery_columns(jax.random.PRNGKey(0), imgs, _cfg())
  assert len(cols) == len(show_masks.COLUMNS)
  for c in cols:
    assert c.shape == (2, 32, 32, 3) and c.min() >= 0 and c.max() <= 1
  np.testing.assert_allclose(cols[0], imgs / 255.0, atol=1e-6)
  from PIL import Image
  path = show_masks.save_gallery(str(tmp_path / "g.png"), cols,
                                 show_masks.COLUMNS, scale=4)
  with Image.open(path) as im:   # 10 columns x 2 rows of 1.4-inch cells
    assert im.format == "PNG" and im.size[0] > 10 * 1.2 * 120 > im.size[1]


def test_gallery_reads_real_cifar_sample(shared_data):
  from maskssl.tools import show_masks
  path = shared_data / "cifar10_partial" / "cifar10_partial.npz"
  if not path.exists():
    pytest.skip(f"{path} absent")
  imgs = show_masks.load_npz_images(path, "test", 3)
  assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8
  assert imgs.std() > 10          # real pictures, not a constant
