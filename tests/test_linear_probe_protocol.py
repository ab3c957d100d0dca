"""Linear probe, reference protocol: BatchNorm without affine, train crops +
flip vs the deterministic test transform, MetaMask's mask reaching the probe,
an end-to-end probe on separable images, config errors."""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data import augment as aug_lib
from maskssl.data.base import ArrayDataset
from maskssl.evaluators import linear_probe as lp
from maskssl.evaluators import make_evaluator

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")
X = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0], [7.0, 6.0]], np.float32)


# ---- normalisation ---------------------------------------------------------

def test_batchnorm_without_affine_train_and_running_statistics():
  # columns: mean (4, 3), biased var (5, 3), unbiased var (20/3, 4)
  stats = lp.init_norm_stats(2, "batchnorm")
  y, new = lp.norm_apply(jnp.asarray(X), stats, "batchnorm", train=True,
                         eps=0.0, momentum=0.1)
  want = np.stack([np.array([-3, -1, 1, 3]) / np.sqrt(5.0),
                   np.array([-1, -1, -1, 3]) / np.sqrt(3.0)], 1)
  np.testing.assert_allclose(y, want, rtol=1e-6)
  np.testing.assert_allclose(new["mean"], [0.4, 0.3], rtol=1e-6)
  np.testing.assert_allclose(new["var"], [0.9 + 2 / 3, 0.9 + 0.4], rtol=1e-6)
  # test mode: the running statistics, not the batch's
  q = jnp.asarray([[0.4, 1.6]])
  yt, same = lp.norm_apply(q, new, "batchnorm", train=False, eps=1e-6)
  np.testing.assert_allclose(yt, [[0.0, 1.3 / np.sqrt(1.3 + 1e-6)]],
                             rtol=1e-5, atol=1e-7)
  assert same is new


def test_batchnorm_momentum_none_is_the_cumulative_average():
  st = lp.init_norm_stats(2, "batchnorm")
  a, b = jnp.asarray(X[:2]), jnp.asarray(X[2:])
  for x in (a, b):
    _, st = lp.norm_apply(x, st, "batchnorm", train=True, momentum=None)
  # batch means (2, 2), (6, 4); unbiased variances (2, 0), (2, 8)
  np.testing.assert_allclose(st["mean"], [4.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(st["var"], [2.0, 4.0], rtol=1e-6)
  assert int(st["count"]) == 2


def test_batchnorm_scalar_shares_one_variance():
  stats = lp.init_norm_stats(2, "batchnorm_scalar")
  y, new = lp.norm_apply(jnp.asarray(X), stats, "batchnorm_scalar",
                         train=True, eps=0.0, momentum=0.1)
  # per-dim centring, one variance = mean(5, 3) = 4 (unbiased 16/3)
  np.testing.assert_allclose(y, (X - X.mean(0)) / 2.0, rtol=1e-6)
  np.testing.assert_allclose(new["mean"], [0.4, 0.3], rtol=1e-6)
  np.testing.assert_allclose(new["var"], 0.9 + 0.1 * 16 / 3, rtol=1e-6)


def test_per_dimension_norms_cancel_a_feature_mask_and_the_others_keep_it():
  m = jnp.asarray([0.2, 0.9])
  for norm, cancels in [("batchnorm", True), ("batchnorm_scalar", False),
                        ("l2", False), ("none", False)]:
    st = lp.init_norm_stats(2, norm)
    a, _ = lp.norm_apply(jnp.asarray(X), st, norm, train=True, eps=0.0)
    b, _ = lp.norm_apply(jnp.asarray(X) * m, st, norm, train=True, eps=0.0)
    assert np.allclose(a, b, rtol=1e-5) == cancels, norm


# ---- transforms ------------------------------------------------------------

def _image(b=2, h=8, w=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3),
                                              dtype=np.uint8)


def test_center_crop_is_the_torchvision_resize_then_crop_box():
  assert lp.center_crop_box(96, 96, 224, 0.875) == ((256, 256), (16, 16))
  assert lp.center_crop_box(224, 224, 224, 0.875) == ((256, 256), (16, 16))
  # shorter side 32 -> int(32 / 0.875) = 36, longer int(36 * 48 / 32) = 54
  assert lp.center_crop_box(32, 48, 32, 0.875) == ((36, 54), (2, 11))


def test_test_view_is_a_centre_slice_when_no_resize_is_needed():
  img = _image()
  out = np.asarray(lp.test_view(jnp.asarray(img), 4, 0.5))   # resize to 8
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, img[:, 2:6, 2:6])
  # crop 1 at the image size: the image itself
  np.testing.assert_array_equal(lp.test_view(jnp.asarray(img), 8, 1.0), img)


