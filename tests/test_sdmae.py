"""SD-MAE / MAE: ViT pieces, mask, targets, losses, gradient flags, p = 0."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskssl.losses.distillation import self_distillation_loss
from maskssl.losses.mae import normalized_patch_targets
from maskssl.masks.random_patches import (mask_indices, num_masked,
                                          random_patch_mask)
from maskssl.methods import get_method
from maskssl.data import augment as aug_lib
from maskssl.methods.sdmae import SDMAE
from maskssl.models import vit


def tiny_config(sd_weight=0.2, stop_grad=False, heads=(64, 16, 512),
                image_size=32):
  return ml_collections.ConfigDict(dict(
      method="sdmae", seed=0, batch_size=8, total_steps=10,
      optim=dict(name="adamw", lr=1e-3, warmup_steps=2, weight_decay=0.05,
                 no_decay_names=("q_bias", "v_bias", "mask_token"),
                 clip_norm=0.0, end_lr=0.0),
      model=dict(variant="tiny", image_size=image_size, patch_size=8,
                 enc_dim=32, enc_depth=2, enc_heads=2, dec_dim=32,
                 dec_depth=1, dec_heads=2),
      sdmae=dict(mask_ratio=0.6, sd_weight=sd_weight,
                 teacher_stop_grad=stop_grad, head_hidden=heads[0],
                 head_bottleneck=heads[1], head_out=heads[2])))


def images(b=4, size=32, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (b, size, size, 3)
                                             ).astype(np.uint8)


_PARAMS = {}


def _params():
  """Tiny SD-MAE params (heads 64/16/512), initialised once per session."""
  if "p" not in _PARAMS:
    _PARAMS["p"] = jax.jit(SDMAE(tiny_config()).init_params)(
        jax.random.PRNGKey(0))
  return _PARAMS["p"]


# ---- patches, positions, attention parameters ------------------------------

def test_patchify_round_trip_and_order():
  x = jnp.asarray(np.random.RandomState(0).rand(2, 16, 24, 3), jnp.float32)
  p = vit.patchify(x, 8)
  assert p.shape == (2, 6, 64, 3)
  # patch index py * (W/p) + px, pixel qy * p + qx
  np.testing.assert_array_equal(p[1, 1 * 3 + 2, 5 * 8 + 3], x[1, 8 + 5, 16 + 3])
  np.testing.assert_array_equal(vit.unpatchify(p, 8, 16, 24), x)
  np.testing.assert_array_equal(
      vit.unpatchify(p.reshape(2, 6, -1), 8, 16, 24), x)


def test_sincos_table():
  pe = vit.sincos_1d(196, 384)
  np.testing.assert_array_equal(pe[0], np.tile([0.0, 1.0], 192))
  p, i = 37, 11
  w = 10000.0 ** (-2 * i / 384)
  assert abs(pe[p, 2 * i] - math.sin(p * w)) < 1e-6
  assert abs(pe[p, 2 * i + 1] - math.cos(p * w)) < 1e-6


def test_parameter_tree_qv_bias_no_pos_embed():
  params = _params()
  attn = params["encoder"]["block_0"]["attn"]
  assert set(attn) == {"qkv", "q_bias", "v_bias", "proj"}
  assert set(attn["qkv"]) == {"kernel"}                 # no qkv bias
  assert attn["qkv"]["kernel"].shape == (32, 96)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  names = {"/".join(str(getattr(k, "key", k)) for k in path)
           for path, _ in flat}
  assert not any("pos" in n for n in names)
  assert "decoder/mask_token" in names


# ---- mask ---------------------------------------------------------------------

def test_mask_exact_counts_and_indices():
  assert num_masked(196, 0.6) == 117 and num_masked(196, 0.75) == 147
  mask = random_patch_mask(jax.random.PRNGKey(1), (64, 196), {"mask_ratio": 0.6})
  assert mask.dtype == jnp.bool_
  np.testing.assert_array_equal(np.asarray(mask.sum(1)), 117)
  ids_vis, ids_mask = mask_indices(mask, 117)
  assert ids_vis.shape == (64, 79) and ids_mask.shape == (64, 117)
  both = np.sort(np.concatenate([ids_vis, ids_mask], 1), 1)
  np.testing.assert_array_equal(both, np.tile(np.arange(196), (64, 1)))
  assert (np.diff(np.asarray(ids_vis), axis=1) > 0).all()
  assert (np.diff(np.asarray(ids_mask), axis=1) > 0).all()
  assert np.asarray(jnp.take_along_axis(mask, ids_mask, 1)).all()
  assert not np.asarray(jnp.take_along_axis(mask, ids_vis, 1)).any()


def test_mask_uniform_frequency_and_valid():
  mask = random_patch_mask(jax.random.PRNGKey(2), (4000, 16), 0.5)
  freq = np.asarray(mask).mean(0)
  # each position masked with probability 8/16; binomial sd ~ 0.008
  assert np.abs(freq - 0.5).max() < 0.035
  valid = np.ones((3, 10), bool)
  valid[1, 6:] = False
  valid[2, 3:] = False
  m = np.asarray(random_patch_mask(jax.random.PRNGKey(3), valid, 0.6))
  np.testing.assert_array_equal(m.sum(1), [6, 3, 1])
  assert not (m & ~valid).any()


# ---- targets ------------------------------------------------------------------

def test_normalized_targets_match_float64_reference():
  rs = np.random.RandomState(0)
  x = rs.rand(2, 16, 16, 3).astype(np.float32)
  x[1, :8, 8:, :] = 0.25                                 # constant patch
  t = np.asarray(normalized_patch_targets(jnp.asarray(x), 8))
  assert t.shape == (2, 4, 192)
  xd = x.astype(np.float64)
  for b in range(2):
    for py in range(2):
      for px in range(2):
        patch = xd[b, py * 8:(py + 1) * 8, px * 8:(px + 1) * 8]
        patch = patch.reshape(64, 3)                      # (pixel, channel)
        ref = (patch - patch.mean(0)) / (patch.std(0, ddof=1) + 1e-6)
        np.testing.assert_allclose(t[b, py * 2 + px], ref.reshape(-1),
                                   atol=2e-5)
  np.testing.assert_array_equal(t[1, 1], 0.0)


# ---- heads and losses ---------------------------------------------------------

def test_weight_norm_columns_unit():
  head = vit.DINOHead(32, 8, 64)
  p = jax.jit(head.init)(jax.random.PRNGKey(0), jnp.ones((1, 5)))["params"]
  v = p["last"]["kernel"]
  w = v / jnp.linalg.norm(v, axis=0, keepdims=True)
  np.testing.assert_allclose(jnp.linalg.norm(w, axis=0), 1.0, rtol=1e-6)
  out = jax.jit(head.apply)({"params": p},
                            jax.random.normal(jax.random.PRNGKey(1), (7, 5)))
  assert float(jnp.abs(out).max()) <= 1.0 + 1e-6


def test_head_pooled_before_last_layer_equals_per_token_then_pool():
  """Spec 2.4: head per token, then mean over tokens. The pooled fast path
  (pool before the linear weight-normalised layer) must give the same."""
  head = vit.DINOHead(32, 8, 64)
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 9, 5))
  p = jax.jit(head.init)(jax.random.PRNGKey(0), x)["params"]
  per_token = jnp.mean(head.apply({"params": p}, x), axis=1)
  pooled = head.apply({"params": p}, x, pool_axis=1)
  assert pooled.shape == (3, 64)
  np.testing.assert_allclose(pooled, per_token, rtol=1e-5, atol=1e-6)


def test_distillation_loss_hand_computation_and_center():
  rs = np.random.RandomState(0)
  s, t = rs.randn(3, 6).astype(np.float32), rs.randn(3, 6).astype(np.float32)
  c = (rs.rand(1, 6) * 0.1).astype(np.float32)
  loss, new_c = self_distillation_loss(jnp.asarray(s), jnp.asarray(t),
                                       jnp.asarray(c))
  sd, td, cd = (a.astype(np.float64) for a in (s, t, c))
  pt = np.exp((td - cd) / 0.04)
  pt /= pt.sum(1, keepdims=True)
  ls = sd / 0.1 - np.log(np.exp(sd / 0.1).sum(1, keepdims=True))
  np.testing.assert_allclose(float(loss), np.mean(-(pt * ls).sum(1)),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(new_c),
                             0.9 * cd + 0.1 * pt.mean(0, keepdims=True),
                             rtol=1e-5)


def test_init_losses_near_ln4096_and_center_sum():
  m = SDMAE(tiny_config(heads=(2048, 256, 4096)))
  state = jax.jit(m.init_state)(jax.random.PRNGKey(0), None)
  new_state, metrics = jax.jit(m.train_step)(
      state, {"image": images(8)}, jax.random.PRNGKey(1))
  assert 8.30 <= float(metrics["loss_sd"]) <= 8.70, metrics
  assert 0.9 <= float(metrics["loss_rec"]) <= 1.6, metrics
  np.testing.assert_allclose(float(new_state["sd_center"].sum()), 0.1,
                             atol=1e-6)
  assert int(new_state["step"]) == 1


def _sd_grads(stop_grad):
  m = SDMAE(tiny_config(sd_weight=1.0, stop_grad=stop_grad))
  params = _params()

  @jax.jit
  def grad_norms(params, imgs):
    x01 = m.prepare(imgs)
    _, ids_vis, ids_mask = m._indices(jax.random.PRNGKey(1), 4)
    center = jnp.zeros((1, 512))
    grads = jax.grad(lambda p: m.losses(p, center, x01, ids_vis, ids_mask)[0]
                     )(params)
    return {k: optax_global_norm(v) for k, v in grads.items()}
  return {k: float(v) for k, v in grad_norms(params, images(4)).items()}


def optax_global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x))
                      for x in jax.tree_util.tree_leaves(tree)))


def test_teacher_gradient_flag():
  # p = 1: the loss is L_SD alone (the rec term has weight 0).
  on = _sd_grads(stop_grad=False)
  assert on["head_dec"] > 0 and on["decoder"] > 0 and on["head_enc"] > 0
  off = _sd_grads(stop_grad=True)
  assert off["head_dec"] == 0.0 and off["decoder"] == 0.0
  assert off["head_enc"] > 0 and off["encoder"] > 0


def test_mae_is_sdmae_with_weight_zero():
  batch, rng = {"image": images(4)}, jax.random.PRNGKey(5)
  sd = SDMAE(tiny_config(sd_weight=0.2))
  mae = SDMAE(tiny_config(sd_weight=0.0))
  p_sd = _params()
  p_mae = jax.jit(mae.init_params)(jax.random.PRNGKey(0))
  assert "head_enc" not in p_mae and "head_dec" not in p_mae
  assert set(p_sd) == set(p_mae) | {"head_enc", "head_dec"}
  shared = {k: p_sd[k] for k in p_mae}
  jax.tree_util.tree_map(np.testing.assert_array_equal, shared, p_mae)
  # p = 0 through the SD-MAE code path (heads present, weight 0) ...
  sd0 = SDMAE(tiny_config(sd_weight=0.0))
  sd0.use_sd = True                     # force the heads branch, weight 0
  k_aug, k_mask = jax.random.split(rng)
  x01 = sd.prepare(jnp.asarray(batch["image"]), k_aug)
  _, iv, im = sd._indices(k_mask, 4)
  sd0.model = sd.model
  l_heads, (met_h, _) = jax.jit(sd0.losses)(p_sd, jnp.zeros((1, 512)), x01,
                                             iv, im)
  l_mae, (met_m, _) = jax.jit(mae.losses)(p_mae, None, x01, iv, im)
  np.testing.assert_allclose(float(l_heads), float(l_mae), rtol=1e-6)
  assert "loss_sd" not in met_m
  # ... and the MAE train state has no center (its train step: see below).
  state = jax.eval_shape(mae.init_state, jax.random.PRNGKey(0), batch)
  assert "sd_center" not in state


def test_encoder_ignores_masked_pixels():
  m = SDMAE(tiny_config())
  params = _params()
  x = jnp.asarray(np.random.RandomState(0).rand(2, 32, 32, 3), jnp.float32)
  mask, iv, im = m._indices(jax.random.PRNGKey(1), 2)
  patches = vit.patchify(x, 8)
  noisy = jnp.where(mask[:, :, None, None], patches + 3.0, patches)
  x2 = vit.unpatchify(noisy, 8, 32, 32)
  apply = jax.jit(m.model.apply)
  o1 = apply({"params": params}, x, iv, im)
  o2 = apply({"params": params}, x2, iv, im)
  np.testing.assert_array_equal(o1["z"], o2["z"])
  np.testing.assert_array_equal(o1["student"], o2["student"])


def test_registered_and_classifier_transfer_and_lr_decay():
  cfg = tiny_config()
  m = get_method(cfg)
  assert isinstance(m, SDMAE)
  params = _params()
  clf = m.classifier(2)
  batch = {"image": images(2)}
  cp = jax.jit(clf.init)(jax.random.PRNGKey(1), batch)["params"]
  assert set(cp) == {"encoder", "fc_norm", "head"}
  assert (jax.tree_util.tree_structure(cp["encoder"])
          == jax.tree_util.tree_structure(params["encoder"]))
  cp = dict(cp, encoder=params["encoder"])
  logits = jax.jit(functools.partial(clf.apply, train=True))(
      {"params": cp}, batch, rngs={"dropout": jax.random.PRNGKey(2)})
  assert logits.shape == (2, 2) and np.isfinite(np.asarray(logits)).all()
  feats = jax.jit(m.encode)({"params": params}, batch)
  assert feats.shape == (2, 32)
  scales = vit.layerwise_lr_decay_labels(cp, 0.75, 2)
  assert scales["encoder"]["patch_embed"]["kernel"] == 0.75 ** 3
  assert scales["encoder"]["block_0"]["fc1"]["kernel"] == 0.75 ** 2
  assert scales["encoder"]["block_1"]["attn"]["q_bias"] == 0.75
  assert scales["head"]["kernel"] == 1.0 and scales["fc_norm"]["scale"] == 1.0


def test_prepare_crops_with_the_shared_random_resized_crop():
  """SD-MAE's crop is data/augment's (torchvision boxes, resize of the crop
  alone), one box per image from split(rng, B); full scale is identity."""
  imgs = images(b=3, size=48)
  key = jax.random.PRNGKey(3)
  out = np.asarray(SDMAE(tiny_config()).prepare(jnp.asarray(imgs), key))
  x01 = jnp.asarray(imgs, jnp.float32) / 255.0
  boxes = jax.vmap(lambda k: aug_lib.crop_params(k, 48, 48))(
      jax.random.split(key, 3))
  ref = np.asarray(aug_lib.crop_resize(x01, *boxes, 32))
  np.testing.assert_array_equal(out, ref)
  assert out.shape == (3, 32, 32, 3)
  cfg = tiny_config()
  cfg.sdmae.crop_scale, cfg.sdmae.crop_ratio = (1.0, 1.0), (1.0, 1.0)
  same = SDMAE(cfg).prepare(jnp.asarray(images(b=2)), key)
  np.testing.assert_allclose(same, images(b=2) / 255.0, atol=1e-6)


def test_mae_train_step_compiles_once_bf16_finite():
  cfg = tiny_config(sd_weight=0.0)
  cfg.model.compute_dtype = "bfloat16"
  m = SDMAE(cfg)
  state = jax.jit(m.init_state)(jax.random.PRNGKey(0), None)
  traces = []

  def step(s, b, r):
    traces.append(1)
    return m.train_step(s, b, r)
  jstep = jax.jit(step)
  for i in range(3):
    state, metrics = jstep(state, {"image": images(4, seed=i)},
                           jax.random.PRNGKey(i))
    assert np.isfinite(float(metrics["loss"]))
    assert float(metrics["loss"]) == float(metrics["loss_rec"])
    assert "loss_sd" not in metrics
  assert len(traces) == 1 and "sd_center" not in state
  assert state["params"]["encoder"]["patch_embed"]["kernel"].dtype == jnp.float32
