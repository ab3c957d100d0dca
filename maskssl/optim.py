"""Optimisers and learning-rate schedules from ``config.optim``.

Fields (all overridable from the command line):
  name          "adamw" (default) | "sgd" | "adam"
  lr            peak learning rate
  schedule      "cosine" (linear warm-up from 0, cosine to ``end_lr``) |
                "constant" (no warm-up, as the HF Trainer's constant) |
                "warmup_constant" | "linear"
  warmup_steps  int (or ``warmup_fraction`` of total steps if > 0)
  end_lr        final lr of cosine/linear (default 0)
  weight_decay  decoupled weight decay (AdamW) / L2 added to grads (SGD)
  no_decay_names  extra parameter names (any path component) without decay;
                biases and normalisation ``scale``/``bias`` never decay
  clip_norm     global-norm clipping (0 = off)
  b1, b2, eps   Adam moments;  momentum, nesterov for SGD
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import ml_collections
import optax
from maskssl.config_utils import cfg_get

_NEVER_DECAY = ("bias", "scale")


_get = cfg_get


def default_optim_config(**overrides) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-4, schedule="cosine", warmup_steps=0,
      warmup_fraction=0.0, end_lr=0.0, weight_decay=0.01, no_decay_names=(),
      clip_norm=1.0, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9,
      nesterov=False))
  cfg.update(overrides)
  return cfg


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  lr = float(_get(cfg, "lr", 1e-4))
  kind = _get(cfg, "schedule", "cosine")
  warmup = int(_get(cfg, "warmup_steps", 0))
  frac = float(_get(cfg, "warmup_fraction", 0.0))
  if frac > 0:
    warmup = int(round(frac * total_steps))
  warmup = min(warmup, max(total_steps - 1, 0))
  end_lr = float(_get(cfg, "end_lr", 0.0))
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "warmup_constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)),
         optax.constant_schedule(lr)], [warmup])
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1), end_value=end_lr)
  if kind == "linear":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)),
         optax.linear_schedule(lr, end_lr, max(total_steps - warmup, 1))],
        [warmup])
  raise ValueError(f"Unknown optim.schedule {kind!r}; use cosine, constant, "
                   "warmup_constant or linear")


def decay_mask(params: Any, no_decay_names: Sequence[str] = ()) -> Any:
  """True for leaves that get weight decay (kernels, embeddings, latents)."""
  skip = set(no_decay_names)

  def keep(path, _):
    names = [getattr(p, "key", getattr(p, "name", str(p))) for p in path]
    if names and names[-1] in _NEVER_DECAY:
      return False
    return not any(str(n) in skip for n in names)

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg, total_steps: int,
                   lr_scale: Any = None) -> optax.GradientTransformation:
  """The optimiser for ``config.optim``; ``lr_scale`` is an optional pytree of
  per-parameter learning-rate multipliers (e.g. layer-wise decay)."""
  name = _get(cfg, "name", "adamw")
  schedule = make_schedule(cfg, total_steps)
  wd = float(_get(cfg, "weight_decay", 0.0))
  mask = lambda p: decay_mask(p, tuple(_get(cfg, "no_decay_names", ())))
  parts = []
  clip = float(_get(cfg, "clip_norm", 0.0))
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if name in ("adamw", "adam"):
    parts.append(optax.scale_by_adam(
        b1=float(_get(cfg, "b1", 0.9)), b2=float(_get(cfg, "b2", 0.999)),
        eps=float(_get(cfg, "eps", 1e-8))))
    if name == "adamw" and wd > 0:
      parts.append(optax.add_decayed_weights(wd, mask))
  elif name == "sgd":
    if wd > 0:
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(optax.trace(decay=float(_get(cfg, "momentum", 0.9)),
                             nesterov=bool(_get(cfg, "nesterov", False))))
  else:
    raise ValueError(f"Unknown optim.name {name!r}; use adamw, adam or sgd")
  if lr_scale is not None:
    parts.append(optax.GradientTransformation(
        lambda p: optax.EmptyState(),
        lambda u, s, p=None: (jax.tree.map(lambda g, k: g * k, u, lr_scale),
                              s)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
