"""The MetaMask / MSCN ResNet <-> torch state_dicts (official lightly names and
torchvision names), with BatchNorm statistics, projectors and the mask.

Two name sets, both built as :class:`~maskssl.interop.common.Rule` lists
from a flax variable tree ``{"params": ..., "batch_stats": ..., ["mask"]}``
(so any depth, width and stage layout maskssl builds is covered):

**official** -- the MetaMask code (lightly 1.0.8 ``ResNetGenerator`` wrapped
as ``nn.Sequential(*children[:-1], AdaptiveAvgPool2d(1))`` inside
``MaskSimSiam``, plus ``FeatureMask``):

==========================================  ==================================
torch                                       maskssl
==========================================  ==================================
``backbone.0.weight`` (3x3 conv)            ``encoder/stem_conv/kernel``
``backbone.1.*`` (BN, no ReLU after it)     ``encoder/stem_bn``
``backbone.{i+1}.{j}.conv1`` .. ``bn2``     ``encoder/layer{i}_{j}/conv1`` ..
  (``conv3``/``bn3`` for bottlenecks)
``backbone.{i+1}.{j}.shortcut.0`` / ``.1``  ``.../shortcut_conv`` / ``shortcut_bn``
``projection_mlp.{k}.0`` (Linear)           ``bt_head/fc{k}/dense``
``projection_mlp.{k}.1`` (BN1d)             ``bt_head/bn{k}``
``projection_mlp2.{k}.0`` / ``.1``          ``cl_head/fc{k}/dense`` / ``bn{k}``
``auto_mask.mask`` (logits ``m``)           ``state["mask"]``
==========================================  ==================================

The SimSiam predictors ``prediction_mlp*`` of ``MaskSimSiam`` feed no loss
and have no maskssl counterpart: they are dropped on import and absent from
the export (a strict ``load_state_dict`` into ``MaskSimSiam`` then needs
``strict=False``, leaving its predictors at their init). For the ``siamese``
(MSCN) method the ``official`` target is the lightly-style backbone alone
(``backbone.*``; its projector is not a lightly module). lightly's
``Sequential`` of children has no stem ReLU and no max-pool: a backbone
trained with ``stem_relu=True`` (MSCN's default) or ``stem="imagenet"`` needs
them put back (``info["stem_relu"]``, ``info["stem"]``).

**torchvision** -- ``torchvision.models.resnet18`` / ``resnet50`` names for the
backbone: ``conv1``, ``bn1``, ``layer{i}.{j}.conv1`` / ``bn1`` / ``conv2`` /
``bn2`` [/ ``conv3`` / ``bn3``], ``layer{i}.{j}.downsample.0`` / ``.1``; no
``fc``. maskssl's bottleneck is torchvision's v1.5 (stride on the 3x3 conv).
With ``stem="imagenet"`` the network is torchvision's exactly. With the
CIFAR stem (``stem="cifar"``, MetaMask / MSCN on 32 px) three things differ
and must be patched on the torchvision model before ``load_state_dict``::

    m = torchvision.models.resnet18()
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # 3x3 stride 1, not 7x7/2
    m.maxpool = nn.Identity()                        # no max-pool
    m.relu = nn.Identity()   # only if info["stem_relu"] is False (MetaMask);
                             # torchvision uses self.relu only in the stem
    m.fc = nn.Identity()     # features = pooled backbone output
    m.load_state_dict(tensors)

(``width != 64`` changes every channel count; ``info`` says so.)

Layouts: conv ``(O, C, kh, kw)`` <-> flax ``(kh, kw, C, O)``; Linear
``(out, in)`` <-> Dense ``(in, out)``; BN ``weight``/``bias`` <-> params
``scale``/``bias``, ``running_mean``/``running_var`` <-> ``batch_stats``
``mean``/``var``. maskssl's BatchNorm keeps torch's *unbiased* running
variance (:class:`maskssl.models.resnet.TorchBatchNorm`), so the buffers mean
the same on both sides. ``num_batches_tracked`` is ignored on import; it is
exported (int64, as torch stores it) as the number of train-mode forwards
that updated the statistics (``step`` x forwards per step); torch reads it
only when ``momentum=None``. Inputs are NCHW in torch, NHWC here.

API: :func:`official_rules` / :func:`torchvision_rules` (rule builders),
:func:`import_official` (official state_dict, or the LightningModule's, ->
flax variables),
:func:`export` ``(method, state, target) -> (tensors, info)`` and its inverse
:func:`import_into`.
"""
from __future__ import annotations