def test_test_view_downsamples_with_the_antialiased_bilinear_filter():
  # 4 -> 2 px: PIL's triangle filter widened x2, centres at 1 and 3:
  # weights (3, 3, 1, 0) / 7 and (0, 1, 3, 3) / 7
  x = np.random.default_rng(1).random((1, 4, 4, 3)).astype(np.float32)
  wm = np.array([[3, 3, 1, 0], [0, 1, 3, 3]], np.float64) / 7
  want = np.einsum("sh,bhwc,tw->bstc", wm, x, wm)
  np.testing.assert_allclose(lp.test_view(jnp.asarray(x), 2, 1.0), want,
                             rtol=1e-5, atol=1e-6)


def test_train_view_flip_crop_and_randomness():
  img = jnp.asarray(_image(4))
  key = jax.random.PRNGKey(0)
  full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_array_equal(lp.train_view(key, img, 8, flip_p=1.0, **full),
                                np.asarray(img)[:, :, ::-1])
  np.testing.assert_array_equal(lp.train_view(key, img, 8, flip_p=0.0, **full),
                                img)
  a = np.asarray(lp.train_view(key, img, 6))
  b = np.asarray(lp.train_view(jax.random.PRNGKey(1), img, 6))
  assert a.shape == (4, 6, 6, 3) and a.dtype == np.uint8
  assert not np.array_equal(a, b)
  # the same crop boxes as augment.random_resized_crop (one implementation)
  ref = aug_lib.random_resized_crop(key, aug_lib.to_float(img), 6,
                                    (0.08, 1.0), (3 / 4, 4 / 3), 0.5)
  np.testing.assert_array_equal(
      a, np.clip(np.round(np.asarray(ref) * 255), 0, 255).astype(np.uint8))


# ---- the evaluator ---------------------------------------------------------

def _patch_splits(monkeypatch, train, test):
  import maskssl.data
  splits = {"train": train, "test": test}
  monkeypatch.setattr(maskssl.data, "load_split", lambda cfg, s: splits[s])


def _halves(n, seed):
  """Class 1: bright left half of channel 0; class 0: bright right half."""
  r = np.random.default_rng(seed)
  y = np.arange(n) % 2
  img = r.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
  img[y == 1, :, :4, 0] += 150
  img[y == 0, :, 4:, 0] += 150
  return ArrayDataset(dict(image=img, label=y))


def _left_minus_right(state, batch):
  x = aug_lib.to_float(batch["image"])[..., 0]
  f = jnp.mean(x[:, :, :4], (1, 2)) - jnp.mean(x[:, :, 4:], (1, 2))
  return f[:, None] * state["scale"]


def _probe(fns, **kw):
  cfg = dict(type="linear_probe", epochs=4, batch_size=32, warmup_epochs=0,
             optim=dict(lr=1.0), test_crop=1.0)
  cfg.update(kw)
  return make_evaluator("probe", ml_collections.ConfigDict(cfg),
                        ml_collections.ConfigDict(dict(data=dict(name="x"))),
                        fns)


def test_flip_reaches_the_training_inputs_and_not_the_test_inputs(
    monkeypatch, tmp_path):
  """A flip-sensitive feature: training on always-flipped crops learns the
  mirrored rule, so the un-flipped test images score 0; without flips 1."""
  _patch_splits(monkeypatch, _halves(64, 0), _halves(32, 1))
  fns = {"encode": _left_minus_right}
  st = {"scale": jnp.float32(1.0)}
  crop = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
  res = _probe(fns, flip_p=0.0, **crop).run(st, None)
  assert res["accuracy"] == 1.0 and res["train_accuracy"] == 1.0
  res = _probe(fns, flip_p=1.0, **crop).run(st, str(tmp_path))
  assert res["accuracy"] == 0.0 and res["train_accuracy"] == 1.0
  saved = json.load(open(tmp_path / "linear_probe.json"))
  assert saved["augment"] is True and saved["num_train"] == 64
  head = np.load(tmp_path / "linear_probe_head.npz")
  assert head["w"].shape == (1, 2) and head["var"].shape == (1,)


def _colours(n, seed, k=3):
  """Class c: channel c bright, at a random position, on noise."""
  r = np.random.default_rng(seed)
  y = np.arange(n) % k
  img = r.integers(0, 90, (n, 12, 12, 3)).astype(np.uint8)
  for i, c in enumerate(y):
    t, l = r.integers(0, 5, 2)
    img[i, t:t + 8, l:l + 8, c] += 150
  return ArrayDataset(dict(image=img, label=y), dict(num_classes=k))


