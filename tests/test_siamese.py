"""Siamese method (+ MSCN masking): losses by config, state, step, encode."""
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskssl import optim
from maskssl.masks import mscn
from maskssl.methods import get_method
from maskssl.methods import siamese


def tiny_config(loss="vicreg", masking=True, optim="adamw", **mscn_kw):
  c = ml_collections.ConfigDict()
  c.method = "siamese"
  c.seed = 0
  c.batch_size = 8
  c.total_steps = 10
  c.data = ml_collections.ConfigDict(dict(name="none", image_key="image"))
  c.model = ml_collections.ConfigDict(dict(
      backbone="resnet_tiny", stem="cifar", width=8, stage_sizes=(1, 1),
      init_scheme="kaiming_fan_out", zero_init_residual=True,
      compute_dtype="float32", projector_width=16, projector_dims=None))
  c.loss = siamese.default_loss_config(loss)
  c.augment = siamese.default_augment_config(16)
  c.mscn = mscn.default_config(16)
  c.mscn.enabled = masking
  c.mscn.update(mscn_kw)
  c.optim = ml_collections.ConfigDict(dict(
      name=optim, lr=1e-2, schedule="cosine", warmup_steps=0,
      weight_decay=1e-4, clip_norm=0.0, momentum=0.9))
  return c


def images(n=8, size=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3),
                                              dtype=np.uint8)


# ---------------------------------------------------------------- losses ----
def test_ntxent_from_config_matches_hand_computation():
  za = jnp.asarray([[1.0, 0.0], [0.0, 3.0]])
  zb = jnp.asarray([[2.0, 0.0], [0.0, 1.0]])
  fn = siamese.loss_fn_from_config(dict(name="simclr", temperature=0.5))
  loss, _ = fn(za, zb)
  # Every row: positive cosine 1 (logit 2), the two negatives cosine 0.
  expect = -2.0 + math.log(math.exp(2.0) + 2.0)
  assert abs(float(loss) - expect) < 1e-5


def test_barlow_twins_from_config_matches_hand_computation():
  za = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
  zb = jnp.asarray([[0.0, 5.0], [2.0, 1.0]])
  cfg = siamese.default_loss_config("barlow_twins")   # batchnorm, eps 1e-5
  loss, m = siamese.loss_fn_from_config(cfg)(za, zb)
  eps, lam = 1e-5, 5e-3
  s1, s2 = 1 / math.sqrt(1 + eps), 2 / math.sqrt(4 + eps)
  # C = [[s1^2, -s1 s2], [s1^2, -s1 s2]]
  on = (1 - s1 ** 2) ** 2 + (1 + s1 * s2) ** 2
  off = (s1 * s2) ** 2 + s1 ** 4
  assert abs(float(loss) - (on + lam * off)) < 1e-5
  assert abs(float(m["bt_on_diag"]) - on) < 1e-5


def test_vicreg_from_config_matches_hand_computation():
  za = jnp.asarray([[0.0, 0.0], [2.0, 2.0]])
  zb = jnp.asarray([[0.0, 0.0], [0.0, 2.0]])
  loss, m = siamese.loss_fn_from_config(siamese.default_loss_config(
      "vicreg"))(za, zb)
  # inv = mean([0,0,4,0]) = 1; v(za) = 0 (stds sqrt(2)); v(zb) =
  # (1 - sqrt(1e-4)) / 2 = 0.495; cov(za) = [[2,2],[2,2]] -> 2*4/2 = 4.
  assert abs(float(m["vic_inv"]) - 1.0) < 1e-6
  assert abs(float(m["vic_var"]) - 0.2475) < 1e-6
  assert abs(float(m["vic_cov"]) - 4.0) < 1e-5
  assert abs(float(loss) - (25 + 25 * 0.2475 + 4)) < 1e-4


def test_unknown_loss_raises_and_projectors_follow_the_spec():
  with pytest.raises(ValueError):
    siamese.loss_fn_from_config(dict(name="byol"))
  with pytest.raises(ValueError):
    get_method(tiny_config(loss="nope"))
  assert siamese.projector_dims("simclr", 2048)["features"] == (2048, 128)
  bt = siamese.projector_dims("barlow_twins", 8192)
  assert bt["features"] == (8192,) * 3 and bt["use_bias"] is False
  vic = siamese.projector_dims("vicreg", 8192)
  assert vic["last_bias"] is False and vic["use_bias"] is True


# ---------------------------------------------------------------- method ----
# Compilation dominates on CPU, so one short run through the shared loop
# provides the trained state that the other method tests reuse.
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from maskssl import train as train_lib
  from maskssl.data.base import ArrayDataset
  cfg = tiny_config("vicreg", True, n_masked_views=2)
  cfg.batch_size = 16
  cfg.total_steps = 2
  cfg.log_every = 1
  cfg.checkpoint_every = 100
  ds = ArrayDataset({"image": images(32), "label": np.zeros(32, np.int32)})
  lc = train_lib.loop_config(cfg, len(ds), verbose=False)
  method = get_method(cfg)
  state, summary = train_lib.train_loop(
      method, ds, lc, str(tmp_path_factory.mktemp("siamese")))
  return cfg, method, state, summary