import re
from typing import Mapping

import jax
import numpy as np

from maskssl.interop.common import (Rule, StateDictError, check_rules,
                                    from_state_dict, to_state_dict)

TARGETS = ("official", "torchvision")
# Present in official state_dicts, never in maskssl (see module doc).
OFFICIAL_IGNORED = ("prediction_mlp.", "prediction_mlp2.")
_NBT = ".num_batches_tracked"
_LAYER = re.compile(r"layer(\d+)_(\d+)$")


# ---- rule builders ----------------------------------------------------------
def _bn(torch_prefix: str, path: tuple[str, ...]) -> list[Rule]:
  return [Rule(torch_prefix + "weight", ("params",) + path + ("scale",)),
          Rule(torch_prefix + "bias", ("params",) + path + ("bias",)),
          Rule(torch_prefix + "running_mean",
               ("batch_stats",) + path + ("mean",)),
          Rule(torch_prefix + "running_var",
               ("batch_stats",) + path + ("var",))]


def _blocks(enc_params: Mapping) -> list[tuple[int, int, str]]:
  out = []
  for k in enc_params:
    mt = _LAYER.match(k)
    if mt:
      out.append((int(mt.group(1)), int(mt.group(2)), k))
  return sorted(out)


def backbone_rules(enc_params: Mapping, style: str,
                   flax_prefix: tuple[str, ...] = ("encoder",)) -> list[Rule]:
  """Rules for a :class:`maskssl.models.resnet.ResNet` param tree
  (``enc_params``: its ``params``), ``style`` ``"official"`` (lightly
  ``backbone.*``) or ``"torchvision"``, in torch module order."""
  if style == "official":
    stem_conv, stem_bn = "backbone.0.", "backbone.1."
    block = lambda i, j: f"backbone.{i + 1}.{j}."  # noqa: E731
    short = ("shortcut.0.", "shortcut.1.")
  elif style == "torchvision":
    stem_conv, stem_bn = "conv1.", "bn1."
    block = lambda i, j: f"layer{i}.{j}."  # noqa: E731
    short = ("downsample.0.", "downsample.1.")
  else:
    raise StateDictError(f"unknown ResNet name style {style!r}; known: "
                         f"{list(TARGETS)}")
  fp = tuple(flax_prefix)
  rules = [Rule(stem_conv + "weight", ("params",) + fp + ("stem_conv",
                                                         "kernel"), "conv")]
  rules += _bn(stem_bn, fp + ("stem_bn",))
  for i, j, name in _blocks(enc_params):
    t, p = block(i, j), fp + (name,)
    for c in (1, 2, 3):
      if f"conv{c}" in enc_params[name]:
        rules.append(Rule(f"{t}conv{c}.weight",
                          ("params",) + p + (f"conv{c}", "kernel"), "conv"))
        rules += _bn(f"{t}bn{c}.", p + (f"bn{c}",))
    if "shortcut_conv" in enc_params[name]:
      rules.append(Rule(f"{t}{short[0]}weight",
                        ("params",) + p + ("shortcut_conv", "kernel"), "conv"))
      rules += _bn(t + short[1], p + ("shortcut_bn",))
  return rules


