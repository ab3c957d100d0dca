"""``config.data`` is its data set's frozen schema: a misspelled key is a
ConfigError naming it, the data set and the allowed keys, before any data
is read or any compute runs."""
import dataclasses
import os

import pytest

from maskssl import run as run_lib
from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data import check_data_config, data_schema, load_source
from maskssl.data import load_split
from maskssl.data.base import LOADER_FIELDS, DataError, LoaderConfig
from maskssl.data.grain_source import loader_options

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")

# (config, data set, misspelled key, the key it should be)
TYPOS = [
    ("sma_particle.py:quick", "higgs", "test_sise", "test_size"),
    ("sma_molecule.py:quick", "moleculenet", "max_lenn", "max_len"),
    ("sma_protein.py:quick", "proteins", "val_fraktion", "val_fraction"),
    ("mscn_cifar10.py:quick", "cifar10", "max_trian", "max_train"),
    ("sdmae_pcam.py:quick", "pcam", "max_exampels", "max_examples"),
]


def _config(name):
  return load_config_file(os.path.join(ROOT, name))


def _with_typo(name, key):
  c = _config(name)
  with c.unlocked():
    c.data[key] = 1
    # data that does not exist: reading it would be a DataError, so a
    # ConfigError shows the keys were checked before anything was read
    c.data.path = os.path.join(ROOT, "no_such_data.csv")
  return c


@pytest.mark.parametrize("name,dataset,typo,want", TYPOS)
def test_misspelled_data_key_fails_before_loading(name, dataset, typo, want):
  c = _with_typo(name, typo)
  pattern = (rf"unknown key '{typo}' for config\.data \(data set "
             rf"'{dataset}'\)\. Did you mean '{want}'\?.*Allowed keys:.*"
             rf"\b{want}\b")
  with pytest.raises(ConfigError, match=pattern):
    data_schema(c.data)
  for split in ("pretrain", "train", "test"):
    with pytest.raises(ConfigError, match=typo):
      load_split(c.data, split)
  with pytest.raises(ConfigError, match=typo):
    load_source(c.data, "pretrain")


@pytest.mark.parametrize("name,dataset,typo,want", TYPOS)
def test_misspelled_data_key_fails_before_any_compute(name, dataset, typo,
                                                      want, tmp_path,
                                                      monkeypatch):
  c = _with_typo(name, typo)

  def never(*a, **k):
    raise AssertionError("built the method or read data before the check")
  monkeypatch.setattr(run_lib, "get_method", never)
  monkeypatch.setattr(run_lib, "load_source", never)
  with pytest.raises(ConfigError, match=rf"'{typo}'.*'{dataset}'"):
    run_lib.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_evaluator_data_overrides_are_checked_too(tmp_path, monkeypatch):
  c = _config("sma_molecule.py:quick")
  name = next(n for n, e in c.evals.items() if e.get("data_overrides", None))
  check_data_config(c)          # the config's own overrides are valid
  with c.unlocked():
    c.evals[name].data_overrides.taks = "esol"
  with pytest.raises(ConfigError, match=rf"'taks' for config\.evals\.{name}"
                     r"\.data_overrides \(data set 'moleculenet'\)\. Did you "
                     r"mean 'task'\?"):
    check_data_config(c)
  monkeypatch.setattr(run_lib, "get_method", lambda *a: 1 / 0)
  with pytest.raises(ConfigError, match="taks"):
    run_lib.train_and_evaluate(c, str(tmp_path / "run"))


def test_schema_fields_and_defaults():
  c = _config("sma_particle.py:quick")
  s = data_schema(c.data)
  assert dataclasses.is_dataclass(s) and type(s).__name__ == "HiggsConfig"
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.test_size = 3
  # every field of the config is on the schema, with the config's value
  assert {k: getattr(s, k) for k in c.data} == dict(c.data)
  assert data_schema(s) is s                  # built once, passed down
  # overrides (an evaluator's) replace fields, and may change the data set
  t = data_schema(s, dict(test_size=7))
  assert (t.test_size, s.test_size) == (7, c.data.test_size)
  # the loader fields: one dataclass, defaults only on its fields
  assert LOADER_FIELDS == dataclasses.asdict(LoaderConfig())
  assert isinstance(s, LoaderConfig)
  assert loader_options(s) == loader_options(None) == loader_options(
      dict(threads=2))
  assert loader_options(dict(workers=3, bad_records="skip")).workers == 3


def test_misspelled_loader_key_fails_too():
  c = _config("mscn_cifar10.py:quick")
  with c.unlocked():
    c.data.worker = 4
  with pytest.raises(ConfigError, match=r"'worker'.*Did you mean 'workers'"):
    data_schema(c.data)


def test_unknown_data_set_name():
  with pytest.raises(DataError, match="Unknown data set .cifar11."):
    data_schema(dict(name="cifar11"))
