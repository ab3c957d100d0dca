"""MLP projection / prediction heads for joint-embedding methods.

:class:`ProjectionMLP` covers the projectors used by SimCLR, Barlow Twins,
VICReg and lightly's ``_projection_mlp`` (MetaMask):

    for each hidden width:  Dense -> BatchNorm -> ReLU
    last layer:             Dense [-> BatchNorm (affine)]

Examples::

    # MetaMask Barlow-Twins projector: 512->2048->2048->2048, BN on the output
    ProjectionMLP(features=(2048, 2048, 2048), last_bn=True)
    # MetaMask contrastive projector: 512->2048->256, BN on the output
    ProjectionMLP(features=(2048, 256), last_bn=True)
    # Barlow Twins (original): no biases anywhere
    ProjectionMLP(features=(8192, 8192, 8192), use_bias=False)
    # VICReg: biases on hidden layers, none on the last
    ProjectionMLP(features=(8192, 8192, 8192), last_bias=False)

BatchNorm statistics live in ``batch_stats`` (same conventions as
:mod:`maskssl.models.resnet`: :class:`~maskssl.models.resnet.TorchBatchNorm`,
eps 1e-5, flax momentum 0.9 == torch 0.1, torch's unbiased running variance,
no ``axis_name``). Dense ``init_scheme="pytorch"`` reproduces ``nn.Linear`` defaults:
kernel and bias ~ U(+-1/sqrt(fan_in)); ``"flax"`` uses flax's lecun-normal
kernel and zero bias.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskssl.models.resnet import TorchBatchNorm, torch_default_kernel_init


class TorchDense(nn.Module):
  """Dense with PyTorch ``nn.Linear`` default init (kernel and bias
  ~ U(+-1/sqrt(fan_in))) or flax defaults (``init_scheme="flax"``)."""
  features: int
  use_bias: bool = True
  init_scheme: str = "pytorch"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    if self.init_scheme == "pytorch":
      kinit = torch_default_kernel_init
      bound = 1.0 / float(fan_in) ** 0.5

      def binit(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    elif self.init_scheme == "flax":
      kinit, binit = nn.initializers.lecun_normal(), nn.initializers.zeros
    else:
      raise ValueError(f"unknown dense init {self.init_scheme!r}")
    return nn.Dense(self.features, use_bias=self.use_bias, kernel_init=kinit,
                    bias_init=binit, dtype=self.dtype, name="dense")(x)


class ProjectionMLP(nn.Module):
  """``__call__(x, train) -> (B, features[-1])`` float32.

  Attributes:
    features: output widths of the Dense layers (hidden..., out).
    use_bias: bias on the hidden Dense layers (and the last, see last_bias).
    last_bias: bias on the last Dense layer (default: ``use_bias``).
    last_bn: affine BatchNorm after the last Dense (lightly/MetaMask style).
    hidden_bn: BatchNorm after hidden Dense layers (True for all of the
      standard projectors).
    init_scheme: ``"pytorch"`` (default) or ``"flax"`` Dense init.
    bn_unbiased_var: torch's unbiased BatchNorm running variance.
    dtype: compute dtype (params float32, output cast to float32).
  """
  features: Sequence[int]
  use_bias: bool = True
  last_bias: Optional[bool] = None
  last_bn: bool = False
  hidden_bn: bool = True
  init_scheme: str = "pytorch"
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  bn_unbiased_var: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    def bn(name):
      return TorchBatchNorm(use_running_average=not train,
                            momentum=self.bn_momentum, epsilon=self.bn_eps,
                            dtype=self.dtype,
                            unbiased_running_var=self.bn_unbiased_var,
                            name=name)

    n = len(self.features)
    for i, width in enumerate(self.features):
      last = i == n - 1
      bias = (self.use_bias if self.last_bias is None else self.last_bias
              ) if last else self.use_bias
      x = TorchDense(width, use_bias=bias, init_scheme=self.init_scheme,
                     dtype=self.dtype,
                     name=f"fc{i}")(x)
      if not last:
        if self.hidden_bn:
          x = bn(f"bn{i}")(x)
        x = nn.relu(x)
      elif self.last_bn:
        x = bn(f"bn{i}")(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


__all__ = ["ProjectionMLP", "TorchDense"]
