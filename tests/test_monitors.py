"""Online monitors logged with every train step's metrics."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskssl.losses import joint_embedding as je
from maskssl.methods.sma import SMA


def test_effective_rank_of_collapsed_and_spread_embeddings():
  rs = np.random.RandomState(0)
  full = jnp.asarray(rs.randn(64, 8), jnp.float32)
  assert 7.0 < float(je.effective_rank(full)) <= 8.0
  collapsed = jnp.ones((64, 8)) + 1e-6 * full
  assert float(je.effective_rank(collapsed)) < 1.1
  _, m = je.barlow_twins(full, full, standardize="batchnorm", eps=1e-5)
  assert float(m["bt_diag_mean"]) == pytest.approx(1.0, abs=1e-3)


def _sma_config():
  c = ml_collections.ConfigDict()
  c.method, c.seed, c.batch_size, c.total_steps = "sma", 0, 4, 8
  c.model = dict(input="continuous", c_in=1, n_max=12, embed_dim=16,
                 latent_dim=16, num_self_layers=1, self_heads=2)
  c.mask = dict(ratio=0.5, num_per_query=2, mask_self=True, rho=1.0,
                curriculum_fraction=1.0)
  c.optim = dict(lr=1e-3)
  return c


def test_sma_logs_the_attention_share_of_the_curriculum():
  m = SMA(_sma_config())
  valid = jnp.arange(12)[None, :] < jnp.asarray([12, 10, 8, 12])[:, None]
  batch = dict(x=jnp.ones((4, 12, 1)), valid=valid)
  state = m.init_state(jax.random.PRNGKey(0), batch)
  shares = []
  step = jax.jit(m.train_step)
  for i in range(8):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    shares.append(float(metrics["mask_attn_share"]))
  # the cosine curriculum starts at s = 1 (rho = 1: all random) and moves
  # to attention-chosen masks
  assert shares[0] == 0.0
  assert shares == sorted(shares) and 0.5 < shares[-1] <= 1.0
  assert "lr" not in metrics and m.schedule is not None
