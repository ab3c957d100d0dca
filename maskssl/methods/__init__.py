"""Method registry: ``config.method`` -> Method class (imported lazily)."""
from __future__ import annotations

import importlib

from maskssl.methods.base import Method

_REGISTRY = {
    "sma": "maskssl.methods.sma:SMA",
    "metamask": "maskssl.methods.metamask:MetaMask",
    "siamese": "maskssl.methods.siamese:Siamese",
    "sdmae": "maskssl.methods.sdmae:SDMAE",
}


def get_method(config) -> Method:
  """Instantiate the method named by ``config.method``."""
  name = config.method
  if name not in _REGISTRY:
    raise ValueError(f"Unknown method {name!r}; known: {sorted(_REGISTRY)}")
  module, cls = _REGISTRY[name].split(":")
  return getattr(importlib.import_module(module), cls)(config)
