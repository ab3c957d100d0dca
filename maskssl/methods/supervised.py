"""Supervised fine-tuning of a method's classifier, as a Method of the
shared loop (so fine-tuning gets the same sharding, checkpoints, resume and
NaN guard as pretraining).

Tasks: ``binary`` (one logit, BCE-with-logits), ``multiclass`` (CE),
``regression`` (MSE on one output), ``binary_mse`` (the SMA chemistry quirk:
MSE on one logit, scored with sigmoid), ``multilabel`` (one logit per binary
task, BCE averaged over the labels present: NaN labels are missing and
masked, as MoleculeNet's Tox21 / ClinTox protocol does).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from maskssl.methods.base import Method, gradient_step, optax_state

TASKS = ("binary", "multiclass", "regression", "binary_mse", "multilabel")


def num_outputs_for(task: str, num_classes: int) -> int:
  """Output width: classes (multiclass), tasks (multilabel), else one."""
  return num_classes if task in ("multiclass", "multilabel") else 1


def supervised_loss(task: str, out: jax.Array, label: jax.Array):
  out = out.astype(jnp.float32)
  if task == "binary":
    return optax.sigmoid_binary_cross_entropy(
        out[:, 0], label.astype(jnp.float32)).mean()
  if task == "multiclass":
    return optax.softmax_cross_entropy_with_integer_labels(
        out, label.astype(jnp.int32)).mean()
  if task in ("regression", "binary_mse"):
    return jnp.mean((out[:, 0] - label.astype(jnp.float32)) ** 2)
  if task == "multilabel":
    label = label.astype(jnp.float32)
    present = ~jnp.isnan(label)
    ce = optax.sigmoid_binary_cross_entropy(out, jnp.where(present, label, 0))
    return jnp.sum(jnp.where(present, ce, 0.0)) / jnp.maximum(
        present.sum(), 1)
  raise ValueError(f"unknown task {task!r}; use one of {TASKS}")


class Supervised(Method):
  """Trains ``module`` (a method's ``classifier``) on labelled batches."""

  name = "supervised"

  def __init__(self, module, task: str, tx: optax.GradientTransformation,
               pretrained: dict | None = None, schedule=None):
    super().__init__(None)
    self.schedule = schedule
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    self.module, self.task, self.tx = module, task, tx
    self.pretrained = pretrained  # {"params": {...}, "batch_stats": {...}}

  def _variables(self, rng, batch):
    return self.module.init({"params": rng, "dropout": rng}, batch,
                            train=False)

  def init_state(self, rng, batch) -> Any:
    variables = dict(self._variables(rng, batch))
    params = dict(variables["params"])
    stats = dict(variables.get("batch_stats", {}))
    if self.pretrained is not None:
      for coll, tree in (("params", params), ("batch_stats", stats)):
        src = self.pretrained.get(coll) or {}
        for key, value in src.items():
          if key not in tree:
            continue
          if jax.tree.structure(tree[key]) != jax.tree.structure(value):
            raise ValueError(
                f"pretrained {coll}[{key!r}] does not match the classifier's "
                "structure (different model config?)")
          tree[key] = jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype),
                                   value, tree[key])
    extra = {"batch_stats": stats} if stats else {}
    return optax_state(params, self.tx, **extra)

  def apply(self, state, batch, train: bool, rng=None):
    variables = {"params": state["params"]}
    if "batch_stats" in state:
      variables["batch_stats"] = state["batch_stats"]
    rngs = {"dropout": rng} if rng is not None else {}
    if train and "batch_stats" in state:
      out, upd = self.module.apply(variables, batch, train=True, rngs=rngs,
                                   mutable=["batch_stats"])
      return out, upd["batch_stats"]
    return self.module.apply(variables, batch, train=train, rngs=rngs), None

  def train_step(self, state, batch, rng):
    def loss_fn(params):
      out, stats = self.apply(dict(state, params=params), batch, True, rng)
      return supervised_loss(self.task, out, batch["label"]), {"_stats": stats}

    new_state, metrics = gradient_step(state, self.tx, loss_fn)
    stats = metrics.pop("_stats")
    if stats is not None:
      new_state["batch_stats"] = stats
    return new_state, metrics

  def predict(self, state, batch):
    out, _ = self.apply(state, batch, False)
    out = out.astype(jnp.float32)
    if self.task in ("binary", "binary_mse"):
      return jax.nn.sigmoid(out[:, 0]) if self.task == "binary" else out[:, 0]
    if self.task == "multiclass":
      return jax.nn.softmax(out, -1)
    if self.task == "multilabel":
      return jax.nn.sigmoid(out)
    return out[:, 0]
