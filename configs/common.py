"""What the config files share: variant parsing and the blocks several of
them write (in the spirit of big_vision's configs/common.py).

A config file loads it by path, whatever the working directory::

  from maskssl.config_utils import load_sibling
  common = load_sibling(__file__, "common")

The defaults live on the schemas (:class:`maskssl.optim.OptimConfig`, each
data set's frozen dataclass, :class:`maskssl.methods.sma.SMAModelConfig`):
the helpers below write every field of a schema, its default or the
config's delta, so each key has one default and can be overridden from the
command line (but a None-valued one: ml_collections cannot type it); an
unknown delta is a ConfigError when the config is built.
"""
import dataclasses

from maskssl import data as data_lib
from maskssl import optim as optim_lib
from maskssl.config_utils import from_config
from maskssl.methods.siamese import PairLossConfig
from maskssl.methods.sma import SMAModelConfig


def variants(arg, known, exclusive=()):
  """The set of variants in ``arg``, the ``a,b`` of ``--config=file.py:a,b``.

  Args:
    arg: the comma-joined variants (None or "" for none).
    known: the allowed variant names.
    exclusive: groups of names of which at most one may be given.

  Raises:
    ValueError: naming an unknown variant (and the allowed ones), or two
      variants of one exclusive group.
  """
  opts = frozenset(o for o in (arg or "").split(",") if o)
  unknown = sorted(opts - set(known))
  if unknown:
    raise ValueError(
        f"unknown variant {', '.join(map(repr, unknown))} in {arg!r}; use "
        f"any of {', '.join(known)} joined by commas, or nothing")
  for group in exclusive:
    both = [o for o in group if o in opts]
    if len(both) > 1:
      raise ValueError(f"variants {' and '.join(both)} exclude each other "
                       f"(at most one of {', '.join(group)})")
  return opts


def _fields(cls, deltas, component):
  return dataclasses.asdict(from_config(cls, deltas, component))


def optim(**deltas):
  """``config.optim`` or an evaluator's: every ``OptimConfig`` field.

  Not for a linear probe's ``optim`` nor MetaMask's ``config.optim``: those
  update their own defaults (lr, warm-up from epochs, steps per epoch).
  """
  return dataclasses.asdict(optim_lib.optim_config(deltas))


def data(name, **deltas):
  """``config.data`` of data set ``name``: every field of its schema (the
  input-pipeline fields of ``LoaderConfig`` included)."""
  return dataclasses.asdict(data_lib.data_schema(dict(name=name, **deltas)))


def sma_model(d, e=None, **deltas):
  """``config.model`` of SMA: every ``SMAModelConfig`` field, with the
  widths set from ``d`` (latents, attention and head, D) and ``e`` (tokens
  and decoder, E; default D, as in transformer mode)."""
  e = d if e is None else e
  widths = dict(embed_dim=e, latent_dim=d, self_qk_dim=d, cross_qk_dim=d,
                decoder_qk_dim=e, head_dim=d, head_qk_dim=d)
  return _fields(SMAModelConfig, {**widths, **deltas}, "config.model (SMA)")


def siamese_loss(name="vicreg", **deltas):
  """``config.loss`` of the siamese method: every ``PairLossConfig`` field
  (the original methods' hyper-parameters)."""
  return _fields(PairLossConfig, dict(name=name, **deltas), "config.loss")


def sma_finetune(quick, **deltas):
  """An ``evals.finetune*`` entry of the SMA configs: full fine-tuning,
  pretrained vs scratch, one seed (``quick``) or three."""
  return {**dict(type="finetune", every=0, enabled=True, num_labels=(0,),
                 seeds=(0,) if quick else (0, 1, 2),
                 inits=("pretrained", "scratch"), task="auto",
                 model_overrides={}), **deltas}
