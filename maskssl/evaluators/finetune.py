"""Full fine-tuning evaluator (the SMA reference protocol, spec §5.2).

For every ``num_labels`` N and seed, fine-tune ``method.classifier`` on the
first N examples of the labelled ``train`` split — starting from the
pretrained encoder (``init="pretrained"``) and/or from scratch
(``init="scratch"``, the baseline) — with the shared train loop, pick the
step with the best validation score, and report test scores at that step
("best-val") and at the last step ("last"). Each run lives in
``<workdir>/<name>/n<N>_<init>_seed<s>/`` with its own checkpoints, metrics
and ``result.json``; finished runs are not repeated when the evaluation is
restarted.

eval_config fields: ``num_labels`` (tuple; 0 = the whole pool), ``seeds``,
``inits``, ``batch_size``, ``total_steps`` or ``num_epochs``, ``eval_every``,
``optim`` (as config.optim), ``task`` ("auto" = from the data set),
``model_overrides`` (e.g. fine-tuning dropout), ``eval_batch_size``,
``data_overrides`` (fields replacing ``config.data`` for this evaluator,
e.g. ``{"task": "esol"}``: one run evaluates several downstream tasks),
``select_metric`` (e.g. "spearman"; default: auc / accuracy / rmse by task;
rmse is minimised, every other metric maximised).

Image classifiers can train with the MAE fine-tune recipe (MAE
main_finetune.py, used by SD-MAE), on device inside the jitted train step:
``augment`` ("none": the batch as it is, default; "reference":
RandomResizedCrop(``crop_scale``, ``crop_ratio``, bicubic) + flip ``hflip``
-> RandAugment ``rand_augment`` (a timm string, "" = off) -> random erasing
with ``reprob`` (per-pixel normal noise) -> Mixup ``mixup`` / CutMix
``cutmix`` alphas with ``mixup_switch_prob`` and ``mixup_prob`` -> label
smoothing ``smoothing``, soft-target cross-entropy; test and validation
images go through Resize(int(size / ``eval_crop_pct``)) + CenterCrop(size),
``eval_crop_pct`` 0 = MAE's 224/256). The recipe fields are read only with
``augment="reference"``; their defaults are the reference values.
``two_class`` (default False) trains a binary task as two logits with
softmax cross-entropy (task ``binary_softmax``, AUC from P(class 1)), as the
reference does; the recipe needs it (or a multiclass task).
"""
from __future__ import annotations

import copy
import json
import os

import jax
import ml_collections
import numpy as np

from maskssl import optim as optim_lib
from maskssl import parallel
from maskssl import train as train_lib
from maskssl.config_utils import ConfigError
from maskssl.data import augment as aug_lib
from maskssl.data import load_split
from maskssl.data.base import DataError
from maskssl.evaluators import common, scores
from maskssl.methods import get_method
from maskssl.methods.supervised import (SOFT_TASKS, FinetuneAugment,
                                        Supervised, num_outputs_for)

AUGMENTS = ("none", "reference")
# FinetuneAugment fields read from the evaluator's config
_RECIPE_FIELDS = ("rand_augment", "reprob", "mixup", "cutmix",
                  "mixup_switch_prob", "mixup_prob", "smoothing",
                  "crop_scale", "crop_ratio", "hflip", "eval_crop_pct")


def _selection_key(task: str) -> tuple[str, float]:
  """(metric, sign) used to pick the best validation step."""
  if task in ("binary", "binary_mse", "multilabel", "binary_softmax"):
    return "auc", 1.0
  if task == "multiclass":
    return "accuracy", 1.0
  return "rmse", -1.0


def _finetune_config(config, ecfg) -> ml_collections.ConfigDict:
  ft = copy.deepcopy(config)
  with ft.unlocked():
    for k, v in (ecfg.get("model_overrides", None) or {}).items():
      ft.model[k] = v
  return ft


