"""maskssl: masked self-supervised learning in JAX/Flax (SMA, MetaMask, MSCN, SD-MAE)."""
__version__ = "0.1.0"


def load(workdir: str, step: int | None = None, config=None):
  """A trained run for inference: see :func:`maskssl.api.load`."""
  from maskssl.api import load as _load
  return _load(workdir, step=step, config=config)
