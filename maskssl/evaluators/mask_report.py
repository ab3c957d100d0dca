"""Mask report evaluator: writes a method's learned dimensional mask.

For methods with ``mask_report(state, workdir)`` (MetaMask): per-dimension
mask values as ``mask.json`` and, when matplotlib is installed, a sorted
plot + histogram ``mask.png`` in ``workdir``. Returns summary statistics
(``mask_mean``, ``mask_std``, ``mask_min``, ``mask_max``,
``mask_frac_below_0p4``, ``mask_frac_above_0p6``).
"""
from __future__ import annotations

import jax


def run(config, eval_config, method, state, workdir) -> dict:
  del config, eval_config
  if not hasattr(method, "mask_report"):
    raise ValueError(f"method {type(method).__name__} has no learned mask "
                     "(mask_report evaluator needs e.g. metamask)")
  if jax.process_index() != 0:
    return {}
  return {k: float(v) for k, v in method.mask_report(state, workdir).items()}
