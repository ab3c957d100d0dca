"""The top-level config schema (train.RunConfig / ParallelConfig): defaults
in one place, unknown keys fail before compute with the key named."""
import dataclasses

import ml_collections
import pytest

from maskssl import train as train_lib
from maskssl.config_utils import ConfigError, load_config_file


def _cfg(**kw):
  base = dict(method="sma", seed=1, batch_size=8, total_steps=10)
  return ml_collections.ConfigDict(dict(base, **kw))


def test_loop_config_defaults_are_the_schema_defaults():
  lc = train_lib.loop_config(_cfg(), 100)
  rc = train_lib.RunConfig()
  assert (lc.log_every, lc.checkpoint_every, lc.keep_checkpoints,
          lc.async_checkpoints, lc.stop_check_every) == (
              rc.log_every, rc.checkpoint_every, rc.keep_checkpoints,
              rc.async_checkpoints, rc.stop_check_every)
  assert (lc.fsdp, lc.fsdp_min_size) == (False, 2 ** 14)
  lc = train_lib.loop_config(_cfg(log_every=7, parallel=dict(fsdp=True)),
                             100)
  assert (lc.log_every, lc.fsdp, lc.seed, lc.total_steps) == (7, True, 1, 10)
  # num_epochs: the length from the split size
  lc = train_lib.loop_config(_cfg(total_steps=0, num_epochs=2.0), 20)
  assert lc.total_steps == 2 * train_lib.steps_per_epoch(20, 8)


@pytest.mark.parametrize("cfg,key,hint", [
    (_cfg(log_evry=5), "log_evry", "log_every"),
    (_cfg(optm={}), "optm", "optim"),
])
def test_unknown_top_level_key_is_named(cfg, key, hint):
  with pytest.raises(ConfigError, match=rf"'{key}'.*top level.*'{hint}'"):
    train_lib.run_config(cfg)


def test_unknown_parallel_key_is_named():
  with pytest.raises(ConfigError, match="'fdsp'.*config.parallel"):
    train_lib.loop_config(_cfg(parallel=dict(fdsp=True)), 100)


@pytest.mark.parametrize("path", ["configs/sma_particle.py:quick",
                                  "configs/mscn_cifar10.py:quick",
                                  "configs/sdmae_pcam.py:quick",
                                  "configs/metamask_cifar10.py:quick"])
def test_shipped_configs_fit_the_top_level_schema(path):
  rc = train_lib.run_config(load_config_file(path))
  assert dataclasses.is_dataclass(rc) and rc.batch_size > 0


@pytest.mark.parametrize("path", [
    "configs/sma_particle.py:quick", "configs/sma_molecule.py:quick",
    "configs/sma_protein.py:quick", "configs/sma_image.py:quick",
    "configs/mscn_cifar10.py:quick", "configs/metamask_cifar10.py:quick",
    "configs/sdmae_pcam.py:quick", "configs/mae_pcam.py:quick"])
def test_every_method_declares_its_schedule_so_lr_is_logged(path):
  # the train loop logs lr from method.schedule (tests/test_online_eval.py
  # checks the logged lines); every method must declare it
  import numpy as np
  from maskssl.methods import get_method
  method = get_method(load_config_file(path))
  lr = [float(method.schedule(s)) for s in (0, 1, 2)]
  assert np.isfinite(lr).all() and max(lr) > 0, lr
