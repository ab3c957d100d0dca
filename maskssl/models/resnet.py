"""ResNet backbones (NHWC, flax.linen) returning pooled features.

Shared by the image methods (MetaMask, MSCN/siamese, supervised baselines).

* ``stem="cifar"``: conv 3x3 stride 1 (no bias) -> BN [-> ReLU], no max-pool;
  use it for 32-96 px images.
* ``stem="imagenet"``: conv 7x7 stride 2 -> BN -> ReLU -> max-pool 3x3/2.
* ``block="basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50, v1.5:
  the stride sits on the 3x3 conv).
* Output: global average pool, explicitly reshaped to ``(B, F)`` (never
  squeezed, so batch size 1 works); ``F = 512`` (basic) or ``2048``
  (bottleneck) at ``width=64``.

BatchNorm keeps its running statistics in the ``batch_stats`` collection and
is used functionally::

    model = resnet18(stem="cifar")
    variables = model.init(rng, x, train=False)
    feats, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    feats = model.apply(variables, x, train=False)   # running statistics

No ``axis_name`` is used: under ``jit`` with the batch axis sharded over
devices, BatchNorm's batch mean/variance are reductions over the *global*
array, i.e. SyncBN semantics for free. Call the model once per augmented view
to give each view its own batch statistics.

BatchNorm (:class:`TorchBatchNorm`): eps ``1e-5`` and PyTorch momentum 0.1
(flax ``momentum=0.9``) by default. Train mode normalises with the biased
batch variance (as torch and flax do) but, like torch, puts the *unbiased*
one, ``var * n / (n - 1)`` with ``n`` the number of values per channel, into
the running variance (flax's own ``nn.BatchNorm`` keeps the biased one), so
eval-mode features and exported ``running_var`` buffers are torch's.
``bn_unbiased_var=False`` gives flax's behaviour. Param / ``batch_stats`` names
are flax's (``scale``, ``bias`` / ``mean``, ``var``).

Initialisation (``init_scheme``):
* ``"pytorch"``: PyTorch's defaults, kernels ~ U(+-1/sqrt(fan_in)) (this is
  what lightly / the MetaMask reference use);
* ``"kaiming_fan_out"``: torchvision's He-normal (fan_out) for convs.
BN scale 1, bias 0; ``zero_init_residual`` zeroes the last BN scale of each
residual branch.

Parameters are float32; ``dtype`` (e.g. ``jnp.bfloat16``) is the compute
dtype of convolutions; BN statistics are reduced in float32 and the pooled
feature is returned as float32.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskssl.constants import IMAGENET_MEAN, IMAGENET_STD
from maskssl.models.dtypes import dtype_from_name  # noqa: F401 (re-exported)

# PyTorch default init for Conv/Linear weights: kaiming_uniform(a=sqrt(5))
# == U(-1/sqrt(fan_in), 1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform)
torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_INITS = {"pytorch": torch_default_kernel_init,
          "kaiming_fan_out": kaiming_fan_out}


def kernel_init_by_name(name: str):
  if name not in _INITS:
    raise ValueError(f"unknown init {name!r}; known: {sorted(_INITS)}")
  return _INITS[name]


class TorchBatchNorm(nn.Module):
  """BatchNorm over all but the last axis with torch's running statistics.

  Same variables as ``nn.BatchNorm`` (params ``scale``/``bias``,
  ``batch_stats`` ``mean``/``var``) and the same two-pass float32-or-wider
  statistics as ``nn.BatchNorm(use_fast_variance=False)``; the running
  variance is updated with the unbiased batch variance when
  ``unbiased_running_var`` (torch ``BatchNorm{1,2}d``). ``n`` is the global
  count (under ``jit`` with a sharded batch, as torch's SyncBatchNorm).

  Precision: float32 statistics and their gradients are summed in float32,
  as XLA does. torch's CPU kernels accumulate both in double, so torch-CPU
  float32 is closer to float64 on ill-conditioned steps: on the MetaMask
  parity case (tiny ResNet at init, lr steps of twice the weight norm) the
  float32 hypergradient is ~0.18 from float64 here vs ~5e-3 for torch-CPU
  float32, and ~5e-3 here too with only this layer's arithmetic in float64.
  Everything else in that case (losses, weights, BN buffers) is at torch's
  float32 spread.
  """
  use_running_average: bool | None = None
  momentum: float = 0.9            # flax convention: 0.9 == torch 0.1
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros
  unbiased_running_var: bool = True

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    use_ra = nn.merge_param("use_running_average", self.use_running_average,
                            use_running_average)
    feat = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable("batch_stats", "mean",
                            lambda s: jnp.zeros(s, jnp.float32), (feat,))
    ra_var = self.variable("batch_stats", "var",
                           lambda s: jnp.ones(s, jnp.float32), (feat,))
    stat_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
    xs = x.astype(stat_dtype)
    if use_ra:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean = jnp.mean(xs, axes)
      var = jnp.mean(jnp.square(xs - mean), axes)
      if not self.is_initializing():
        n = x.size // feat
        run_var = (var * (n / (n - 1)) if self.unbiased_running_var and n > 1
                   else var)
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean)
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * run_var)
    scale = self.param("scale", self.scale_init, (feat,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (feat,), self.param_dtype)
    y = (xs - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype or jnp.result_type(x, scale))


class BasicBlock(nn.Module):
  """``ReLU(BN(conv3x3(ReLU(BN(conv3x3(x, stride))))) + shortcut(x))``."""
  features: int
  strides: int = 1
  conv: Any = nn.Conv
  norm: Any = TorchBatchNorm
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.features, (3, 3), (self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), padding=((1, 1), (1, 1)),
                  name="conv2")(y)
    y = self.norm(name="bn2",
                  scale_init=(nn.initializers.zeros if self.zero_init_residual
                              else nn.initializers.ones))(y)
    if residual.shape != y.shape:
      residual = self.conv(self.features, (1, 1),
                           (self.strides, self.strides), padding="VALID",
                           name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_bn")(residual)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """ResNet v1.5 bottleneck (stride on the 3x3 conv), expansion 4."""
  features: int
  strides: int = 1
  conv: Any = nn.Conv
  norm: Any = TorchBatchNorm
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.features, (1, 1), padding="VALID", name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), (self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.features * 4, (1, 1), padding="VALID", name="conv3")(y)
    y = self.norm(name="bn3",
                  scale_init=(nn.initializers.zeros if self.zero_init_residual
                              else nn.initializers.ones))(y)
    if residual.shape != y.shape:
      residual = self.conv(self.features * 4, (1, 1),
                           (self.strides, self.strides), padding="VALID",
                           name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet trunk; ``__call__(x, train) -> (B, F)`` pooled float32 features.

  Attributes:
    stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    block: ``"basic"`` or ``"bottleneck"``.
    width: channels of the first stage (64); stage ``i`` has ``width * 2**i``.
    stem: ``"cifar"`` (3x3/1, no max-pool) or ``"imagenet"`` (7x7/2 + pool).
    stem_relu: apply ReLU after the stem BN. The MetaMask reference omits it
      (its quirk; set False for parity); the textbook network has it.
    init_scheme: ``"pytorch"`` or ``"kaiming_fan_out"`` conv kernel init.
    zero_init_residual: zero-init the last BN scale of each residual branch.
    bn_momentum, bn_eps: flax BatchNorm momentum (0.9 == torch 0.1), eps.
    bn_unbiased_var: torch's unbiased running variance (see module doc).
    dtype: compute dtype of the convolutions (params stay float32).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "cifar"
  stem_relu: bool = True
  init_scheme: str = "pytorch"
  zero_init_residual: bool = False
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  bn_unbiased_var: bool = True
  dtype: Any = jnp.float32

  @property
  def num_features(self) -> int:
    mult = 1 if self.block == "basic" else 4
    return self.width * 2 ** (len(self.stage_sizes) - 1) * mult

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=kernel_init_by_name(self.init_scheme))
    norm = functools.partial(TorchBatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_eps,
                             dtype=self.dtype,
                             unbiased_running_var=self.bn_unbiased_var)
    if self.block == "basic":
      block_cls = BasicBlock
    elif self.block == "bottleneck":
      block_cls = Bottleneck
    else:
      raise ValueError(f"unknown block {self.block!r}")
    x = jnp.asarray(x, self.dtype)
    if self.stem == "cifar":
      x = conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name="stem_conv")(x)
      x = norm(name="stem_bn")(x)
      if self.stem_relu:
        x = nn.relu(x)
    elif self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
               name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"unknown stem {self.stem!r}")
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(self.width * 2 ** i, strides, conv=conv, norm=norm,
                      zero_init_residual=self.zero_init_residual,
                      name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x.astype(jnp.promote_types(x.dtype, jnp.float32)),
                 axis=(1, 2))
    return x.reshape(x.shape[0], -1)


def resnet18(**kw) -> ResNet:
  kw.setdefault("stage_sizes", (2, 2, 2, 2))  # an explicit override wins
  return ResNet(block="basic", **kw)


def resnet34(**kw) -> ResNet:
  kw.setdefault("stage_sizes", (3, 4, 6, 3))  # an explicit override wins
  return ResNet(block="basic", **kw)


def resnet50(**kw) -> ResNet:
  kw.setdefault("stage_sizes", (3, 4, 6, 3))  # an explicit override wins
  return ResNet(block="bottleneck", **kw)


_DEPTHS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def build_resnet(name: str = "resnet18", **kw) -> ResNet:
  """``build_resnet("resnet18", stem="cifar", ...)``; ``name`` may also be
  ``"resnet_tiny"`` (stages (1, 1), width 8: for tests)."""
  if name == "resnet_tiny":
    return ResNet(stage_sizes=kw.pop("stage_sizes", (1, 1)),
                  width=kw.pop("width", 8), **kw)
  if name not in _DEPTHS:
    raise ValueError(f"unknown backbone {name!r}; known: "
                     f"{sorted(_DEPTHS) + ['resnet_tiny']}")
  return _DEPTHS[name](**kw)


class ResNetClassifier(nn.Module):
  """Fine-tuning / probing model: ``encoder`` (a :class:`ResNet`) -> optional
  fixed per-dimension feature scale -> Dense head.

  Called as ``apply({"params": p, "batch_stats": s}, batch, train=bool)``
  with ``batch["image"]`` uint8 NHWC (or an array); images are converted to
  float and normalised with ``mean``/``std`` (no augmentation here). Params
  are ``{"encoder": ..., "head": ...}`` so a pretrained backbone stored under
  ``params["encoder"]`` drops in.
  """
  encoder: ResNet
  num_outputs: int
  mean: Sequence[float] = IMAGENET_MEAN
  std: Sequence[float] = IMAGENET_STD
  feature_scale: Any = None   # e.g. a learned MetaMask mask, (F,) constant

  @nn.compact
  def __call__(self, batch, train: bool = False):
    images = batch["image"] if isinstance(batch, dict) else batch
    x = jnp.asarray(images)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(
        jnp.float32)
    x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
    h = self.encoder(x, train=train)
    if self.feature_scale is not None:
      h = h * jnp.asarray(self.feature_scale, h.dtype)
    return nn.Dense(self.num_outputs, name="head")(h)


__all__ = ["ResNet", "TorchBatchNorm", "BasicBlock", "Bottleneck", "resnet18",
           "resnet34", "resnet50", "build_resnet", "ResNetClassifier",
           "torch_default_kernel_init", "kaiming_fan_out", "dtype_from_name"]
