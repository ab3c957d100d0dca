"""The optimiser factory: ``config.optim`` -> ``(tx, schedule)``.

``config.optim`` is an :class:`OptimConfig` written as a dict; its fields are
the schema (an unknown key is a ConfigError). Optimisers:

  adamw / adam  optax Adam moments, decoupled weight decay (adamw only)
  sgd           PyTorch ``torch.optim.SGD`` (dampening 0): coupled decay
                ``d = g + wd p``, ``b = mu b + d``, ``p -= lr b``
  lars          optax.lars (You et al. 2017, Alg. 1); biases and norm
                params are excluded from weight decay and the trust ratio

Schedules (``schedule``): cosine (linear warm-up from 0, cosine to
``end_lr``), constant (no warm-up), warmup_constant, linear, and
cosine_epoch (per-epoch cosine without warm-up, constant within an epoch,
as ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per epoch).

Parameter groups: ``bias_lr`` gives biases and normalisation params their
own peak learning rate (same schedule shape), as the Barlow Twins recipe
(Zbontar et al. 2021, Sec. 3: LARS, lr 0.2 for weights, 0.0048 for biases
and BatchNorm).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from maskssl.config_utils import ConfigError, from_config

_NEVER_DECAY = ("bias", "scale")
NAMES = ("adamw", "adam", "sgd", "lars")
SCHEDULES = ("cosine", "constant", "warmup_constant", "linear",
             "cosine_epoch")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  name: str = "adamw"
  lr: float = 1e-4
  schedule: str = "cosine"
  warmup_steps: int = 0
  warmup_fraction: float = 0.0    # > 0: overrides warmup_steps
  end_lr: float = 0.0
  weight_decay: float = 0.0
  no_decay_names: Sequence[str] = ()  # extra names (any path component)
  decay_all: bool = False         # sgd: decay biases/norms too (torch default)
  clip_norm: float = 0.0          # global-norm clipping (0 = off)
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  momentum: float = 0.9
  nesterov: bool = False
  trust_coefficient: float = 1e-3  # lars
  lars_eps: float = 0.0
  bias_lr: Optional[float] = None  # peak lr of biases and norm params
  steps_per_epoch: int = 0        # cosine_epoch (0: the caller's value)
  epochs: int = 0                 # cosine_epoch (0: ceil(total / spe))


def optim_config(cfg=None, **overrides) -> OptimConfig:
  """An :class:`OptimConfig` from a dict / ConfigDict (or one already)."""
  if isinstance(cfg, OptimConfig):
    return dataclasses.replace(cfg, **overrides)
  c = from_config(OptimConfig, cfg, "config.optim", **overrides)
  if c.name not in NAMES:
    raise ConfigError(f"unknown optim.name {c.name!r}; use one of {NAMES}")
  if c.schedule not in SCHEDULES:
    raise ValueError(f"Unknown optim.schedule {c.schedule!r}; use one of "
                     f"{SCHEDULES}")
  return c


def cosine_epoch_schedule(lr0: float, steps_per_epoch: int, epochs: int):
  """Per-epoch cosine without warm-up, constant within an epoch."""
  spe, total = max(int(steps_per_epoch), 1), max(int(epochs), 1)

  def fn(step):
    epoch = jnp.asarray(step) // spe
    return lr0 * 0.5 * (1.0 + jnp.cos(jnp.pi * epoch / total))
  return fn


def _schedule(c: OptimConfig, lr: float, total_steps: int,
              steps_per_epoch: int = 0) -> optax.Schedule:
  warmup = c.warmup_steps
  if c.warmup_fraction > 0:
    warmup = int(round(c.warmup_fraction * total_steps))
  warmup = min(int(warmup), max(total_steps - 1, 0))
  end_lr = c.end_lr
  if c.schedule == "constant":
    return optax.constant_schedule(lr)
  if c.schedule == "warmup_constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)),
         optax.constant_schedule(lr)], [warmup])
  if c.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1), end_value=end_lr)
  if c.schedule == "linear":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)),
         optax.linear_schedule(lr, end_lr, max(total_steps - warmup, 1))],
        [warmup])
  spe = c.steps_per_epoch or steps_per_epoch or max(total_steps, 1)
  epochs = c.epochs or max(1, math.ceil(max(total_steps, 1) / spe))
  return cosine_epoch_schedule(lr, spe, epochs)


def decay_mask(params: Any, no_decay_names: Sequence[str] = ()) -> Any:
  """True for leaves that get weight decay (kernels, embeddings, latents)."""
  skip = set(no_decay_names)

  def keep(path, _):
    names = [getattr(p, "key", getattr(p, "name", str(p))) for p in path]
    if names and names[-1] in _NEVER_DECAY:
      return False
    return not any(str(n) in skip for n in names)

  return jax.tree_util.tree_map_with_path(keep, params)


def _scale_tree(scale_fn: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Multiply updates by a per-leaf factor pytree ``scale_fn(updates)``."""
  return optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda u, s, p=None: (jax.tree.map(lambda g, k: g * k, u, scale_fn(u)),
                            s))


def make(cfg, total_steps: int, *, steps_per_epoch: int = 0,
         lr_scale: Any = None
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(tx, schedule)`` for ``config.optim``; ``schedule`` is the weights'
  learning rate (logged as ``lr``). ``lr_scale``: an optional pytree of
  per-parameter lr multipliers (layer-wise decay); ``steps_per_epoch``
  sizes ``cosine_epoch``."""
  c = optim_config(cfg)
  total_steps = max(int(total_steps), 1)
  schedule = _schedule(c, c.lr, total_steps, steps_per_epoch)
  mask = lambda p: decay_mask(p, tuple(c.no_decay_names))  # noqa: E731
  parts = []
  if c.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(c.clip_norm))
  groups = None
  if c.bias_lr is not None and c.lr:
    ratio = float(c.bias_lr) / float(c.lr)
    groups = _scale_tree(lambda u: jax.tree.map(
        lambda d: 1.0 if d else ratio, mask(u)))
  if c.name == "lars":
    parts += [optax.add_decayed_weights(c.weight_decay, mask),
              optax.masked(optax.scale_by_trust_ratio(
                  trust_coefficient=c.trust_coefficient, eps=c.lars_eps),
                  mask)]
    parts += [groups] if groups else []
    parts += [optax.scale_by_learning_rate(schedule),
              optax.trace(decay=c.momentum, nesterov=c.nesterov)]
    return optax.chain(*parts), schedule
  if c.name in ("adamw", "adam"):
    parts.append(optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps))
    if c.name == "adamw" and c.weight_decay > 0:
      parts.append(optax.add_decayed_weights(c.weight_decay, mask))
  else:  # sgd
    if c.weight_decay > 0:
      parts.append(optax.add_decayed_weights(
          c.weight_decay, None if c.decay_all else mask))
    parts.append(optax.trace(decay=c.momentum, nesterov=c.nesterov))
  parts += [groups] if groups else []
  if lr_scale is not None:
    parts.append(_scale_tree(lambda u: lr_scale))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


def momentum_trace(opt_state, params):
  """The momentum buffer inside an sgd / lars state (zeros without one)."""
  try:
    return optax.tree_utils.tree_get(opt_state, "trace")
  except KeyError:
    return jax.tree.map(jnp.zeros_like, params)
