"""The MAE / SD-MAE fine-tune recipe (MAE main_finetune.py -> timm): each
RandAugment op against PIL (the library timm's auto_augment.py calls), the
magnitude mapping, the crops against PIL resizing, random erasing, Mixup /
CutMix soft targets, soft-target CE, and a tiny PCam fine-tune with it."""
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data import augment as A
from maskssl.evaluators import make_evaluator, scores
from maskssl.methods.supervised import (soft_target_cross_entropy,
                                        supervised_loss)

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")


def _image(constant_channel=False):
  rs = np.random.RandomState(0)
  yy, xx = np.mgrid[0:20, 0:24]
  a = np.stack([128 + 90 * np.sin(xx / 3.0), 128 + 90 * np.cos(yy / 4.0),
                rs.randint(0, 256, (20, 24))], -1)
  if constant_channel:
    a[..., 2] = 77
    a[..., 0] = np.clip(a[..., 0], 40, 180)
  return np.clip(a, 0, 255).astype(np.uint8)


def _timm_op(name, im, level):
  """timm auto_augment.py's op ``name`` with its level argument, through
  PIL, with MAE's hparams (bicubic, fill = round(255 * ImageNet mean))."""
  kw = dict(resample=Image.BICUBIC, fillcolor=A.RA_FILL)
  w, h = im.size
  if name == "AutoContrast":
    return ImageOps.autocontrast(im)
  if name == "Equalize":
    return ImageOps.equalize(im)
  if name == "Invert":
    return ImageOps.invert(im)
  if name == "Rotate":
    return im.rotate(level, **kw)
  if name.startswith("Posterize"):
    return ImageOps.posterize(im, int(level))
  if name == "SolarizeAdd":
    lut = [min(255, i + int(level)) if i < 128 else i for i in range(256)]
    return im.point(lut * 3)
  if name.startswith("Solarize"):
    return ImageOps.solarize(im, int(level))
  for enh in ("Color", "Contrast", "Brightness", "Sharpness"):
    if name.startswith(enh):
      return getattr(ImageEnhance, enh)(im).enhance(level)
  data = {"ShearX": (1, level, 0, 0, 1, 0), "ShearY": (1, 0, 0, level, 1, 0),
          "TranslateXRel": (1, 0, level * w, 0, 1, 0),
          "TranslateYRel": (1, 0, 0, 0, 1, level * h)}[name]
  return im.transform(im.size, Image.AFFINE, data, **kw)


# one compiled op for every test (20 x 24 images; op / magnitude / sign are
# traced, so each op is the same executable)
_OP = jax.jit(A.rand_augment_op, static_argnames=("increasing",))


def _op(img, op, m, neg=False, increasing=True):
  return np.asarray(_OP(jnp.asarray(img, jnp.float32), jnp.int32(op),
                        jnp.float32(m), jnp.bool_(neg),
                        increasing=increasing))


_EXACT = ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing", "SolarizeIncreasing",
          "SolarizeAdd", "Posterize", "Solarize")


def test_every_rand_augment_op_matches_pil():
  checked = set()
  for inc, names in ((True, A.RAND_INCREASING_OPS), (False, A.RAND_OPS)):
    for const in (False, True):
      a = _image(const)
      im = Image.fromarray(a)
      for i, name in enumerate(names):
        for m, neg in ((9.0, False), (9.0, True), (4.3, False)):
          if not inc and name in A.RAND_INCREASING_OPS and (neg or const):
            continue    # shared ops: covered by the first pass
          level = float(A.rand_augment_level(name, m, neg))
          ref = np.asarray(_timm_op(name, im, level)).astype(np.float32)
          out = _op(a, i, m, neg, inc)
          assert out.shape == ref.shape
          d = np.abs(out - ref)
          if name in _EXACT:
            assert d.max() == 0, (name, m, neg)
          else:
            # float32 vs PIL's double / float rounding: at most one level,
            # on a handful of pixels
            assert d.max() <= 1 and (d > 0).mean() < 0.01, (name, m, neg)
          checked.add(name)
  assert checked == set(A.RAND_OPS) | set(A.RAND_INCREASING_OPS)


