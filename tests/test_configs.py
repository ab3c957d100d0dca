"""Every config file and variant builds: get_config, its data schema, the
method, its evaluators, and ``jax.eval_shape`` of ``init_state`` on a tiny
batch."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from maskssl.config_utils import ConfigError, load_config_file, load_module
from maskssl.data import check_data_config, data_schema
from maskssl.evaluators import make_evaluator
from maskssl.methods import get_method
from maskssl.optim import OptimConfig

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")
VARIANTS = {
    "mae_pcam": ["", "quick", "cpu"],
    "metamask_cifar10": ["", "quick", "tfds", "reference", "cpu"],
    "mscn_cifar10": ["", "quick", "compare", "tfds", "reference", "cpu",
                     "cpu,barlow_twins", "quick,simclr"],
    "mscn_imagenet": ["", "long"],
    "sdmae_pcam": ["", "quick", "sample", "p8", "tiny", "base", "reference",
                   "cpu", "quick,p8"],
    "sma_image": ["", "quick", "reference"],
    "sma_molecule": ["", "quick", "cpu", "reference"],
    "sma_protein": ["", "quick", "cpu", "reference"],
    "sma_particle": ["", "quick", "cpu", "short_ft", "quick,short_ft"],
}
CASES = [(n, v) for n, vs in VARIANTS.items() for v in vs]
common = load_module(os.path.join(ROOT, "common.py"), "_test_configs_common")


def _config(name, variant=""):
  return load_config_file(os.path.join(ROOT, name + ".py") +
                          (f":{variant}" if variant else ""))


def tiny_batch(c, b: int = 2) -> dict:
  """Abstract example batch with the shapes the method reads."""
  if c.method in ("siamese", "metamask", "sdmae"):
    s = int(c.augment.size if c.method != "sdmae" else c.model.image_size)
    return {"image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.uint8)}
  m = c.model
  n = int(m.get("n_max", 28))
  valid = jax.ShapeDtypeStruct((b, n), bool)
  if m.get("input", "continuous") == "bytes":
    return {"tokens": jax.ShapeDtypeStruct((b, n), jnp.int32), "valid": valid}
  return {"x": jax.ShapeDtypeStruct((b, n, int(m.get("c_in", 1))),
                                    jnp.float32), "valid": valid}


def test_every_config_file_is_covered():
  files = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")
           and not f.startswith("_") and f != "common.py"}
  assert files == set(VARIANTS)


@pytest.mark.parametrize("name,variant", CASES)
def test_config_builds(name, variant):
  c = _config(name, variant)
  check_data_config(c)     # config.data and evaluators' data_overrides
  method = get_method(c)
  assert method.schedule is not None    # the loop logs lr for every method
  fns = method.predict_fns()
  assert "encode" in fns
  for ename, ecfg in (c.get("evals", None) or {}).items():
    make_evaluator(ename, ecfg, c, fns)
  state = jax.eval_shape(method.init_state, jax.random.PRNGKey(0),
                         tiny_batch(c))
  assert "step" in state and jax.tree.leaves(state["params"])


def test_unknown_optimiser_key_fails_naming_it():
  c = _config("mscn_cifar10", "quick")
  with c.unlocked():
    c.optim.weight_decy = 1e-4
  with pytest.raises(ConfigError, match="weight_decy.*config.optim"):
    get_method(c)


def test_unknown_evaluator_key_fails_naming_it():
  c = _config("mscn_cifar10", "quick")
  with c.unlocked():
    c.evals.knn.temprature = 0.1
  method = get_method(c)
  with pytest.raises(ConfigError, match=r"'temprature'.*evals.knn.*"
                     r"Did you mean 'temperature'"):
    make_evaluator("knn", c.evals.knn, c, method.predict_fns())


@pytest.mark.parametrize("name,section,key", [
    ("sma_particle", "model", "num_self_layer"),
    ("mscn_cifar10", "model", "projector_widht"),
    ("mscn_cifar10", "loss", "temperture"),
    ("sma_particle", "mask", "ratoi"),
    ("metamask_cifar10", "metamask", "mask_lrr"),
    ("metamask_cifar10", "model", "bt_feature"),
    ("sdmae_pcam", "sdmae", "mask_ration"),
    ("sdmae_pcam", "model", "patch_sise"),
])
def test_unknown_model_mask_or_loss_key_fails_naming_it(name, section, key):
  c = _config(name, "quick")
  with c.unlocked():
    c[section][key] = 1
  with pytest.raises(ConfigError, match=rf"'{key}' for config\.{section}"
                     r".*Did you mean.*Allowed keys"):
    get_method(c)


def test_variants_parse_and_name_an_unknown_one():
  known = ("quick", "cpu", "short_ft")
  assert common.variants(None, known) == set()
  assert common.variants("", known) == set()
  assert common.variants("cpu,short_ft", known) == {"cpu", "short_ft"}
  with pytest.raises(ValueError, match=r"unknown variant 'qiuck' in "
                     r"'cpu,qiuck'; use any of quick, cpu, short_ft"):
    common.variants("cpu,qiuck", known)
  with pytest.raises(ValueError, match="variants quick and cpu exclude"):
    common.variants("cpu,quick", known, exclusive=[("quick", "cpu")])


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_rejects_an_unknown_variant_naming_it(name):
  with pytest.raises(ValueError, match="'bogus'"):
    _config(name, "bogus")


def test_optim_defaults_are_optim_config_defaults():
  assert common.optim() == dataclasses.asdict(OptimConfig())
  got = common.optim(lr=0.5, clip_norm=1.0)
  assert got == dict(dataclasses.asdict(OptimConfig()), lr=0.5, clip_norm=1.0)
  with pytest.raises(ConfigError, match="weight_decy"):
    common.optim(weight_decy=0.1)


def test_data_defaults_are_the_schema_defaults():
  for name in ("higgs", "cifar10", "pcam", "proteins"):
    assert common.data(name) == dataclasses.asdict(data_schema({"name": name}))
  assert common.data("higgs", workers=4)["workers"] == 4
  with pytest.raises(ConfigError, match="test_sise"):
    common.data("higgs", test_sise=10)


@pytest.mark.parametrize("name,variant", CASES)
def test_optim_and_data_sections_hold_every_schema_field(name, variant):
  """So every field can be overridden on the command line (MetaMask's
  optim is partial: the method fills the rest from config.metamask)."""
  c = _config(name, variant)
  fields = {f.name for f in dataclasses.fields(type(data_schema(c.data)))}
  assert set(c.data) == fields
  if c.method != "metamask":
    assert set(c.optim) == {f.name for f in dataclasses.fields(OptimConfig)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_docstring_is_short(name):
  doc = load_module(os.path.join(ROOT, name + ".py")).__doc__
  assert doc and len(doc.strip().splitlines()) <= 22


def test_config_loads_by_absolute_path_from_another_directory(tmp_path):
  """configs/ need not be on sys.path: a config finds common.py beside it
  (load_config_file and ml_collections' --config loader, as maskssl.main)."""
  path = os.path.abspath(os.path.join(ROOT, "mae_pcam.py"))
  script = textwrap.dedent(f"""
      import importlib.util
      from absl import flags
      from ml_collections import config_flags
      from maskssl.config_utils import load_config_file
      assert importlib.util.find_spec("configs") is None
      c = load_config_file({path + ":quick"!r})
      argv = ["x", "--config={path}:quick",
              "--config.optim.trust_coefficient=0.002",
              "--config.data.test_path=test.tar"]
      flag = config_flags.DEFINE_config_file("config", sys_argv=argv)
      flags.FLAGS(argv)
      assert flag.value.sdmae.sd_weight == c.sdmae.sd_weight == 0.0
      v = flag.value
      print(v.optim.trust_coefficient, v.data.test_path, v.batch_size)
      """)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["0.002", "test.tar", "40"]
