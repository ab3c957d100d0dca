"""Optimiser construction: schedules, decay masks, clipping, lr scales."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl import optim


def test_warmup_cosine_schedule_values():
  s = optim.make(dict(lr=1.0, warmup_steps=10), 110)[1]
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
  assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
  c = optim.make(dict(lr=3e-5, schedule="constant", warmup_steps=100),
                 1000)[1]
  assert float(c(0)) == pytest.approx(3e-5)
  with pytest.raises(ValueError, match="Unknown optim.schedule"):
    optim.make(dict(schedule="nope"), 10)


def test_decay_mask_excludes_biases_norms_and_named():
  params = {"enc": {"Dense_0": {"kernel": 1, "bias": 1},
                    "LayerNorm_0": {"scale": 1, "bias": 1},
                    "pos_embed": 1, "latents": 1}}
  m = optim.decay_mask(params, ("pos_embed",))
  assert m == {"enc": {"Dense_0": {"kernel": True, "bias": False},
                       "LayerNorm_0": {"scale": False, "bias": False},
                       "pos_embed": False, "latents": True}}


def _update(cfg, params, grads, total=10):
  tx, _ = optim.make(cfg, total)
  u, _ = tx.update(grads, tx.init(params), params)
  return u


def test_adamw_first_step_matches_hand_computation():
  p = {"w": {"kernel": jnp.array([2.0]), "bias": jnp.array([2.0])}}
  g = {"w": {"kernel": jnp.array([0.5]), "bias": jnp.array([0.5])}}
  cfg = dict(lr=0.1, schedule="constant", weight_decay=0.01, clip_norm=0.0)
  u = _update(cfg, p, g)
  # Adam's first step is g/|g| (bias-corrected) = 1; decay 0.01*2 on kernel
  np.testing.assert_allclose(u["w"]["kernel"], -0.1 * (1 + 0.02), rtol=1e-5)
  np.testing.assert_allclose(u["w"]["bias"], -0.1, rtol=1e-5)


def test_clipping_and_lr_scale():
  p = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
  g = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
  cfg = dict(name="sgd", lr=1.0, schedule="constant", weight_decay=0.0,
             clip_norm=1.0, momentum=0.0)
  u = _update(cfg, p, g)
  np.testing.assert_allclose(u["a"], [-0.6, -0.8], rtol=1e-6)
  tx, _ = optim.make(cfg, 10, lr_scale={"a": 0.5, "b": 1.0})
  u2, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(u2["a"], [-0.3, -0.4], rtol=1e-6)


def test_unknown_optim_key_is_a_config_error_naming_it():
  from maskssl.config_utils import ConfigError
  with pytest.raises(ConfigError, match=r"'weight_decy'.*config\.optim.*"
                     r"Did you mean 'weight_decay'"):
    optim.make(dict(lr=0.1, weight_decy=0.1), 10)


def test_sgd_has_pytorch_semantics():
  # torch.optim.SGD(momentum=0.9, weight_decay=0.1), decay on every leaf:
  # d = g + wd p; b = mu b + d (b_1 = d); p -= lr b
  tx, _ = optim.make(dict(name="sgd", lr=0.5, schedule="constant",
                          momentum=0.9, weight_decay=0.1, decay_all=True), 10)
  p = {"bias": jnp.array([1.0]), "kernel": jnp.array([2.0])}
  g = {"bias": jnp.array([0.3]), "kernel": jnp.array([0.3])}
  s = tx.init(p)
  b = {"bias": 0.0, "kernel": 0.0}
  for _ in range(3):
    u, s = tx.update(g, s, p)
    new = optax_apply(p, u)
    for k in p:
      b[k] = 0.9 * b[k] + (float(g[k][0]) + 0.1 * float(p[k][0]))
      np.testing.assert_allclose(new[k], float(p[k][0]) - 0.5 * b[k],
                                 rtol=1e-6)
    p = new
  np.testing.assert_allclose(optim.momentum_trace(s, p)["kernel"],
                             b["kernel"], rtol=1e-6)


def optax_apply(p, u):
  return jax.tree.map(lambda a, b: a + b, p, u)


def test_cosine_epoch_is_constant_within_an_epoch():
  _, s = optim.make(dict(lr=1.0, schedule="cosine_epoch"), 40,
                    steps_per_epoch=10)
  vals = [float(s(i)) for i in range(40)]
  assert vals[0] == vals[9] == 1.0
  assert vals[10] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
  assert vals[39] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))


def test_lars_bias_lr_parameter_group():
  # Barlow Twins: lr 0.2 for weights, 0.0048 for biases and BatchNorm
  cfg = dict(name="lars", lr=0.2, bias_lr=0.0048, schedule="constant",
             weight_decay=0.0, momentum=0.0)
  tx, sched = optim.make(cfg, 10)
  p = {"conv": {"kernel": jnp.full((2,), 3.0), "bias": jnp.ones(2)},
       "bn": {"scale": jnp.ones(2)}}
  g = jax.tree.map(lambda x: jnp.full_like(x, 0.1), p)
  u, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(u["conv"]["bias"], -0.0048 * 0.1, rtol=1e-5)
  np.testing.assert_allclose(u["bn"]["scale"], -0.0048 * 0.1, rtol=1e-5)
  # kernel: trust ratio 1e-3 * ||p|| / ||g|| = 1e-3 * 30
  np.testing.assert_allclose(u["conv"]["kernel"], -0.2 * 0.03 * 0.1,
                             rtol=1e-5)
  assert float(sched(3)) == pytest.approx(0.2)