def test_masked_training_through_the_shared_loop(trained):
  _, method, state, summary = trained
  assert isinstance(method, siamese.Siamese)
  assert int(state["step"]) == 2
  assert set(state["params"]) == {"encoder", "projector"}
  assert np.isfinite(summary["loss"]) and summary["grad_norm"] > 0
  assert {"vic_inv", "vic_var", "vic_cov"} <= set(summary)
  assert 0.0 < summary["mask_frac"] < 1.0
  # BN running statistics moved away from their init (mean 0, var 1).
  stem = state["batch_stats"]["encoder"]["stem_bn"]
  assert float(jnp.abs(stem["mean"]).max()) > 0
  assert float(jnp.abs(stem["var"] - 1).max()) > 0


def test_masked_copies_untouched_target_and_loss_average(trained):
  cfg, method, state, _ = trained
  x = images()
  rng = jax.random.PRNGKey(4)

  @jax.jit
  def run(p, st, x, rng):
    anchors, target, _ = method.make_inputs(rng, x)
    k_a, k_b, _ = jax.random.split(rng, 3)
    ha = mscn.preprocess(method.view(k_a, x), cfg.mscn)
    hb = mscn.preprocess(method.view(k_b, x), cfg.mscn)
    loss, _ = method.loss(p, st, anchors, target)
    # by hand: the same forwards (target, a0, a1) with chained BN stats
    zt, st1 = method._forward(p, st, target)
    z0, st2 = method._forward(p, st1, anchors[0])
    z1, _ = method._forward(p, st2, anchors[1])
    l0, _ = method.pair_loss(z0, zt)
    l1, _ = method.pair_loss(z1, zt)
    return anchors, target, ha, hb, loss, l0, l1

  anchors, target, ha, hb, loss, l0, l1 = jax.device_get(
      run(state["params"], state["batch_stats"], x, rng))
  np.testing.assert_array_equal(target, hb)      # asymmetric: untouched
  assert len(anchors) == 2
  for a in anchors:
    assert (a != ha).any()                       # masked
    assert np.mean(a == ha) > 0.5                # but the same crop
  assert (anchors[0] != anchors[1]).any()        # independent copies
  assert abs(float(l0) - float(l1)) > 0
  np.testing.assert_allclose(float(loss), (float(l0) + float(l1)) / 2,
                             rtol=1e-5)


def test_unmasked_inputs_are_the_normalised_views():
  off = get_method(tiny_config("simclr", False))
  x = images(4)
  rng = jax.random.PRNGKey(4)
  anchors, target, extra = off.make_inputs(rng, x)
  assert len(anchors) == 1 and extra == {}
  _, k_b, _ = jax.random.split(rng, 3)
  np.testing.assert_allclose(np.asarray(target),
                             np.asarray(off._normalize(off.view(k_b, x))))


def test_encode_uses_hpf_at_eval_and_is_deterministic(trained):
  cfg, method, state, _ = trained
  x = images(4)
  enc = jax.jit(method.encode)
  f = enc(state, {"image": x})
  assert f.shape == (4, method.encoder.num_features) and f.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(f),
                                np.asarray(enc(state, {"image": x})))
  const = np.full((2, 16, 16, 3), 77, np.uint8)
  assert float(jnp.abs(method.eval_inputs(const)).max()) < 1e-6   # HPF on
  cfg2 = tiny_config("vicreg", True)
  cfg2.mscn.hpf_at_eval = False
  no_hpf = get_method(cfg2).eval_inputs(const)
  assert float(jnp.abs(no_hpf).max()) > 0.1
  big = np.random.default_rng(0).integers(0, 255, (2, 24, 24, 3), np.uint8)
  assert method.eval_inputs(big).shape == (2, 16, 16, 3)   # resized


def test_classifier_holds_the_encoder(trained):
  _, method, state, _ = trained
  clf = method.classifier(10)
  batch = {"image": images(4)}
  v = jax.eval_shape(lambda r: clf.init(r, batch, train=False),
                     jax.random.PRNGKey(0))
  assert set(v["params"]) == {"encoder", "head"}
  assert (jax.tree.structure(v["params"]["encoder"]) ==
          jax.tree.structure(state["params"]["encoder"]))
  out = jax.eval_shape(lambda v: clf.apply(v, batch, train=False), v)
  assert out.shape == (4, 10)


def test_lars_excludes_biases_and_norms_from_decay_and_trust_ratio():
  opt = ml_collections.ConfigDict(dict(
      name="lars", lr=0.5, schedule="constant", weight_decay=0.1,
      momentum=0.0, clip_norm=0.0))
  tx, _ = optim.make(opt, 10)
  params = {"conv": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)},
            "bn": {"scale": jnp.ones(2)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  upd, _ = tx.update(grads, tx.init(params), params)
  # Kernel: g + wd p = 0.1 + 0.2 = 0.3 per entry; trust ratio
  # 1e-3 * ||p|| / ||g + wd p|| = 1e-3 * 4 / 0.6; update = -lr * ratio * 0.3
  ratio = 1e-3 * 4.0 / 0.6
  np.testing.assert_allclose(upd["conv"]["kernel"], -0.5 * ratio * 0.3,
                             rtol=1e-5)
  # Bias / BN scale: plain SGD step, no decay, no trust ratio.
  np.testing.assert_allclose(upd["conv"]["bias"], -0.05, rtol=1e-6)
  np.testing.assert_allclose(upd["bn"]["scale"], -0.05, rtol=1e-6)


def test_named_depth_takes_a_stage_sizes_override():
  from maskssl.models.resnet import build_resnet
  assert build_resnet("resnet18", stage_sizes=(1, 1)).stage_sizes == (1, 1)
  assert build_resnet("resnet18").stage_sizes == (2, 2, 2, 2)
  assert build_resnet("resnet50").stage_sizes == (3, 4, 6, 3)
