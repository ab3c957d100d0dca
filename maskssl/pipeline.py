"""Deprecated alias of :mod:`maskssl.run` (in JAX code "pipeline" means the
input pipeline); ``from maskssl import pipeline`` keeps working for existing
scripts and notebooks."""
import sys
import warnings

from maskssl import run as _run

warnings.warn("maskssl.pipeline is now maskssl.run", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = _run