def test_posterize_keeps_bits_and_zero_bits_is_black():
  img = (np.arange(480) % 256).reshape(20, 24, 1) * np.ones(3)
  k = A.RAND_INCREASING_OPS.index("PosterizeIncreasing")
  # m = 10 -> keep 4 - int(4) = 0 bits: black (Pillow < 10; Pillow 10+
  # refuses bits=0)
  np.testing.assert_array_equal(_op(img, k, 10.0), 0.0)
  out = _op(img, k, 9.0)                      # 1 bit: 0 or 128
  np.testing.assert_array_equal(out, np.where(img >= 128, 128.0, 0.0))


def test_magnitude_mapping_m9_inc1():
  assert A.parse_rand_augment("rand-m9-mstd0.5-inc1") == dict(
      num_ops=2, magnitude=9.0, magnitude_std=0.5, increasing=True,
      magnitude_max=10.0)
  assert A.parse_rand_augment("rand-n3-m7-mstd101")["magnitude_std"] == \
      math.inf
  for bad in ("augmix-m9", "rand-m9-w0", "rand-q3"):
    with pytest.raises(ValueError):
      A.parse_rand_augment(bad)
  lv = lambda n, neg=False: float(A.rand_augment_level(n, 9.0, neg))  # noqa
  # timm auto_augment.py LEVEL_TO_ARG at magnitude 9 (of 10)
  assert lv("Rotate") == pytest.approx(27.0)
  assert lv("Rotate", True) == pytest.approx(-27.0)
  assert lv("PosterizeIncreasing") == 1.0            # 4 - int(3.6)
  assert lv("Posterize") == 3.0
  assert lv("SolarizeIncreasing") == 26.0            # 256 - int(230.4)
  assert lv("Solarize") == 230.0
  assert lv("SolarizeAdd") == 99.0                   # int(0.9 * 110)
  for n in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
            "SharpnessIncreasing"):
    assert lv(n) == pytest.approx(1.81) and lv(n, True) == pytest.approx(0.19)
  assert lv("Color") == pytest.approx(1.72)          # 0.9 * 1.8 + 0.1
  assert lv("ShearX", True) == pytest.approx(-0.27)
  assert lv("TranslateYRel") == pytest.approx(0.405)
  assert lv("Equalize") == 0.0


def test_batched_rand_augment_is_the_per_image_op_chain():
  """Under vmap every switch branch runs; the result must still be the
  drawn op chain (ops / apply / sign / magnitude drawn as rand_augment
  draws them)."""
  rs = np.random.RandomState(1)
  imgs = rs.randint(0, 256, (6, 20, 24, 3)).astype(np.uint8)
  key = jax.random.PRNGKey(3)

  def both(k, x):
    out = A.rand_augment(k, x, 2, 9, 0.5)
    same = A.rand_augment(k, x, prob=0.0)
    k_u, k_m = jax.random.split(k)
    u = jax.random.uniform(k_u, (6, 2, 3))
    mag = jnp.clip(9 + 0.5 * jax.random.normal(k_m, (6, 2)), 0, 10)
    return out, same, u, mag
  out, same, u, mag = jax.jit(both)(key, A.to_float(imgs))
  lv = np.asarray(out) * 255
  np.testing.assert_allclose(lv, np.round(lv), atol=1e-3)   # 8-bit levels
  np.testing.assert_allclose(np.asarray(same) * 255, imgs, atol=1e-3)
  u, mag = np.asarray(u), np.asarray(mag)
  changed = 0
  for b in range(6):
    img = imgs[b].astype(np.float32)
    for j in range(2):
      if u[b, j, 1] < 0.5:
        img = _op(img, int(u[b, j, 0] * 15), mag[b, j], u[b, j, 2] > 0.5)
    np.testing.assert_allclose(lv[b], img, atol=1e-3)
    changed += int(np.any(img != imgs[b]))
  assert changed >= 2