def run_one(config, ecfg, fns, pretrained, n_labels: int,
            init: str, seed: int, workdir: str, datasets: dict, task: str,
            mesh) -> dict:
  out_path = os.path.join(workdir, "result.json")
  if os.path.exists(out_path):
    with open(out_path) as f:
      return json.load(f)
  train_ds = datasets["train"]
  pool = len(train_ds)
  n = pool if n_labels in (0, None) else int(n_labels)
  if n > pool:
    raise DataError(f"num_labels={n} exceeds the labelled pool of {pool} "
                    "examples (data.train_pool_size)")
  train_ds = train_ds.take(np.arange(n))
  ndev = mesh.devices.size
  bs = min(int(ecfg.batch_size), n - n % ndev)
  if bs <= 0:
    raise DataError(f"num_labels={n} is smaller than the {ndev} devices")
  num_classes = int(train_ds.meta.get("num_classes", 2))
  module = common.require(fns, "classifier", "finetune")(
      num_outputs_for(task, num_classes))
  augment = _recipe(ecfg, module, task, num_classes, train_ds)
  lc_cfg = ml_collections.ConfigDict(dict(
      batch_size=bs, seed=seed,
      total_steps=int(ecfg.get("total_steps", 0) or 0),
      num_epochs=float(ecfg.get("num_epochs", 0) or 0),
      log_every=int(ecfg.get("log_every", 100)),
      checkpoint_every=10 ** 9, keep_checkpoints=1,
      parallel=config.get("parallel", {})))
  lc = train_lib.loop_config(lc_cfg, n, stage="finetune",
                             verbose=bool(ecfg.get("verbose", True)))
  lr_scale = None
  decay = float(ecfg.get("layer_decay", 0.0) or 0.0)
  if decay > 0:
    if "layerwise_lr_scales" not in fns:
      raise ValueError("evals.*.layer_decay is set but the method has no "
                       "layer-wise lr decay")
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(
        lambda b: module.init({"params": key, "dropout": key}, b,
                              train=False),
        train_ds.batch(np.arange(bs)))["params"]
    lr_scale = fns["layerwise_lr_scales"](shapes, decay)
  tx, schedule = optim_lib.make(ecfg.optim, lc.total_steps,
                                lr_scale=lr_scale)
  sup = Supervised(module, task, tx,
                   pretrained if init == "pretrained" else None, schedule,
                   augment=augment)
  ebs = int(ecfg.get("eval_batch_size", 256))

  def evaluate(split):
    preds = common.apply_in_batches(sup.predict, _state_ref["s"],
                                    datasets[split], ebs, mesh)
    return scores.task_scores(task, datasets[split].arrays["label"], preds)

  _state_ref = {}
  key, sign = _selection_key(task)
  if ecfg.get("select_metric", ""):
    key = ecfg.select_metric
    sign = -1.0 if key == "rmse" else 1.0
  best = {"score": -np.inf}

  def hook(step, state):
    _state_ref["s"] = state
    val = evaluate("val")
    test = evaluate("test")
    if sign * val[key] > best["score"]:
      best.update(score=sign * val[key], step=step, val=val, test=test)
    return {**{f"val_{k}": v for k, v in val.items()},
            **{f"test_{k}": v for k, v in test.items()}}

  every = int(ecfg.get("eval_every", 0) or 0) or lc.total_steps
  _, summary = train_lib.train_loop(
      sup, train_ds, lc, workdir, mesh=mesh,
      run_meta=dict(n_labels=n, init=init), hooks=[(every, hook)])
  last = summary["hook_results"][-1]
  result = dict(
      n_labels=n, init=init, seed=seed, steps=lc.total_steps,
      best_step=int(best.get("step", lc.total_steps)),
      **{f"best_{k}": v for k, v in best.get("test", {}).items()},
      **{f"last_{k[5:]}": v for k, v in last.items()
         if k.startswith("test_")},
      **{f"last_val_{k[4:]}": v for k, v in last.items()
         if k.startswith("val_")})
  if jax.process_index() == 0:
    with open(out_path, "w") as f:
      json.dump(result, f, indent=2)
  return result


def _recipe(ecfg, module, task: str, num_classes: int, train_ds):
  """The :class:`FinetuneAugment` of ``augment="reference"``, else None."""
  if ecfg.get("augment", "none") != "reference":
    return None
  if task not in SOFT_TASKS:
    raise ConfigError(
        f"evals.*.augment='reference' trains a softmax on soft targets; the "
        f"task is {task!r}: set two_class=True for a binary task")
  size = getattr(module, "image_size", None)
  if size is None or "image" not in train_ds.arrays:
    raise ConfigError("evals.*.augment='reference' needs image data and an "
                      "image classifier (with an image_size)")
  return FinetuneAugment(
      image_size=int(size), num_classes=2 if task == "binary_softmax"
      else num_classes, **{k: ecfg[k] for k in _RECIPE_FIELDS})


