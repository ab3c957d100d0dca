"""Evaluators (big_vision style), built from ``config.evals``.

``config.evals`` maps a display name to a ConfigDict with a ``type`` field
naming the evaluator class; the other keys are its constructor's keyword
arguments (an unknown key is a ConfigError), except ``every`` (> 0: also run
every N pretraining steps, as a train-loop hook), ``every_epochs`` (> 0: the
same, every N epochs of the pretraining split; not with ``every``) and
``enabled``::

    config.evals.knn = dict(type="knn", k=20, temperature=0.07, every=500)

An evaluator is constructed with the method's pure functions
(``Method.predict_fns()``: ``encode``, ``classifier``, ``reconstruct``, ...)
and the data config, and run as ``run(state, workdir) -> dict[str, float]``;
``workdir`` is a directory it may write to (reports, pictures,
sub-checkpoints). Results are logged by the caller.
"""
from __future__ import annotations

import importlib
import inspect

from maskssl.config_utils import ConfigError, check_keys

_REGISTRY = {
    "finetune": "maskssl.evaluators.finetune:Finetune",
    "knn": "maskssl.evaluators.knn:Knn",
    "linear_probe": "maskssl.evaluators.linear_probe:LinearProbe",
    "mask_report": "maskssl.evaluators.mask_report:MaskReport",
    "reconstruction": "maskssl.evaluators.reconstruction:Reconstruction",
}
# keys of an evals entry read by the caller, not by the evaluator
CALLER_KEYS = ("type", "every", "every_epochs", "enabled")
# constructor arguments the caller fills in
_PROVIDED = ("self", "fns", "config", "data")


def get_evaluator(type_name: str):
  """The evaluator class registered as ``type_name``."""
  if type_name not in _REGISTRY:
    raise ValueError(
        f"Unknown evaluator type {type_name!r}; known: {sorted(_REGISTRY)}")
  module, cls = _REGISTRY[type_name].split(":")
  return getattr(importlib.import_module(module), cls)


def evaluator_keys(cls) -> list[str]:
  """The keys an evals entry of this class may hold."""
  params = inspect.signature(cls.__init__).parameters
  return sorted([p for p in params if p not in _PROVIDED[:2]] +
                list(CALLER_KEYS))


def check_eval_config(name: str, ecfg):
  """ConfigError for an unknown type or key (before any compute)."""
  try:
    cls = get_evaluator(ecfg.get("type", None))
  except (ValueError, AttributeError) as e:
    raise ConfigError(f"config.evals.{name}: {e}") from e
  check_keys(ecfg.keys(), evaluator_keys(cls),
             f"config.evals.{name} (evaluator {ecfg.type!r})")
  if (float(ecfg.get("every", 0) or 0) > 0 and
      float(ecfg.get("every_epochs", 0) or 0) > 0):
    raise ConfigError(f"config.evals.{name}: set every (steps) or "
                      "every_epochs, not both")
  return cls


def make_evaluator(name: str, ecfg, config, fns):
  """The evaluator of ``config.evals.<name>``, given ``fns`` =
  ``method.predict_fns()``."""
  cls = check_eval_config(name, ecfg)
  kw = {k: v for k, v in ecfg.items() if k not in CALLER_KEYS}
  params = inspect.signature(cls.__init__).parameters
  if "config" in params:
    kw["config"] = config
  if "data" in params and kw.get("data", None) is None:
    kw["data"] = config.data
  return cls(fns, **kw)
