"""The contract between a self-supervised method and the shared train loop.

Every method (SMA, MetaMask, MSCN, SD-MAE, and the supervised fine-tuning used
by evaluators) is a :class:`Method`. The loop in :mod:`maskssl.train` owns
everything that is not method-specific: data order, sharding, jit + donation,
checkpoints, metrics, NaN guards, resume, evaluators. A method owns:

* ``init_state(rng, batch)``: build the *train state*, a plain pytree (dict)
  that MUST contain ``"step"`` (int32 scalar) and ``"params"``; anything else
  (``opt_state``, ``batch_stats``, a learned mask, a second optimiser's
  state, ...) is the method's business. ``batch`` is one (host-local, numpy)
  example batch, used only for shapes: the loop calls ``init_state`` under
  ``jax.eval_shape`` first (shape-first init) and then under ``jax.jit`` with
  the target shardings, so it must be a pure function.
* ``train_step(state, batch, rng)``: ONE pure, jittable step returning
  ``(new_state, metrics)`` where metrics is a flat dict of float32 scalars
  (must include ``"loss"``). The loop jits it once with ``donate_argnums=0``;
  ``rng`` is already folded with the step number.
* ``tx`` / ``schedule``: the optimiser and its learning-rate schedule, as
  :func:`maskssl.optim.make` returns them; the loop logs ``schedule(step)``
  as ``lr``.
* ``predict_fns()``: the functions below by name, for evaluators (which
  never see the method itself).
* ``encode(state, batch)``: pooled ``(B, D)`` float32 features used by the kNN
  and linear-probe evaluators (eval mode, no masking). Optional.
* ``classifier(num_outputs)``: a ``flax.linen`` module for full fine-tuning,
  called as ``module.apply({"params": p, ...}, batch, train=bool, rngs=...)``
  and returning ``(B, num_outputs)`` logits. Its params dict MUST hold the
  pretrained backbone under the same key as the pretraining params
  (``"encoder"``), so the fine-tune evaluator starts from
  ``state["params"]["encoder"]`` (or from scratch for the baseline). Modules
  with BatchNorm keep ``batch_stats`` the same way. Optional.

Methods are constructed from the whole ``ConfigDict`` and must not read
files or touch devices in ``__init__``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

PyTree = Any
Batch = Mapping[str, Any]
Metrics = dict


class Method:
  """Base class; subclasses override ``init_state`` and ``train_step``."""

  name: str = "base"
  tx: optax.GradientTransformation | None = None
  schedule: Callable[[Any], Any] | None = None   # logged as ``lr``

  def __init__(self, config):
    self.config = config

  # ---- required -----------------------------------------------------------
  def init_state(self, rng: jax.Array, batch: Batch) -> PyTree:
    raise NotImplementedError(f"{type(self).__name__}.init_state")

  def train_step(self, state: PyTree, batch: Batch, rng: jax.Array):
    raise NotImplementedError(f"{type(self).__name__}.train_step")

  # ---- optional -----------------------------------------------------------
  def encode(self, state: PyTree, batch: Batch) -> jax.Array:
    raise NotImplementedError(f"{type(self).__name__} has no encode()")

  def classifier(self, num_outputs: int):
    raise NotImplementedError(f"{type(self).__name__} has no classifier()")

  def eval_step(self, state: PyTree, batch: Batch) -> Metrics:
    """Metrics on a held-out batch (no parameter update). Optional."""
    raise NotImplementedError(f"{type(self).__name__} has no eval_step()")

  # names an evaluator may ask for (see predict_fns)
  PREDICT_FNS = ("encode", "classifier", "eval_step", "reconstruct",
                 "mask_values", "layerwise_lr_scales")

  def predict_fns(self) -> dict[str, Callable]:
    """The pure functions evaluators use, by name: ``encode(state, batch)``,
    ``classifier(num_outputs)`` (a module), ``eval_step(state, batch)``,
    ``reconstruct(state, images, rng)``, ``mask_values(state)``,
    ``layerwise_lr_scales(params, decay)``: those this method defines."""
    fns = {}
    for name in self.PREDICT_FNS:
      impl = getattr(type(self), name, None)
      if impl is not None and impl is not getattr(Method, name, None):
        fns[name] = getattr(self, name)
    return fns


def optax_state(params: PyTree, tx: optax.GradientTransformation,
                **extra) -> dict:
  """The common train state: step, params, opt_state (+ method extras)."""
  return dict(step=jnp.zeros((), jnp.int32), params=params,
              opt_state=tx.init(params), **extra)


def gradient_step(state: dict, tx: optax.GradientTransformation,
                  loss_fn: Callable[..., tuple[jax.Array, Metrics]],
                  *args) -> tuple[dict, Metrics]:
  """``value_and_grad`` of ``loss_fn(params, *args) -> (loss, metrics)`` and
  one optax update; returns the new state and metrics (+ grad_norm)."""
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], *args)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  new_state = dict(state, step=state["step"] + 1, params=params,
                   opt_state=opt_state)
  return new_state, metrics
