"""Weights in and out: torch-layout state_dicts <-> maskssl parameters.

* :mod:`maskssl.interop.common`: the rule mechanism and the file I/O
  (safetensors / npz, no torch needed);
* :mod:`maskssl.interop.sma`: the official SMA (Perceiver-style) model;
* :mod:`maskssl.interop.vit`: the SD-MAE / MAE ViT (official and timm names);
* :mod:`maskssl.interop.resnet`: the MetaMask / MSCN ResNet (official
  lightly names and torchvision names).

Each model module has ``export(method, state, target)`` returning
``(tensors, info)`` for :mod:`maskssl.export`; ``EXPORTERS`` maps a
``config.method`` to that module.
"""
from __future__ import annotations

import importlib

from maskssl.interop.common import (Layout, Rule, StateDictError,  # noqa: F401
                                    from_state_dict, load_state_dict,
                                    save_state_dict, to_state_dict)

EXPORTERS = {
    "sma": "maskssl.interop.sma",
    "sdmae": "maskssl.interop.vit",
    "metamask": "maskssl.interop.resnet",
    "siamese": "maskssl.interop.resnet",
}


def exporter(method_name: str):
  if method_name not in EXPORTERS:
    raise StateDictError(f"no exporter for method {method_name!r}; known: "
                         f"{sorted(EXPORTERS)}")
  return importlib.import_module(EXPORTERS[method_name])