class Finetune:
  """Fine-tune sweeps (see the module doc for the keyword arguments)."""

  def __init__(self, fns, config, *, num_labels, batch_size, optim,
               seeds=(0,), inits=("pretrained", "scratch"),
               total_steps: int = 0, num_epochs: float = 0.0,
               eval_every: int = 0, log_every: int = 100,
               task: str = "auto", model_overrides=None,
               eval_batch_size: int = 256, data_overrides=None,
               select_metric: str = "", layer_decay: float = 0.0,
               verbose: bool = True, two_class: bool = False,
               augment: str = "none",
               rand_augment: str = "rand-m9-mstd0.5-inc1",
               reprob: float = 0.25, mixup: float = 0.8, cutmix: float = 1.0,
               mixup_switch_prob: float = 0.5, mixup_prob: float = 1.0,
               smoothing: float = 0.1, crop_scale=(0.08, 1.0),
               crop_ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
               eval_crop_pct: float = 0.0):
    optim_lib.optim_config(optim)   # unknown keys fail here
    if augment not in AUGMENTS:
      raise ConfigError(f"evals.finetune.augment={augment!r}; use one of "
                        f"{AUGMENTS}")
    if rand_augment:
      try:
        aug_lib.parse_rand_augment(rand_augment)
      except ValueError as e:
        raise ConfigError(f"evals.finetune.rand_augment: {e}") from e
    if augment == "reference" and task not in ("auto", *SOFT_TASKS) and not (
        task == "binary" and two_class):
      raise ConfigError(
          f"evals.finetune.augment='reference' trains a softmax on soft "
          f"targets; task={task!r} needs two_class=True (binary) or a "
          f"multiclass task")
    for k, v in dict(reprob=reprob, mixup_switch_prob=mixup_switch_prob,
                     mixup_prob=mixup_prob, smoothing=smoothing,
                     hflip=hflip).items():
      if not 0.0 <= float(v) <= 1.0:
        raise ConfigError(f"evals.finetune.{k}={v} must be in [0, 1]")
    self.config = config
    self.ecfg = ml_collections.ConfigDict(dict(
        num_labels=tuple(num_labels), batch_size=batch_size, optim=optim,
        seeds=tuple(seeds), inits=tuple(inits), total_steps=total_steps,
        num_epochs=num_epochs, eval_every=eval_every, log_every=log_every,
        task=task, model_overrides=model_overrides,
        eval_batch_size=eval_batch_size, data_overrides=data_overrides,
        select_metric=select_metric, layer_decay=layer_decay,
        verbose=verbose, two_class=bool(two_class), augment=augment,
        rand_augment=str(rand_augment), reprob=float(reprob),
        mixup=float(mixup), cutmix=float(cutmix),
        mixup_switch_prob=float(mixup_switch_prob),
        mixup_prob=float(mixup_prob), smoothing=float(smoothing),
        crop_scale=tuple(float(v) for v in crop_scale),
        crop_ratio=tuple(float(v) for v in crop_ratio), hflip=float(hflip),
        eval_crop_pct=float(eval_crop_pct)))
    self.fns = fns
    if model_overrides:   # e.g. fine-tuning dropout: the method rebuilt
      self.fns = get_method(_finetune_config(config, self.ecfg)).predict_fns()

  def run(self, state, workdir) -> dict:
    return _run(self.config, self.ecfg, self.fns, state, workdir)


def _run(config, ecfg, fns, state, workdir) -> dict:
  """Fine-tune sweeps; returns flat ``{metric: value}`` with mean/std."""
  mesh = parallel.make_mesh()
  data_cfg = config.data
  if ecfg.get("data_overrides", None):
    data_cfg = copy.deepcopy(config.data)
    with data_cfg.unlocked():
      data_cfg.update(dict(ecfg.data_overrides))
  datasets = {s: load_split(data_cfg, s) for s in ("train", "val", "test")}
  task = ecfg.get("task", "auto")
  if task == "auto":
    task = datasets["train"].meta.get("task", "binary")
  if ecfg.get("two_class", False) and task == "binary":
    task = "binary_softmax"      # two logits, softmax (MAE main_finetune.py)
  pretrained = None
  if state is not None:
    pretrained = {"params": train_lib.host_numpy(
        {"encoder": state["params"]["encoder"]})}
    if "batch_stats" in state and "encoder" in state["batch_stats"]:
      pretrained["batch_stats"] = train_lib.host_numpy(
          {"encoder": state["batch_stats"]["encoder"]})
  inits = tuple(ecfg.get("inits", ("pretrained", "scratch")))
  if state is None:
    inits = tuple(i for i in inits if i != "pretrained")
  results, flat = [], {}
  for n in tuple(ecfg.num_labels):
    for init in inits:
      runs = []
      for seed in tuple(ecfg.get("seeds", (0,))):
        sub = os.path.join(workdir, f"n{n}_{init}_seed{seed}")
        r = run_one(config, ecfg, fns, pretrained, n, init, seed, sub,
                    datasets, task, mesh)
        runs.append(r)
        results.append(r)
      metric_keys = [k for k in runs[0] if k.startswith(("best_", "last_"))
                     and k not in ("best_step",)]
      for k in metric_keys:
        m, s = scores.mean_std([r[k] for r in runs])
        flat[f"n{n}/{init}/{k}"] = m
        if len(runs) > 1:
          flat[f"n{n}/{init}/{k}_std"] = s
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(dict(task=task, runs=results, summary=flat), f, indent=2)
  return flat