def head_rules(head_params: Mapping, torch_prefix: str,
               flax_name: str) -> list[Rule]:
  """lightly ``_projection_mlp`` (``{k}.0`` Linear, ``{k}.1`` BN1d) <->
  :class:`maskssl.models.heads.ProjectionMLP` (``fc{k}/dense``, ``bn{k}``)."""
  rules = []
  k = 0
  while f"fc{k}" in head_params:
    t, dense = f"{torch_prefix}.{k}.", head_params[f"fc{k}"]["dense"]
    rules.append(Rule(t + "0.weight",
                      ("params", flax_name, f"fc{k}", "dense", "kernel"),
                      "linear"))
    if "bias" in dense:
      rules.append(Rule(t + "0.bias",
                        ("params", flax_name, f"fc{k}", "dense", "bias")))
    if f"bn{k}" in head_params:
      rules += _bn(t + "1.", (flax_name, f"bn{k}"))
    k += 1
  return rules


def official_rules(variables: Mapping) -> list[Rule]:
  """Official MetaMask names for ``{"params": {encoder, bt_head, cl_head},
  "batch_stats": ..., "mask": m}``; a tree with ``params["encoder"]`` only
  (or without ``mask``) gives the covered subset."""
  params = variables["params"]
  rules = backbone_rules(params["encoder"], "official")
  if "bt_head" in params:
    rules += head_rules(params["bt_head"], "projection_mlp", "bt_head")
  if "cl_head" in params:
    rules += head_rules(params["cl_head"], "projection_mlp2", "cl_head")
  if "mask" in variables:
    rules.append(Rule("auto_mask.mask", ("mask",)))
  check_rules(rules, variables)
  return rules


def torchvision_rules(variables: Mapping) -> list[Rule]:
  """torchvision ResNet names for ``{"params": {"encoder": ...},
  "batch_stats": {"encoder": ...}}``."""
  rules = backbone_rules(variables["params"]["encoder"], "torchvision")
  check_rules(rules, variables)
  return rules


# ---- methods ----------------------------------------------------------------
def _kind(method) -> str:
  from maskssl.methods.metamask import MetaMask
  from maskssl.methods.siamese import Siamese
  if isinstance(method, MetaMask):
    return "metamask"
  if isinstance(method, Siamese):
    return "siamese"
  raise StateDictError(f"{type(method).__name__}: the ResNet converter "
                       "handles MetaMask and Siamese (MSCN) methods")


def _check_target(target: str) -> None:
  if target not in TARGETS:
    raise StateDictError(f"unknown ResNet export target {target!r}; "
                         f"allowed: {list(TARGETS)}")


def covered_variables(method, state, target: str) -> dict:
  """The part of ``state`` a target holds, as a flax variable tree."""
  _check_target(target)
  kind = _kind(method)
  if kind == "metamask" and target == "official":
    return {"params": dict(state["params"]),
            "batch_stats": dict(state["batch_stats"]), "mask": state["mask"]}
  return {"params": {"encoder": state["params"]["encoder"]},
          "batch_stats": {"encoder": state["batch_stats"]["encoder"]}}


def rules_for(method, variables, target: str) -> list[Rule]:
  _check_target(target)
  return (official_rules(variables) if target == "official"
          else torchvision_rules(variables))


def forwards_per_step(method) -> int:
  """Train-mode forwards per step that update the kept running statistics
  (what torch's ``num_batches_tracked`` counts)."""
  if _kind(method) == "metamask":
    # two views in the regular step, two more in the virtual step's inner
    # forward at theta_1 (the reference updates the real buffers there).
    meta = method.enable_meta and method.meta_updates_bn_stats
    return 4 if meta else 2
  cfg = method.mcfg
  return 1 + (int(cfg.get("n_masked_views", 1)) if method.masking else 1)


def _arch(encoder) -> dict:
  names = {((2, 2, 2, 2), "basic"): "resnet18",
           ((3, 4, 6, 3), "basic"): "resnet34",
           ((3, 4, 6, 3), "bottleneck"): "resnet50"}
  return dict(architecture=names.get((tuple(encoder.stage_sizes),
                                      encoder.block), "custom"),
              block=encoder.block, stage_sizes=list(encoder.stage_sizes),
              width=int(encoder.width), stem=encoder.stem,
              stem_relu=bool(encoder.stem_relu or encoder.stem == "imagenet"))


