"""A tiny Method for loop tests: linear regression with rng-dependent noise
(so resume exactness covers the RNG stream too)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from maskssl.data.base import ArrayDataset
from maskssl.methods.base import Method, gradient_step, optax_state


class Toy(Method):
  name = "toy"

  def __init__(self, config=None, lr=0.05, dim=4):
    super().__init__(config)
    self.tx = optax.sgd(lr, momentum=0.9)
    self.dim = dim

  def init_state(self, rng, batch):
    w = jax.random.normal(rng, (batch["x"].shape[-1], 1)) * 0.1
    return optax_state({"w": w, "b": jnp.zeros((1,))}, self.tx)

  def train_step(self, state, batch, rng):
    noise = 0.01 * jax.random.normal(rng, batch["y"].shape)

    def loss_fn(p):
      pred = batch["x"] @ p["w"] + p["b"]
      return jnp.mean((pred - batch["y"] - noise) ** 2), {}

    return gradient_step(state, self.tx, loss_fn)


def toy_dataset(n=256, dim=4, seed=0, nan_row=None):
  r = np.random.default_rng(seed)
  x = r.normal(size=(n, dim)).astype(np.float32)
  y = (x @ np.arange(1, dim + 1, dtype=np.float32)[:, None] + 0.5).astype(
      np.float32)
  if nan_row is not None:
    x[nan_row] = np.nan
  return ArrayDataset({"x": x, "y": y})
