"""maskssl: masked self-supervised learning in JAX/Flax (SMA, MetaMask, MSCN, SD-MAE)."""
__version__ = "0.1.0"
