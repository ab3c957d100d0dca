"""Config helpers: readable errors for bad command-line overrides."""
from __future__ import annotations

import difflib
import os
import re

import ml_collections


class ConfigError(ValueError):
  pass


def check_keys(keys, allowed, component: str):
  """ConfigError naming the first key of ``keys`` not in ``allowed`` (with
  the closest allowed key), so a typo fails before any compute."""
  allowed = sorted(allowed)
  for key in keys:
    if key not in allowed:
      close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"unknown key {key!r} for {component}.{hint} "
                        f"Allowed keys: {', '.join(allowed)}")


def from_config(cls, cfg=None, component: str | None = None, **extra):
  """``cls(**cfg, **extra)`` for a dataclass (or flax module) ``cls``; the
  fields are the schema: an unknown key is a ConfigError."""
  import dataclasses
  kw = dict(cfg or {})
  kw.update(extra)
  skip = ("parent", "name") if hasattr(cls, "apply") else ()  # flax
  names = [f.name for f in dataclasses.fields(cls)
           if f.init and f.name not in skip]
  check_keys(kw, names, component or cls.__name__)
  return cls(**kw)


def load_module(path: str, name: str = "_maskssl_config"):
  """The Python file ``path`` executed as a fresh module named ``name``."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"cannot load config file {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sibling(file: str, name: str):
  """Module ``name`` beside ``file``: ``load_sibling(__file__, "common")``
  in a config file. Config files are loaded by path (``--config=``), so
  their folder need not be on ``sys.path`` whatever the working directory."""
  folder = os.path.dirname(os.path.abspath(file))
  return load_module(os.path.join(folder, name + ".py"),
                     f"_maskssl_config_{name}")


def load_config_file(arg: str):
  """``path.py[:variant]`` -> ``get_config(variant)`` (as ``--config`` does)."""
  path, _, variant = arg.partition(":")
  module = load_module(path)
  return module.get_config(variant) if variant else module.get_config()


def all_keys(cfg, prefix: str = "") -> list[str]:
  keys = []
  for k, v in cfg.items():
    path = f"{prefix}{k}"
    keys.append(path)
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(all_keys(v, path + "."))
  return keys


def has_key(cfg, dotted: str) -> bool:
  node = cfg
  for part in dotted.split("."):
    if isinstance(node, ml_collections.ConfigDict) and part in node:
      node = node[part]
    elif isinstance(node, (list, tuple)) and part.isdigit():
      node = node[int(part)]
    else:
      return False
  return True


def unknown_override_message(cfg, argv, flag: str = "config") -> str | None:
  """Explain the first ``--config.<key>=`` whose key the config lacks."""
  pat = re.compile(rf"^--{flag}\.([A-Za-z0-9_.]+)")
  keys = all_keys(cfg)
  for arg in argv:
    m = pat.match(arg)
    if m and not has_key(cfg, m.group(1)):
      key = m.group(1)
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
      hint = f" Did you mean {', '.join(close)}?" if close else ""
      return (f"unknown config key {key!r} in {arg!r}.{hint} "
              "(every field of the config file can be overridden; new keys "
              "cannot be added from the command line)")
  return None
