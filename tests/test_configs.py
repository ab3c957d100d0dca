"""Every config file and variant builds: get_config, its data schema, the
method, its evaluators, and ``jax.eval_shape`` of ``init_state`` on a tiny
batch."""
import os

import jax
import jax.numpy as jnp
import pytest

from maskssl.config_utils import ConfigError, load_config_file
from maskssl.data import check_data_config
from maskssl.evaluators import make_evaluator
from maskssl.methods import get_method

ROOT = os.path.join(os.path.dirname(__file__), "..", "configs")
VARIANTS = {
    "mae_pcam": ["", "quick"],
    "metamask_cifar10": ["", "quick", "tfds"],
    "mscn_cifar10": ["", "quick", "compare", "tfds"],
    "mscn_imagenet": ["", "long"],
    "sdmae_pcam": ["", "quick", "sample"],
    "sma_image": ["", "quick", "reference"],
    "sma_molecule": ["", "quick", "cpu", "reference"],
    "sma_protein": ["", "quick", "cpu", "reference"],
    "sma_particle": ["", "quick", "cpu", "short_ft", "quick,short_ft"],
}
CASES = [(n, v) for n, vs in VARIANTS.items() for v in vs]


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