def _info(method, state, target: str) -> dict:
  kind = _kind(method)
  enc = method.encoder
  info = dict(method=kind, target=target, feature_dim=int(enc.num_features),
              **_arch(enc), input_layout="NCHW (torch) / NHWC (maskssl)",
              step=int(np.asarray(jax.device_get(state["step"]))),
              batchnorm=dict(eps=float(enc.bn_eps),
                             momentum=round(1.0 - float(enc.bn_momentum), 12),
                             running_var="unbiased" if enc.bn_unbiased_var
                             else "biased"))
  aug = method.aug
  norm = dict(kind="normalize", scale="x / 255 in [0, 1], then (x - mean) / "
              "std per channel", mean=[float(v) for v in aug.mean],
              std=[float(v) for v in aug.std], size=int(aug.size))
  if kind == "siamese" and method.masking:
    cfg = method.mcfg
    if cfg.get("hpf_at_eval", True) and cfg.get("hpf", True):
      norm = dict(kind="mscn_hpf", size=int(aug.size),
                  hpf_input=str(cfg.hpf_input), hpf_kernel=cfg.hpf_kernel,
                  hpf_sigma=cfg.hpf_sigma, hpf_scale=float(cfg.hpf_scale),
                  note="maskssl.masks.mscn.preprocess: [0, 1] image "
                  "(optionally ImageNet-normalised), Gaussian high-pass, "
                  "/ hpf_scale")
  info["input"] = norm
  if enc.stem == "cifar":
    info["stem_note"] = (
        "CIFAR stem: conv1 is 3x3 stride 1 pad 1 (torchvision: 7x7/2), no "
        "max-pool" + ("" if info["stem_relu"] else ", no ReLU after bn1") +
        "; patch torchvision's conv1, maxpool" +
        ("" if info["stem_relu"] else ", relu") + " (see "
        "maskssl.interop.resnet)")
  if target == "torchvision" and enc.width != 64:
    info["width_note"] = (f"width {enc.width} (torchvision: 64); build the "
                          "torchvision model with scaled channels")
  if kind == "metamask":
    mask = np.asarray(jax.device_get(method.mask_values(state["mask"])))
    info["mask"] = dict(param=method.mask_param,
                        applied_in_encode=bool(method.encode_apply_mask),
                        values=[float(v) for v in mask])
    info["heads"] = dict(bt=list(method.bt_head.features),
                         cl=list(method.cl_head.features))
    if method.encode_apply_mask:
      info["feature_scale_note"] = (
          "maskssl's encode() multiplies the pooled feature by mask.values "
          "(M = sigmoid(auto_mask.mask))")
  return info


def _with_nbt(tensors: dict, count: int) -> dict:
  """Insert torch's ``num_batches_tracked`` after each ``running_var``."""
  out = {}
  for k, v in tensors.items():
    out[k] = v
    if k.endswith(".running_var"):
      out[k[:-len(".running_var")] + _NBT] = np.asarray(count, np.int64)
  return out


def export(method, state, target: str) -> tuple[dict[str, np.ndarray], dict]:
  """``(tensors, info)``: torch-named, torch-layout numpy arrays of the
  trained network for ``target`` (``"official"`` or ``"torchvision"``) and a
  JSON-able description (feature_dim, stem, input normalisation, ...)."""
  _check_target(target)
  state = jax.device_get(state)
  variables = covered_variables(method, state, target)
  tensors = to_state_dict(variables, rules_for(method, variables, target))
  step = int(np.asarray(state["step"]))
  tensors = _with_nbt(tensors, step * forwards_per_step(method))
  return tensors, _info(method, state, target)


