"""A trained run as a Python object: ``maskssl.load(workdir)``.

::

    import maskssl
    enc = maskssl.load("runs/sma_particle")            # newest checkpoint
    data = enc.load_data("test", path="my_higgs.csv")  # as in training
    emb = enc.encode(data)                             # (N, D) float32 numpy
    enc.config, enc.params, enc.step, enc.preprocessing

``encode`` takes an :class:`~maskssl.data.base.ArrayDataset` or a batch dict
of arrays in the layout the run's data source produces (``enc.input_spec``);
it runs the method's eval-mode ``encode`` jitted and sharded over the
device mesh, in batches (the last one padded, so it compiles once).

The config is the run's own ``config.json`` unless one is passed (a
ConfigDict or ``"path.py[:variant]"``, overrides included).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from maskssl.checkpoint import CheckpointError
from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data.base import ArrayDataset


def run_config(workdir: str, config=None) -> ml_collections.ConfigDict:
  """The run's config: ``config`` if given, else ``<workdir>/config.json``."""
  if isinstance(config, str):
    return load_config_file(config)
  if config is not None:
    return config
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(
        f"{path}: not found; pass the --workdir of a maskssl run (it writes "
        "config.json), or the config explicitly")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


@dataclasses.dataclass
class Encoder:
  """A restored run: its config, method, state and batched inference."""
  config: ml_collections.ConfigDict
  method: Any
  state: Any
  step: int
  workdir: str
  mesh: Any
  input_spec: dict  # key -> (shape without batch, dtype) of encode's input
  preprocessing: dict  # what the data source did to raw inputs (meta)

  @property
  def params(self):
    """The trained parameters as host numpy arrays."""
    return jax.tree.map(np.asarray, jax.device_get(self.state["params"]))

  def data_config(self, **overrides) -> ml_collections.ConfigDict:
    """The run's data config, every field of its schema filled, with
    ``overrides`` (unknown keys are errors)."""
    from maskssl.data import data_schema
    from maskssl.data.base import config_dict
    cfg = config_dict(data_schema(self.config.data))
    for k, v in overrides.items():
      if k not in cfg:
        raise ConfigError(f"unknown data key {k!r} for data source "
                          f"{cfg.get('name')!r}; known: {sorted(cfg)}")
      cfg[k] = v
    return cfg

  def load_data(self, split: str = "test", **overrides) -> ArrayDataset:
    """A split of the run's data source, preprocessed as in training."""
    from maskssl.data import load_split
    return load_split(self.data_config(**overrides), split)

  def encode(self, data: ArrayDataset | Mapping[str, np.ndarray],
             batch_size: int = 256) -> np.ndarray:
    """Eval-mode features ``(N, D)`` float32 of every example, in order."""
    from maskssl.evaluators.common import encode_features
    if not isinstance(data, ArrayDataset):
      data = ArrayDataset({k: np.asarray(v) for k, v in data.items()})
    missing = sorted(set(self.input_spec) - set(data.arrays))
    if missing:
      raise ConfigError(f"encode input lacks {missing}; this run's encoder "
                        f"takes {self._spec_str()}")
    for k, (shape, _) in self.input_spec.items():
      got = tuple(data.arrays[k].shape[1:])
      if got != tuple(shape):
        raise ConfigError(f"encode input {k!r} has per-example shape {got}; "
                          f"this run's encoder takes {self._spec_str()}")
    data = ArrayDataset({k: data.arrays[k] for k in self.input_spec},
                        data.meta)
    return encode_features(self.method, self.state, data, batch_size,
                           self.mesh)

  def _spec_str(self):
    return ", ".join(f"{k}: {tuple(s)} {d}"
                     for k, (s, d) in self.input_spec.items())


def load(workdir: str, step: int | None = None, config=None) -> Encoder:
  """Restore ``<workdir>/checkpoints`` (newest, or ``step``) for inference."""
  from maskssl import run as run_lib
  from maskssl import parallel
  from maskssl.data import data_schema, load_source
  config = run_config(workdir, config)
  ds = load_source(config.data, data_schema(config.data).pretrain_split)
  method, state, step = run_lib.restore_state(config, workdir, step,
                                               dataset=ds)
  example = ds.batch(np.arange(1))
  spec = {}
  for k, v in example.items():
    if k in ("label", "labels", "id"):
      continue
    spec[k] = (tuple(v.shape[1:]), str(v.dtype))
  # Keep only the keys encode reads: trace it once on the example.
  used = _used_keys(method, state, {k: example[k] for k in spec})
  spec = {k: spec[k] for k in spec if k in used}
  prep = {k: v for k, v in ds.meta.items()
          if isinstance(v, (str, int, float, bool, list, tuple))}
  return Encoder(config=config, method=method, state=state, step=int(step),
                 workdir=workdir, mesh=parallel.make_mesh(), input_spec=spec,
                 preprocessing=prep)


def _used_keys(method, state, batch) -> set[str]:
  """Batch keys that ``method.encode`` actually reads."""
  used = set()

  class Probe(dict):
    def __getitem__(self, k):
      used.add(k)
      return super().__getitem__(k)

    def get(self, k, default=None):
      if k in self:
        used.add(k)
      return super().get(k, default)

  jax.eval_shape(lambda s, b: method.encode(s, Probe(b)), state, batch)
  return used
