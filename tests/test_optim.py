"""Optimiser construction: schedules, decay masks, clipping, lr scales."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskssl import optim


def test_warmup_cosine_schedule_values():
  s = optim.make_schedule(optim.default_optim_config(lr=1.0, warmup_steps=10),
                          110)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
  assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
  c = optim.make_schedule(optim.default_optim_config(
      lr=3e-5, schedule="constant", warmup_steps=100), 1000)
  assert float(c(0)) == pytest.approx(3e-5)
  with pytest.raises(ValueError, match="Unknown optim.schedule"):
    optim.make_schedule(optim.default_optim_config(schedule="nope"), 10)


def test_decay_mask_excludes_biases_norms_and_named():
  params = {"enc": {"Dense_0": {"kernel": 1, "bias": 1},
                    "LayerNorm_0": {"scale": 1, "bias": 1},
                    "pos_embed": 1, "latents": 1}}
  m = optim.decay_mask(params, ("pos_embed",))
  assert m == {"enc": {"Dense_0": {"kernel": True, "bias": False},
                       "LayerNorm_0": {"scale": False, "bias": False},
                       "pos_embed": False, "latents": True}}


def _update(cfg, params, grads, total=10):
  tx = optim.make_optimizer(cfg, total)
  u, _ = tx.update(grads, tx.init(params), params)
  return u


def test_adamw_first_step_matches_hand_computation():
  p = {"w": {"kernel": jnp.array([2.0]), "bias": jnp.array([2.0])}}
  g = {"w": {"kernel": jnp.array([0.5]), "bias": jnp.array([0.5])}}
  cfg = optim.default_optim_config(lr=0.1, schedule="constant",
                                   weight_decay=0.01, clip_norm=0.0)
  u = _update(cfg, p, g)
  # Adam's first step is g/|g| (bias-corrected) = 1; decay 0.01*2 on kernel
  np.testing.assert_allclose(u["w"]["kernel"], -0.1 * (1 + 0.02), rtol=1e-5)
  np.testing.assert_allclose(u["w"]["bias"], -0.1, rtol=1e-5)


def test_clipping_and_lr_scale():
  p = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
  g = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
  cfg = optim.default_optim_config(name="sgd", lr=1.0, schedule="constant",
                                   weight_decay=0.0, clip_norm=1.0,
                                   momentum=0.0)
  u = _update(cfg, p, g)
  np.testing.assert_allclose(u["a"], [-0.6, -0.8], rtol=1e-6)
  tx = optim.make_optimizer(cfg, 10, lr_scale={"a": 0.5, "b": 1.0})
  u2, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(u2["a"], [-0.3, -0.4], rtol=1e-6)