def _merge(tree, new):
  if isinstance(new, Mapping):
    return {k: _merge(tree[k], new[k]) if k in new else v
            for k, v in tree.items()}
  return new


def import_into(method, state, tensors: Mapping[str, np.ndarray],
                target: str, source: str = "state_dict"):
  """A new ``state`` with the variables ``target`` covers replaced by
  ``tensors`` (cast to the state's dtypes); the inverse of :func:`export`.
  Raises :class:`StateDictError` listing missing / unexpected / mis-shaped
  tensors."""
  _check_target(target)
  variables = covered_variables(method, state, target)
  rules = rules_for(method, variables, target)
  got = from_state_dict(tensors, rules, shapes=variables, source=source,
                        ignore=_ignored(rules, target))
  got = jax.tree.map(lambda new, old: np.asarray(new, np.asarray(old).dtype),
                     got, _subtree(variables, got))
  new = dict(state)
  new["params"] = _merge(state["params"], got["params"])
  new["batch_stats"] = _merge(state["batch_stats"], got["batch_stats"])
  if "mask" in got:
    new["mask"] = got["mask"]
  return new


def _subtree(tree, like):
  if isinstance(like, Mapping):
    return {k: _subtree(tree[k], v) for k, v in like.items()}
  return tree


def _ignored(rules, target: str) -> tuple[str, ...]:
  nbt = tuple(r.torch[:-len(".running_var")] + _NBT for r in rules
              if r.torch.endswith(".running_var"))
  return nbt + (OFFICIAL_IGNORED if target == "official" else ())


LIGHTNING_PREFIX = "resnet_simsiam."


def official_view(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The ``resnet_simsiam.*`` + ``auto_mask.mask`` part of a state_dict of
  the official LightningModule (``MetaMaskBartonTwins.state_dict()`` / a
  Lightning checkpoint's ``state_dict``), with the prefix removed. That
  dict also holds the backbone a second time (``backbone.*``, the same
  tensors) and the scratch copy ``resnet_simsiam_.*``, both dropped. Any
  other state_dict is returned as it is."""
  if not any(k.startswith(LIGHTNING_PREFIX) for k in state_dict):
    return dict(state_dict)
  out = {k[len(LIGHTNING_PREFIX):]: v for k, v in state_dict.items()
         if k.startswith(LIGHTNING_PREFIX)}
  if "auto_mask.mask" in state_dict:
    out["auto_mask.mask"] = state_dict["auto_mask.mask"]
  return out


def import_official(state_dict: Mapping[str, np.ndarray], like, *,
                    dtype=None, source: str = "state_dict") -> dict:
  """Flax variables ``{"params", "batch_stats", "mask"}`` from an official
  MetaMask state_dict: ``resnet_simsiam.state_dict()`` plus
  ``auto_mask.mask``, or the LightningModule's whole state_dict (see
  :func:`official_view`); predictors and ``num_batches_tracked`` ignored.

  ``like``: a :class:`~maskssl.methods.metamask.MetaMask` (its
  ``init_state`` shapes) or a variable tree of arrays / shape structs that
  the rules are built from and the shapes checked against. ``dtype``: cast
  floating tensors (default: as stored)."""
  if not isinstance(like, Mapping):
    if _kind(like) != "metamask":
      raise StateDictError("import_official: the official state_dict is "
                           "MetaMask's; for a Siamese state use import_into("
                           "method, state, tensors, 'official')")
    st = jax.eval_shape(lambda: like.init_state(jax.random.PRNGKey(0), {}))
    like = {"params": st["params"], "batch_stats": st["batch_stats"],
            "mask": st["mask"]}
  rules = official_rules(like)
  return from_state_dict(official_view(state_dict), rules, shapes=like,
                         dtype=dtype,
                         source=source, ignore=_ignored(rules, "official"))


__all__ = ["TARGETS", "official_view", "backbone_rules", "head_rules",
           "official_rules", "torchvision_rules", "import_official", "export",
           "import_into", "covered_variables", "forwards_per_step"]