def test_crops_match_pil_bicubic():
  rs = np.random.RandomState(3)
  a = rs.randint(0, 256, (2, 96, 96, 3)).astype(np.uint8)
  key = jax.random.PRNGKey(0)

  def crops(k, x):
    k_crop, k_flip = jax.random.split(k)
    box = jax.vmap(lambda kk: A.crop_params(kk, 96, 96))(
        jax.random.split(k_crop, 2))
    return (A.eval_resize_center_crop(x, 224), A.eval_resize_center_crop(
        x, 96), A.random_resized_crop_bicubic(k, x, 64), box,
            jax.random.uniform(k_flip, (2,)) < 0.5)
  e224, e96, out, box, flip = jax.jit(crops)(key, a)
  # eval: Resize(256) + CenterCrop(224) (crop_pct 224/256); 96 -> 109 -> 96
  for size, ev in ((224, e224), (96, e96)):
    r = int(size / (224 / 256))
    t = int(round((r - size) / 2.0))
    ref = np.stack([np.asarray(Image.fromarray(x).resize(
        (r, r), Image.BICUBIC).crop((t, t, t + size, t + size))) for x in a])
    d = np.abs(np.round(np.asarray(ev) * 255) - ref)
    assert ev.shape == (2, size, size, 3)
    assert d.max() <= 1 and (d > 0).mean() < 0.005
  out, flip = np.asarray(out) * 255, np.asarray(flip)
  for i in range(2):
    t, l, h, w = (int(p[i]) for p in box)
    ref = Image.fromarray(a[i]).crop((l, t, l + w, t + h)).resize(
        (64, 64), Image.BICUBIC)
    if flip[i]:
      ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
    d = np.abs(np.round(out[i]) - np.asarray(ref))
    assert d.max() <= 1 and (d > 0).mean() < 0.005


def _onehot(labels, c):
  return jax.nn.one_hot(jnp.asarray(labels), c)


