"""Evaluator plug-ins (big_vision style).

``config.evals`` maps a display name to a ConfigDict with a ``type`` field
naming the plug-in, e.g.::

    config.evals.finetune_1k = dict(type="finetune", num_labels=1000, ...)

Each plug-in module exposes ``run(config, eval_config, method, state,
workdir) -> dict[str, float]``; ``state`` is the (restored) pretraining train
state, ``workdir`` a directory the evaluator may write to (its own
sub-checkpoints, reports). Results are logged by the caller.
"""
from __future__ import annotations

import importlib

_REGISTRY = {
    "finetune": "maskssl.evaluators.finetune",
    "knn": "maskssl.evaluators.knn",
    "linear_probe": "maskssl.evaluators.linear_probe",
    "mask_report": "maskssl.evaluators.mask_report",
    "reconstruction": "maskssl.evaluators.reconstruction",
}


def get_evaluator(type_name: str):
  if type_name not in _REGISTRY:
    raise ValueError(
        f"Unknown evaluator type {type_name!r}; known: {sorted(_REGISTRY)}")
  return importlib.import_module(_REGISTRY[type_name])
