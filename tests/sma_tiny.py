"""A tiny SMA HIGGS config (the :quick config at toy width) for tests that
need a real trained run in seconds."""
import os

from maskssl.config_utils import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH_KEYS = ("embed_dim", "latent_dim", "self_qk_dim", "decoder_qk_dim",
              "head_dim", "head_qk_dim", "cross_qk_dim")


def tiny_sma_particle(width: int = 32, heads: int = 4, **top):
  """``configs/sma_particle.py:quick`` with 1 self-attention layer of
  ``heads`` heads at ``width``; ``top`` sets top-level fields."""
  c = load_config_file(os.path.join(REPO, "configs", "sma_particle.py") +
                       ":quick")
  c.model.num_self_layers = 1
  c.model.self_heads = heads
  for k in WIDTH_KEYS:
    c.model[k] = width
  for k, v in top.items():
    c[k] = v
  return c
