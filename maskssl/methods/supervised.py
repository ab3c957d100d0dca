"""Supervised fine-tuning of a method's classifier, as a Method of the
shared loop (so fine-tuning gets the same sharding, checkpoints, resume and
NaN guard as pretraining).

Tasks: ``binary`` (one logit, BCE-with-logits), ``multiclass`` (CE),
``regression`` (MSE on one output), ``binary_mse`` (the SMA chemistry quirk:
MSE on one logit, scored with sigmoid), ``multilabel`` (one logit per binary
task, BCE averaged over the labels present: NaN labels are missing and
masked, as MoleculeNet's Tox21 / ClinTox protocol does),
``binary_softmax`` (a binary label as two logits with softmax cross-entropy,
scored with P(class 1); the MAE / SD-MAE fine-tune head, main_finetune.py).

With a :class:`FinetuneAugment` (the MAE fine-tune recipe) the train step
augments the uint8 batch on device and trains ``multiclass`` /
``binary_softmax`` on the recipe's soft targets with timm's
``SoftTargetCrossEntropy``; prediction uses the recipe's eval transform.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from maskssl.constants import IMAGENET_MEAN, IMAGENET_STD
from maskssl.data import augment as aug
from maskssl.methods.base import Method, gradient_step, optax_state

TASKS = ("binary", "multiclass", "regression", "binary_mse", "multilabel",
         "binary_softmax")
SOFT_TASKS = ("multiclass", "binary_softmax")   # tasks that take soft targets


def num_outputs_for(task: str, num_classes: int) -> int:
  """Output width: classes (multiclass), tasks (multilabel), two
  (binary_softmax), else one."""
  if task == "binary_softmax":
    return 2
  return num_classes if task in ("multiclass", "multilabel") else 1


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array):
  """timm ``SoftTargetCrossEntropy`` (timm/loss/cross_entropy.py):
  ``mean_b sum_k -t_bk log_softmax(x)_bk``."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.mean(jnp.sum(-targets * logp, axis=-1))


def supervised_loss(task: str, out: jax.Array, label: jax.Array,
                    soft_targets: jax.Array | None = None):
  out = out.astype(jnp.float32)
  if soft_targets is not None:
    if task not in SOFT_TASKS:
      raise ValueError(f"soft targets need a softmax task {SOFT_TASKS}, "
                       f"not {task!r}")
    return soft_target_cross_entropy(out, soft_targets)
  if task == "binary_softmax":
    return optax.softmax_cross_entropy_with_integer_labels(
        out, label.astype(jnp.int32)).mean()
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


@dataclasses.dataclass(frozen=True)
class FinetuneAugment:
  """The MAE fine-tune recipe (main_finetune.py, which SD-MAE uses), on
  device. Train: RandomResizedCrop(image_size, bicubic) + flip ->
  RandAugment -> random erasing -> Mixup / CutMix with label smoothing, giving
  [0, 1] images at ``image_size`` and soft targets. Eval: Resize + CenterCrop.
  The fields' defaults live in the fine-tune evaluator
  (:class:`maskssl.evaluators.finetune.Finetune`); see there for each one.

  The images stay un-normalised ([0, 1]; the classifier normalises): the
  erasing fill is ``mean + std * N(0, 1)`` and Mixup is affine, so the
  normalised result equals timm's normalise-then-erase-then-mix."""
  image_size: int
  num_classes: int
  rand_augment: str
  reprob: float
  mixup: float
  cutmix: float
  mixup_switch_prob: float
  mixup_prob: float
  smoothing: float
  crop_scale: Sequence[float]
  crop_ratio: Sequence[float]
  hflip: float
  eval_crop_pct: float

  def __post_init__(self):
    if self.rand_augment:
      aug.parse_rand_augment(self.rand_augment)   # a bad string fails here

  def train(self, rng, images, labels):
    """uint8 (B, H, W, 3) + int labels -> ([0, 1] (B, S, S, 3), (B, C))."""
    k_crop, k_ra, k_re, k_mix = jax.random.split(rng, 4)
    x = aug.random_resized_crop_bicubic(
        k_crop, images, self.image_size, tuple(self.crop_scale),
        tuple(self.crop_ratio), float(self.hflip))
    if self.rand_augment:
      x = aug.rand_augment(k_ra, x, **aug.parse_rand_augment(
          self.rand_augment))
    if self.reprob > 0:
      x = aug.random_erasing(k_re, x, float(self.reprob), mode="pixel",
                             mean=IMAGENET_MEAN, std=IMAGENET_STD)
    onehot = jax.nn.one_hot(labels.astype(jnp.int32), self.num_classes)
    x, targets, _ = aug.mixup_cutmix(
        k_mix, x, onehot, float(self.mixup), float(self.cutmix),
        float(self.mixup_switch_prob), float(self.mixup_prob),
        float(self.smoothing))
    return x, targets

  def eval(self, images):
    return aug.eval_resize_center_crop(images, self.image_size,
                                       float(self.eval_crop_pct))


class Supervised(Method):
  """Trains ``module`` (a method's ``classifier``) on labelled batches."""

  name = "supervised"

  def __init__(self, module, task: str, tx: optax.GradientTransformation,
               pretrained: dict | None = None, schedule=None,
               augment: FinetuneAugment | None = None):
    super().__init__(None)
    self.schedule = schedule
    if task not in TASKS:
      raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    if augment is not None and task not in SOFT_TASKS:
      raise ValueError(f"the fine-tune recipe trains a softmax on soft "
                       f"targets: task must be one of {SOFT_TASKS}, not "
                       f"{task!r}")
    self.module, self.task, self.tx = module, task, tx
    self.pretrained = pretrained  # {"params": {...}, "batch_stats": {...}}
    self.augment = augment

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
    soft = None
    if self.augment is not None:   # (no extra split without it: same rng)
      k_aug, rng = jax.random.split(rng)
      images, soft = self.augment.train(k_aug, batch["image"], batch["label"])
      batch = dict(batch, image=images)

    def loss_fn(params):
      out, stats = self.apply(dict(state, params=params), batch, True, rng)
      return (supervised_loss(self.task, out, batch["label"], soft),
              {"_stats": stats})

    new_state, metrics = gradient_step(state, self.tx, loss_fn)
    stats = metrics.pop("_stats")
    if stats is not None:
      new_state["batch_stats"] = stats
    return new_state, metrics

  def predict(self, state, batch):
    if self.augment is not None:
      batch = dict(batch, image=self.augment.eval(batch["image"]))
    out, _ = self.apply(state, batch, False)
    out = out.astype(jnp.float32)
    if self.task == "binary_softmax":
      return jax.nn.softmax(out, -1)[:, 1]
    if self.task in ("binary", "binary_mse"):
      return jax.nn.sigmoid(out[:, 0]) if self.task == "binary" else out[:, 0]
    if self.task == "multiclass":
      return jax.nn.softmax(out, -1)
    if self.task == "multilabel":
      return jax.nn.sigmoid(out)
    return out[:, 0]