def test_end_to_end_probe_on_separable_images(monkeypatch, tmp_path):
  _patch_splits(monkeypatch, _colours(120, 0), _colours(60, 1))
  fns = {"encode": lambda s, b: jnp.mean(aug_lib.to_float(b["image"]),
                                         (1, 2)) * s["scale"]}
  ev = _probe(fns, epochs=15, size=10, test_crop=0.875, train_subset=96,
              optim=dict(lr=0.5))
  res = ev.run({"scale": jnp.float32(1.0)}, str(tmp_path))
  assert set(res) == {"accuracy", "train_accuracy"}
  assert res["accuracy"] >= 0.95, res
  saved = json.load(open(tmp_path / "linear_probe.json"))
  assert (saved["num_train"], saved["num_test"], saved["size"],
          saved["norm"]) == (96, 60, 10, "batchnorm")
  assert ev.run({"scale": jnp.float32(1.0)}, None) == res   # deterministic


def test_fixed_features_with_batchnorm_keep_running_statistics():
  rs = np.random.RandomState(0)
  y = np.arange(256) % 2
  x = rs.randn(256, 4).astype(np.float32) + 5.0
  x[:, 1] += np.where(y == 1, 3.0, -3.0)
  res, head = lp.probe_scores(x[:128], y[:128], x[128:], y[128:],
                              norm="batchnorm", epochs=20, batch_size=32,
                              warmup_epochs=0, return_head=True)
  assert res["accuracy"] >= 0.97      # classes 6 noise-stds apart
  # 80 steps of momentum 0.1 from (0, 1): the running mean is the data's
  np.testing.assert_allclose(head["stats"]["mean"], x[:128].mean(0),
                             atol=0.3)
  np.testing.assert_allclose(head["stats"]["var"], x[:128].var(0), rtol=0.3)


def test_metamask_probe_input_depends_on_the_mask():
  """MetaMask's encode returns h * M; the configured probe norm keeps the
  mask (per-dimension BatchNorm would cancel it)."""
  from maskssl.methods.metamask import MetaMask
  norm = load_config_file(os.path.join(ROOT, "metamask_cifar10.py")
                          ).evals.linear_probe.norm
  mm = MetaMask(ml_collections.ConfigDict(dict(
      method="metamask", seed=0, batch_size=8, total_steps=10,
      model=dict(backbone="resnet_tiny", width=8, stage_sizes=(1,),
                 compute_dtype="float32", bt_features=(8, 8, 8),
                 cl_features=(8, 8)),
      metamask=dict(steps_per_epoch=5), optim=dict(lr=0.05),
      augment=dict(size=8))))
  batch = dict(image=_image(16, seed=3))
  st = mm.init_state(jax.random.PRNGKey(0), batch)
  enc = jax.jit(mm.encode)

  def probe_input(state, norm):
    f = enc(state, batch)
    return np.asarray(lp.norm_apply(f, lp.init_norm_stats(f.shape[1], norm),
                                    norm, train=True, eps=1e-12)[0])

  m = jax.random.normal(jax.random.PRNGKey(1), st["mask"].shape) * 2
  other = dict(st, mask=m)
  h = np.asarray(enc(dict(st, mask=jnp.full_like(m, 50.0)), batch))  # M = 1
  np.testing.assert_allclose(enc(other, batch),
                             h * np.asarray(jax.nn.sigmoid(m)), rtol=1e-5,
                             atol=1e-7)
  a, b = probe_input(st, norm), probe_input(other, norm)
  assert np.abs(a - b).max() > 0.1 * np.abs(a).max()
  # the per-dimension BatchNorm would hide the mask (up to eps)
  a, b = probe_input(st, "batchnorm"), probe_input(other, "batchnorm")
  np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(a).max())


@pytest.mark.parametrize("key,value,match", [
    ("test_crp", 0.875, r"'test_crp'.*Did you mean 'test_crop'"),
    ("norm", "layernorm", "unknown norm 'layernorm'"),
    ("test_crop", 1.2, "test_crop"),
    ("optim", dict(warmup_steps=3), "warmup_epochs"),
    ("optim", dict(lrr=0.1), "lrr"),
])
def test_config_errors(key, value, match):
  with pytest.raises(ConfigError, match=match):
    _probe({"encode": _left_minus_right}, **{key: value})


def test_standardize_needs_fixed_features():
  with pytest.raises(ConfigError, match="augment=False"):
    _probe({"encode": _left_minus_right}, augment=True, norm="standardize")