def test_mixup_targets_are_the_lam_blend_with_smoothing():
  labels = np.array([0, 1, 1, 0, 1, 0])
  x = jnp.asarray(np.random.RandomState(0).rand(6, 8, 8, 3), jnp.float32)
  y = _onehot(labels, 2)

  def mix(k):
    ks = jax.random.split(k, 3)
    mixed = jax.vmap(lambda kk: A.mixup_cutmix(kk, x, y, mixup_alpha=0.8,
                                               cutmix_alpha=0.0))(ks)
    return mixed, A.mixup_cutmix(k, x, y, prob=0.0)
  (outs, ts, lams), (out0, t0, lam0) = jax.jit(mix)(jax.random.PRNGKey(0))
  on, off = 1 - 0.1 + 0.05, 0.05
  ys = np.where(np.asarray(y) == 1, on, off)
  for out, t, lam in zip(outs, ts, np.asarray(lams)):
    assert 0.0 < lam < 1.0
    np.testing.assert_allclose(t, lam * ys + (1 - lam) * ys[::-1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(t).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, lam * x + (1 - lam) * x[::-1], atol=1e-6)
  # prob 0: nothing mixed, targets are the smoothed labels
  assert float(lam0) == 1.0
  np.testing.assert_array_equal(out0, x)
  np.testing.assert_allclose(t0, ys, atol=1e-7)


def test_cutmix_box_area_is_the_corrected_lam():
  b, hw = 4, 16
  x = jnp.broadcast_to(jnp.arange(1.0, b + 1)[:, None, None, None],
                       (b, hw, hw, 3))                  # image i == i + 1
  y = _onehot([0, 1, 2, 0], 3)
  seen_cut = 0
  outs, ts, lams = jax.jit(jax.vmap(lambda k: A.mixup_cutmix(
      k, x, y, mixup_alpha=0.8, cutmix_alpha=1.0, smoothing=0.0)))(
          jax.random.split(jax.random.PRNGKey(0), 12))
  for out, t, lam in zip(np.asarray(outs), np.asarray(ts), np.asarray(lams)):
    lam = float(lam)
    pasted = out[0, :, :, 0] == b                       # from image b - 1
    pure = np.isin(out[0, :, :, 0], [1.0, float(b)]).all()
    if not pure:                                        # a Mixup batch
      np.testing.assert_allclose(out[0], lam * 1 + (1 - lam) * b, atol=1e-5)
      continue
    seen_cut += 1
    rows, cols = np.nonzero(pasted)
    if rows.size:                                       # one rectangle
      assert pasted.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert lam == pytest.approx(1 - pasted.sum() / hw ** 2, abs=1e-6)
    np.testing.assert_allclose(
        t, lam * np.asarray(y) + (1 - lam) * np.asarray(y)[::-1], atol=1e-6)
  assert 2 <= seen_cut <= 10                            # switch prob 0.5


def test_random_erasing_rate_box_and_noise():
  n, hw = 2000, 16
  x = jnp.full((n, hw, hw, 3), 0.5, jnp.float32)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  out = np.asarray(jax.jit(lambda k, v: A.random_erasing(
      k, v, 0.25, mean=mean, std=std))(jax.random.PRNGKey(0), x))
  erased = np.any(out != 0.5, axis=-1)
  rate = erased.any((1, 2)).mean()
  assert abs(rate - 0.25) < 0.03
  areas = erased.sum((1, 2))[erased.any((1, 2))] / hw ** 2
  assert areas.min() >= 0.01 and areas.max() <= 0.4
  i = int(np.argmax(erased.any((1, 2))))
  rows, cols = np.nonzero(erased[i])
  assert erased[i].sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
  z = ((out - np.asarray(mean)) / np.asarray(std))[erased]   # normalised
  assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def test_soft_target_cross_entropy_by_hand():
  logits = jnp.array([[2.0, 0.0], [0.5, 1.5]])
  t = jnp.array([[0.7, 0.3], [0.2, 0.8]])

  def ce(z, p):
    lse = math.log(sum(math.exp(v) for v in z))
    return -sum(pi * (zi - lse) for zi, pi in zip(z, p))
  hand = (ce([2.0, 0.0], [0.7, 0.3]) + ce([0.5, 1.5], [0.2, 0.8])) / 2
  assert float(soft_target_cross_entropy(logits, t)) == pytest.approx(
      hand, rel=1e-6)
  assert float(supervised_loss("binary_softmax", logits, None, t)) == \
      pytest.approx(hand, rel=1e-6)
  # hard labels: the 2-class softmax CE
  hard = (ce([2.0, 0.0], [1, 0]) + ce([0.5, 1.5], [0, 1])) / 2
  assert float(supervised_loss("binary_softmax", logits,
                               jnp.array([0, 1]))) == pytest.approx(hard,
                                                                    rel=1e-6)
  with pytest.raises(ValueError, match="soft targets"):
    supervised_loss("binary", logits[:, :1], None, t)
  # scored like a binary task from P(class 1)
  s = scores.task_scores("binary_softmax", [0, 1, 1], [0.2, 0.9, 0.6])
  assert s == {"accuracy": 1.0, "auc": 1.0}


def _pcam_quick():
  c = load_config_file(os.path.join(ROOT, "sdmae_pcam.py") + ":quick")
  return c


def test_finetune_config_fields_and_errors():
  c = _pcam_quick()
  ft = c.evals.finetune
  assert ft.augment == "reference" and ft.two_class
  assert ft.rand_augment == "rand-m9-mstd0.5-inc1" and ft.reprob == 0.25
  assert (ft.mixup, ft.cutmix, ft.smoothing) == (0.8, 1.0, 0.1)
  fns = {"classifier": lambda n: None}
  for key, val, msg in (("reprobb", 0.3, "reprobb"),
                        ("augment", "timm", "augment"),
                        ("rand_augment", "rand-m9-x1", "rand_augment"),
                        ("mixup_prob", 1.5, "mixup_prob")):
    e = ml_collections.ConfigDict(ft.to_dict())
    e[key] = val
    with pytest.raises(ConfigError, match=msg):
      make_evaluator("finetune", e, c, fns)
  # the constructor's defaults keep plain fine-tuning
  plain = make_evaluator("finetune", ml_collections.ConfigDict(dict(
      type="finetune", num_labels=(0,), batch_size=8,
      optim=dict(name="adamw", lr=1e-3))), c, fns)
  assert plain.ecfg.augment == "none" and not plain.ecfg.two_class


def test_pcam_quick_finetune_with_the_recipe(tmp_path):
  c = _pcam_quick()
  with c.unlocked():
    c.evals.finetune.update(
        enabled=True, inits=("scratch",), num_labels=(64,), batch_size=16,
        total_steps=3, num_epochs=0.0, eval_every=3, log_every=1,
        eval_batch_size=64, verbose=False, layer_decay=0.0)
    c.evals.finetune.optim.warmup_steps = 1
  from maskssl.methods import get_method
  fns = get_method(c).predict_fns()
  ev = make_evaluator("finetune", c.evals.finetune, c, fns)
  res = ev.run(None, str(tmp_path))
  auc = res["n64/scratch/last_auc"]
  assert np.isfinite(auc) and 0.0 <= auc <= 1.0
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["task"] == "binary_softmax"
  lines = [json.loads(s) for s in open(
      tmp_path / "n64_scratch_seed0" / "metrics.jsonl")]
  losses = [r["loss"] for r in lines if "loss" in r]
  # soft-target CE of 2 classes at a near-zero head (init_scale 0.001)
  assert losses and all(np.isfinite(losses))
  assert abs(losses[0] - math.log(2)) < 0.05
