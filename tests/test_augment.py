"""On-device SimCLR augmentations: shapes, identities, per-example keys."""
import jax
import jax.numpy as jnp
import numpy as np

from maskssl.data import augment as aug


def _images(b=6, h=12, w=12, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), np.uint8)


def test_crop_params_follow_torchvision_rule():
  keys = jax.random.split(jax.random.PRNGKey(0), 500)
  top, left, h, w = jax.vmap(lambda k: aug.crop_params(k, 32, 32))(keys)
  top, left, h, w = map(np.asarray, (top, left, h, w))
  assert np.all((h >= 1) & (h <= 32) & (w >= 1) & (w <= 32))
  assert np.all(top + h <= 32) and np.all(left + w <= 32)
  area = h * w / 1024
  assert area.min() > 0.05 and area.max() <= 1.0
  ratio = w / h
  assert ratio.min() > 0.6 and ratio.max() < 1.6
  # impossible scale -> centre-crop fallback (full square image)
  t, l, hh, ww = aug.crop_params(jax.random.PRNGKey(1), 20, 20, scale=(5.0, 6.0))
  assert (int(t), int(l), int(hh), int(ww)) == (0, 0, 20, 20)


def test_full_crop_is_identity_and_flip_mirrors():
  x = aug.to_float(_images())
  b = x.shape[0]
  zeros = jnp.zeros((b,), jnp.int32)
  full = jnp.full((b,), 12, jnp.int32)
  out = aug.crop_resize(x, zeros, zeros, full, full, 12)
  np.testing.assert_allclose(out, x, atol=1e-6)
  flip = jnp.array([True, False] * (b // 2))
  out = aug.crop_resize(x, zeros, zeros, full, full, 12, flip)
  np.testing.assert_allclose(out[0], x[0, :, ::-1], atol=1e-6)
  np.testing.assert_allclose(out[1], x[1], atol=1e-6)


def test_upsampling_matches_bilinear_half_pixel():
  # crop rows/cols [2, 6) of an 8x8 image to 8x8 == bilinear (align_corners
  # False, edge clamp) of the crop.
  x = aug.to_float(_images(1, 8, 8))
  crop = x[:, 2:6, 2:6]
  out = aug.crop_resize(x, jnp.array([2]), jnp.array([2]), jnp.array([4]),
                        jnp.array([4]), 8)
  src = (np.arange(8) + 0.5) * 0.5 - 0.5
  src = np.clip(src, 0, 3)
  i0 = np.floor(src).astype(int); i1 = np.minimum(i0 + 1, 3); f = src - i0
  c = np.asarray(crop[0])
  rows = c[i0] * (1 - f)[:, None, None] + c[i1] * f[:, None, None]
  ref = rows[:, i0] * (1 - f)[None, :, None] + rows[:, i1] * f[None, :, None]
  np.testing.assert_allclose(out[0], ref, atol=1e-5)


def test_hsv_roundtrip_and_jitter_identities():
  x = aug.to_float(_images())
  np.testing.assert_allclose(aug.hsv_to_rgb(aug.rgb_to_hsv(x)), x, atol=1e-5)
  np.testing.assert_allclose(aug.adjust_hue(x, 0.0), x, atol=1e-5)
  np.testing.assert_allclose(aug.adjust_hue(x, 1.0 / 3.0)[..., 1], x[..., 0],
                             atol=1e-4)  # a 120 degree shift rotates R->G
  np.testing.assert_allclose(aug.adjust_brightness(x, 0.5), x * 0.5, atol=1e-7)
  g = aug.grayscale(x)
  np.testing.assert_allclose(aug.adjust_saturation(x, 0.0),
                             jnp.broadcast_to(g, x.shape), atol=1e-6)
  c0 = aug.adjust_contrast(x[0], 0.0)
  np.testing.assert_allclose(c0, jnp.full_like(c0, jnp.mean(g[0])), atol=1e-6)
  # zero strengths: ColorJitter is the identity
  out = aug.color_jitter(jax.random.PRNGKey(0), x, 0.0, 0.0, 0.0, 0.0, p=1.0)
  np.testing.assert_allclose(out, x, atol=0)


def test_grayscale_probability_and_channels():
  x = aug.to_float(_images(64, 4, 4))
  out = aug.random_grayscale(jax.random.PRNGKey(3), x, p=0.5)
  is_gray = np.all(np.isclose(out[..., 0], out[..., 1]) &
                   np.isclose(out[..., 1], out[..., 2]), axis=(1, 2))
  assert 16 < is_gray.sum() < 48
  np.testing.assert_allclose(out[is_gray][..., 0],
                             aug.grayscale(x)[is_gray][..., 0], atol=1e-6)
  np.testing.assert_allclose(out[~is_gray], x[~is_gray])


def test_simclr_views_shapes_independence_and_determinism():
  imgs = _images(8, 32, 32)
  f = jax.jit(lambda k, im: aug.two_views(k, im, dict(size=24)))
  v0, v1 = f(jax.random.PRNGKey(0), imgs)
  assert v0.shape == (8, 24, 24, 3) and v0.dtype == jnp.float32
  assert not np.allclose(v0, v1)
  w0, _ = f(jax.random.PRNGKey(0), imgs)
  np.testing.assert_array_equal(v0, w0)
  # identical images still get different per-example views
  same = np.repeat(imgs[:1], 8, 0)
  s0, _ = f(jax.random.PRNGKey(1), same)
  assert not np.allclose(s0[0], s0[1])
  # normalised range: raw [0,1] mapped through ImageNet stats
  lo = (0 - np.array(aug.IMAGENET_MEAN)) / np.array(aug.IMAGENET_STD)
  hi = (1 - np.array(aug.IMAGENET_MEAN)) / np.array(aug.IMAGENET_STD)
  assert np.all(np.asarray(v0) >= lo - 1e-4) and np.all(np.asarray(v0) <= hi + 1e-4)


def test_eval_preprocess_and_config():
  imgs = _images(2, 32, 32)
  out = aug.eval_preprocess(imgs)
  np.testing.assert_allclose(out, aug.normalize(aug.to_float(imgs)), atol=1e-6)
  try:
    aug.augment_config(dict(sise=3))
    raise AssertionError("unknown key accepted")
  except ValueError:
    pass
