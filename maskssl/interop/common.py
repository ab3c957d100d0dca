"""Torch-layout state_dicts <-> flax variable trees, by explicit name rules.

A converter is a list of :class:`Rule` s, one per tensor: its torch name, the
path of the flax leaf (first element is the collection, ``"params"`` or
``"batch_stats"``) and a layout ``kind``. The same rules go both ways, so
``to_state_dict(from_state_dict(sd, rules), rules)`` is the identity, and
any missing, unexpected or mis-shaped tensor is reported all at once::

    rules = resnet_rules(variables)                  # built from a flax tree
    variables = from_state_dict(load_state_dict("official.pt.npz"), rules)
    save_state_dict("out.safetensors", to_state_dict(variables, rules))

Layouts (``kind``):

* ``"copy"``: same array (biases, LayerNorm / BatchNorm vectors, tables);
* ``"linear"``: torch ``(out, in)`` <-> flax Dense ``(in, out)``;
* ``"conv"``: torch ``(O, C, kh, kw)`` <-> flax ``(kh, kw, C, O)``;
* a :class:`Layout` for anything else (a pair of functions, e.g. a head
  split or a reshape), each the inverse of the other.

Files: ``.safetensors`` (safetensors' numpy API; torch is never needed) or
``.npz``. Tensors come back as numpy arrays in their stored dtype; the caller
decides the dtype of the tree (``from_state_dict(..., dtype=...)``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from maskssl.data.base import DataError


class StateDictError(DataError):
  """A state_dict does not fit the model: lists every problem."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """A custom tensor layout: ``to_flax(torch_array)`` and its inverse."""
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


def _conv_to_flax(w):
  return np.transpose(w, (2, 3, 1, 0))


def _conv_to_torch(w):
  return np.transpose(w, (3, 2, 0, 1))


LAYOUTS = {
    "copy": Layout(lambda a: a, lambda a: a),
    "linear": Layout(np.transpose, np.transpose),
    "conv": Layout(_conv_to_flax, _conv_to_torch),
}


@dataclasses.dataclass(frozen=True)
class Rule:
  torch: str
  path: tuple[str, ...]
  kind: str | Layout = "copy"

  @property
  def layout(self) -> Layout:
    if isinstance(self.kind, Layout):
      return self.kind
    return LAYOUTS[self.kind]


# ---- files -------------------------------------------------------------------
def load_state_dict(path: str, prefix: str = "") -> dict[str, np.ndarray]:
  """Tensors of a ``.safetensors`` or ``.npz`` file (keys starting with
  ``prefix``, with the prefix removed)."""
  if not os.path.exists(path):
    raise StateDictError(f"{path}: no such file")
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file
      sd = load_file(path)
    elif path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as z:
        sd = {k: z[k] for k in z.files}
    else:
      raise StateDictError(
          f"{path}: unknown state_dict format; use .safetensors or .npz "
          "(from torch: safetensors.torch.save_file(model.state_dict(), f))")
  except StateDictError:
    raise
  except Exception as e:  # noqa: BLE001  (corrupt file: name it)
    raise StateDictError(f"{path}: cannot read state_dict ({e})") from e
  if prefix:
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  return sd


def save_state_dict(path: str, tensors: Mapping[str, np.ndarray],
                    metadata: Mapping[str, Any] | None = None) -> None:
  """Write ``tensors`` as safetensors (``metadata`` values become JSON
  strings in its header) or npz (metadata as a ``__metadata__`` entry)."""
  tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
  meta = {k: v if isinstance(v, str) else json.dumps(v)
          for k, v in (metadata or {}).items()}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file
    save_file(tensors, path, metadata=meta or None)
  elif path.endswith(".npz"):
    extra = {"__metadata__": np.array(json.dumps(meta))} if meta else {}
    np.savez(path, **tensors, **extra)
  else:
    raise StateDictError(f"{path}: use a .safetensors or .npz file name")


# ---- trees -------------------------------------------------------------------
def _at(tree, path):
  """The node of a nested dict at the key sequence ``path``."""
  node = tree
  for k in path:
    node = node[k]
  return node


def _set(tree: dict, path, value):
  node = tree
  for k in path[:-1]:
    node = node.setdefault(k, {})
  node[path[-1]] = value


def flat_paths(tree, prefix=()) -> list[tuple[str, ...]]:
  """Every leaf path of a nested mapping."""
  out = []
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.extend(flat_paths(v, prefix + (k,)))
    else:
      out.append(prefix + (k,))
  return out


def _fmt(path):
  return "/".join(path)


def check_rules(rules: Sequence[Rule], variables: Mapping) -> None:
  """Every leaf of ``variables`` is covered by exactly one rule (a converter
  bug otherwise, not a user error)."""
  covered = [r.path for r in rules]
  dup = {p for p in covered if covered.count(p) > 1}
  leaves = set(flat_paths(variables))
  missing = sorted(leaves - set(covered))
  extra = sorted(set(covered) - leaves)
  if dup or missing or extra:
    raise AssertionError(
        "converter rules do not match the model: "
        f"uncovered {[_fmt(p) for p in missing]}, "
        f"not in model {[_fmt(p) for p in extra]}, "
        f"twice {[_fmt(p) for p in sorted(dup)]}")


def from_state_dict(sd: Mapping[str, np.ndarray], rules: Sequence[Rule], *,
                    shapes: Mapping | None = None, dtype=None,
                    source: str = "state_dict",
                    ignore: Iterable[str] = ()) -> dict:
  """Flax variables (nested dicts of numpy arrays) from a torch state_dict.

  ``shapes``: a tree of the expected flax shapes (arrays or
  ``jax.ShapeDtypeStruct`` s, e.g. from ``jax.eval_shape(model.init, ...)``);
  a tensor whose converted shape differs is reported. ``ignore``: torch
  names (or prefixes ending in ``.``) that may be present and are dropped
  (e.g. ``num_batches_tracked``, unused predictor heads).
  """
  ignore = tuple(ignore)
  dropped = lambda k: any(k == i or (i.endswith(".") and k.startswith(i))
                          for i in ignore)
  wanted = {r.torch for r in rules}
  missing = [r.torch for r in rules if r.torch not in sd]
  unexpected = sorted(k for k in sd if k not in wanted and not dropped(k))
  misshaped, out = [], {}
  for r in rules:
    if r.torch not in sd:
      continue
    a = r.layout.to_flax(np.asarray(sd[r.torch]))
    if shapes is not None:
      want = tuple(_at(shapes, r.path).shape)
      if tuple(a.shape) != want:
        misshaped.append(f"{r.torch}: {tuple(np.shape(sd[r.torch]))} -> "
                         f"{tuple(a.shape)} for {_fmt(r.path)}, model "
                         f"expects {want}")
        continue
    if dtype is not None and np.issubdtype(a.dtype, np.floating):
      a = a.astype(dtype)
    _set(out, r.path, a)
  problems = []
  if missing:
    problems.append(f"missing ({len(missing)}): " + ", ".join(missing))
  if unexpected:
    problems.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
  if misshaped:
    problems.append(f"mis-shaped ({len(misshaped)}): " + "; ".join(misshaped))
  if problems:
    raise StateDictError(f"{source} does not fit the model:\n  " +
                         "\n  ".join(problems))
  return out


def to_state_dict(variables: Mapping, rules: Sequence[Rule],
                  dtype=None) -> dict[str, np.ndarray]:
  """Torch-named, torch-layout numpy arrays from flax variables (rule
  order, which is the torch module order when the rules are written so)."""
  out = {}
  for r in rules:
    a = r.layout.to_torch(np.asarray(_at(variables, r.path)))
    if dtype is not None and np.issubdtype(a.dtype, np.floating):
      a = a.astype(dtype)
    out[r.torch] = a
  return out
