"""SD-MAE / MAE ViT weights: the official PyTorch names and timm names.

Built on :mod:`maskssl.interop.common` (one :class:`Rule` per tensor, the
same rules both ways). Three layouts:

* **official pretraining model** (irsLu/SD-MAE ``modeling_pretrain.
  PretrainVisionTransformer``, MAE/BEiT-style names) <-> the
  :class:`maskssl.methods.sdmae.SDMAE` params: :func:`pretrain_rules`;
* **official classifier** (``modeling_finetune.VisionTransformer`` with
  ``use_mean_pooling=True``; its linear-probe variant with a
  ``BatchNorm1d(affine=False) -> Linear`` head) <->
  :class:`maskssl.models.vit.ViTClassifier` params (+ the linear-probe
  ``w``/``b``/``mean``/``var`` of :mod:`maskssl.evaluators.linear_probe`):
  :func:`classifier_rules`, :func:`linear_probe_rules`;
* **timm** ``VisionTransformer`` (``vit_*_patch*``), encoder only:
  :func:`timm_rules` plus the fused-bias / CLS / position-table step below.

Entry points: :func:`import_official` (state_dict -> flax params),
:func:`import_linear_probe`, :func:`export` (method + train state ->
``(tensors, info)`` for ``target="official"`` or ``"timm"``) and its inverse
:func:`import_into`. Export -> import is bitwise the identity.

Name mapping (official pretraining model; the classifier and timm drop the
``encoder.`` prefix)::

  encoder.patch_embed.proj.{weight,bias}   encoder/patch_embed/{kernel,bias}
  encoder.blocks.i.norm{1,2}.*             encoder/block_i/norm{1,2}/*
  encoder.blocks.i.attn.qkv.weight         encoder/block_i/attn/qkv/kernel
  encoder.blocks.i.attn.{q_bias,v_bias}    encoder/block_i/attn/{q_bias,v_bias}
  encoder.blocks.i.attn.proj.*             encoder/block_i/attn/proj/*
  encoder.blocks.i.mlp.fc{1,2}.*           encoder/block_i/fc{1,2}/* (no mlp)
  encoder.norm.*                           encoder_norm/*            (top level)
  mask_token                               decoder/mask_token
  encoder_to_decoder.weight                decoder/e2d/kernel        (no bias)
  decoder.blocks.i.*, decoder.norm.*       decoder/block_i/*, decoder/norm/*
  decoder.head.*                           pixel_head/*              (top level)
  encoder_proj_head.mlp.{0,2,4}.*          head_enc/fc{1,2,3}/*
  encoder_proj_head.last_layer.weight_v    head_enc/last/kernel
  encoder_proj_head.last_layer.weight_g    -- (all ones, frozen; checked)
  decoder_proh_head.*  (sic, "proh")       head_dec/*
  fc_norm.*, head.*    (classifier)        fc_norm/*, head/*
  head.1.*, head.0.running_{mean,var}      probe w/b, mean/var (probe)

LayerNorm ``weight`` is flax's ``scale``; Linear ``weight`` a ``kernel``.

Layout quirks:

* Linear weights are torch ``(out, in)``, flax kernels ``(in, out)``: a
  transpose (gradients map the same way).
* **Patch embedding.** torch has a stride-p ``Conv2d`` ``(D, C, p, p)``;
  maskssl a Dense on patchified pixels, rows ``(qy*p + qx)*C + c`` (pixel-
  major, channel-minor), so the kernel is ``W.transpose(2, 3, 1, 0)
  .reshape(p*p*C, D)``.
* **qkv.** Fused in both: one ``(3D, D)`` weight, output ``[q | k | v]``,
  head h at ``h*hd:(h+1)*hd`` inside each. The official (BEiT-style)
  attention has no ``qkv.bias`` but ``q_bias`` and ``v_bias``, the key bias
  being 0. timm has one fused ``qkv.bias`` (3D): export writes
  ``[q_bias, 0, v_bias]``; import drops the key third, which is exact, not
  an approximation: a key bias adds ``q . b_k`` to every logit of a query,
  and softmax is invariant to that shift.
* **Distillation heads.** The official last layer is ``weight_norm`` with
  ``W = g v / ||v||`` per output row and ``g`` frozen at 1
  (``norm_last_layer=True``); maskssl keeps only ``v`` (normalised over
  axis 0 of the flax kernel = the same rows), so ``weight_g`` is checked to
  be all ones on import and written as ones on export.
* **CLS token and positions.** SD-MAE has no CLS token, and its position
  table is the fixed 1-D interleaved sin-cos table over the row-major patch
  index (not a parameter, not in the official state_dict; it is recomputed,
  rounded to float32, by both codes). timm stores ``pos_embed`` as a
  parameter: see :func:`export` for how it is written and how to handle
  another image size.
* **Encoder final norm.** The official fine-tuning model (mean pooling) has
  ``norm = Identity``, so loading the pretraining checkpoint into it drops
  ``encoder.norm.*`` (reported unexpected); its ``fc_norm``/``head`` start
  fresh. maskssl's transfer does the same (``params["encoder"]`` 1:1).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import numpy as np

from maskssl.interop.common import (Layout, Rule, StateDictError, check_rules,
                                    from_state_dict, to_state_dict)
from maskssl.models import vit

TARGETS = ("official", "timm")
GAIN = "last_layer.weight_g"
OFFICIAL_HEADS = (("head_enc", "encoder_proj_head"),
                  ("head_dec", "decoder_proh_head"))   # sic: "proh"

# timm's registered names for the standard widths: (dim, depth, heads) ->
# size, and which patch sizes timm registers for that size (at 224).
_TIMM_SIZES = {(192, 12, 3): ("tiny", (16,)),
               (384, 12, 6): ("small", (8, 16, 32)),
               (768, 12, 12): ("base", (8, 16, 32)),
               (1024, 24, 16): ("large", (14, 16, 32))}


# ---- layouts ---------------------------------------------------------------
def patch_embed_layout(patch_size: int, channels: int = 3) -> Layout:
  """torch Conv2d ``(D, C, p, p)`` <-> maskssl Dense ``(p*p*C, D)``."""
  p, c = patch_size, channels
  return Layout(
      lambda w: np.transpose(w, (2, 3, 1, 0)).reshape(p * p * c, -1),
      lambda k: np.transpose(np.reshape(k, (p, p, c, -1)), (3, 2, 0, 1)))


def _patch_size(kernel_rows: int, channels: int = 3) -> int:
  p = math.isqrt(kernel_rows // channels)
  if p * p * channels != kernel_rows:
    raise ValueError(f"patch_embed kernel with {kernel_rows} rows is not "
                     f"p*p*{channels}")
  return p


# ---- rule builders -----------------------------------------------------------
def _ln(torch: str, path: tuple) -> list[Rule]:
  return [Rule(f"{torch}.weight", path + ("scale",)),
          Rule(f"{torch}.bias", path + ("bias",))]


def _dense(torch: str, path: tuple, bias: bool = True) -> list[Rule]:
  rules = [Rule(f"{torch}.weight", path + ("kernel",), "linear")]
  if bias:
    rules.append(Rule(f"{torch}.bias", path + ("bias",)))
  return rules


def _depth(tree: Mapping) -> int:
  ids = [int(m.group(1)) for k in tree
         if (m := re.fullmatch(r"block_(\d+)", k))]
  return max(ids) + 1 if ids else 0


def block_rules(torch: str, path: tuple) -> list[Rule]:
  """One pre-norm block, in the official module order."""
  return (_ln(f"{torch}.norm1", path + ("norm1",))
          + [Rule(f"{torch}.attn.q_bias", path + ("attn", "q_bias")),
             Rule(f"{torch}.attn.v_bias", path + ("attn", "v_bias"))]
          + _dense(f"{torch}.attn.qkv", path + ("attn", "qkv"), bias=False)
          + _dense(f"{torch}.attn.proj", path + ("attn", "proj"))
          + _ln(f"{torch}.norm2", path + ("norm2",))
          + _dense(f"{torch}.mlp.fc1", path + ("fc1",))
          + _dense(f"{torch}.mlp.fc2", path + ("fc2",)))


def encoder_rules(encoder: Mapping, prefix: str = "encoder.",
                  root: tuple = ("params", "encoder"),
                  channels: int = 3) -> list[Rule]:
  """Patch embedding + blocks of an :class:`maskssl.models.vit.Encoder`
  params tree (``prefix`` "encoder." in the pretraining model, "" in the
  classifier and timm)."""
  p = _patch_size(np.shape(encoder["patch_embed"]["kernel"])[0], channels)
  rules = [Rule(f"{prefix}patch_embed.proj.weight",
                root + ("patch_embed", "kernel"),
                patch_embed_layout(p, channels)),
           Rule(f"{prefix}patch_embed.proj.bias", root + ("patch_embed",
                                                          "bias"))]
  for i in range(_depth(encoder)):
    rules += block_rules(f"{prefix}blocks.{i}", root + (f"block_{i}",))
  return rules


def head_rules(torch: str, path: tuple) -> list[Rule]:
  """DINO head: ``mlp.{0,2,4}`` (GELU between) + weight-normed last layer
  (its ``weight_g`` is handled outside the rules, see :func:`_gain_names`)."""
  return (_dense(f"{torch}.mlp.0", path + ("fc1",))
          + _dense(f"{torch}.mlp.2", path + ("fc2",))
          + _dense(f"{torch}.mlp.4", path + ("fc3",))
          + [Rule(f"{torch}.last_layer.weight_v", path + ("last", "kernel"),
                  "linear")])


def pretrain_rules(params: Mapping, channels: int = 3) -> list[Rule]:
  """The official ``PretrainVisionTransformer`` state_dict (minus the
  ``weight_g`` gains) <-> SD-MAE params, in the official key order.
  Without ``head_enc``/``head_dec`` (plain MAE, ``sd_weight == 0``) the
  heads are left out."""
  r = ("params",)
  rules = [Rule("mask_token", r + ("decoder", "mask_token"))]
  rules += encoder_rules(params["encoder"], "encoder.", r + ("encoder",),
                         channels)
  rules += _ln("encoder.norm", r + ("encoder_norm",))
  for i in range(_depth(params["decoder"])):
    rules += block_rules(f"decoder.blocks.{i}", r + ("decoder", f"block_{i}"))
  rules += _ln("decoder.norm", r + ("decoder", "norm"))
  rules += _dense("decoder.head", r + ("pixel_head",))
  rules += _dense("encoder_to_decoder", r + ("decoder", "e2d"), bias=False)
  for ours, theirs in OFFICIAL_HEADS:
    if ours in params:
      rules += head_rules(theirs, r + (ours,))
  check_rules(rules, {"params": params})
  return rules


def classifier_rules(params: Mapping, channels: int = 3) -> list[Rule]:
  """Official ``modeling_finetune.VisionTransformer`` (mean pooling) <->
  :class:`maskssl.models.vit.ViTClassifier` params."""
  r = ("params",)
  rules = (encoder_rules(params["encoder"], "", r + ("encoder",), channels)
           + _ln("fc_norm", r + ("fc_norm",)) + _dense("head", r + ("head",)))
  check_rules(rules, {"params": params})
  return rules


def linear_probe_rules() -> list[Rule]:
  """The official linear-probe head ``Sequential(BatchNorm1d(D,
  affine=False, eps=1e-6), Linear(D, K))`` <-> the standardisation + linear
  classifier of :mod:`maskssl.evaluators.linear_probe`: ``w`` (D, K),
  ``b`` (K,) and the statistics ``mean``/``var`` (the BN running ones;
  maskssl's probe standardises with the exact train-set statistics)."""
  return [Rule("head.0.running_mean", ("batch_stats", "probe", "mean")),
          Rule("head.0.running_var", ("batch_stats", "probe", "var")),
          Rule("head.1.weight", ("params", "probe", "w"), "linear"),
          Rule("head.1.bias", ("params", "probe", "b"))]


def timm_rules(params: Mapping, class_token: bool = True,
               channels: int = 3) -> list[Rule]:
  """timm ``VisionTransformer`` encoder names for the SD-MAE params, with the
  official per-block ``attn.q_bias``/``attn.v_bias`` names standing for
  timm's fused ``attn.qkv.bias`` (fused / split by :func:`export` /
  :func:`import_into`). ``class_token``: the ``global_pool="token"`` model,
  whose final ``norm`` is the encoder's final LayerNorm; otherwise the
  ``class_token=False, global_pool="avg"`` model (``norm`` is Identity
  there; its ``fc_norm`` is written separately)."""
  rules = encoder_rules(params["encoder"], "", ("params", "encoder"),
                        channels)
  if class_token:
    rules += _ln("norm", ("params", "encoder_norm"))
  return rules


# ---- helpers -----------------------------------------------------------------
def _gain_names(params: Mapping) -> list[str]:
  return [f"{theirs}.{GAIN}" for ours, theirs in OFFICIAL_HEADS
          if ours in params]


def _fail(source: str, problems: list[str], err: Exception | None = None):
  head = str(err) if err is not None else f"{source} does not fit the model:"
  raise StateDictError("\n  ".join([head] + problems))


def _convert(sd, rules, shapes, *, dtype=None, source="state_dict",
             problems=(), ignore=()):
  """``from_state_dict`` plus the problems found outside the rules (gains,
  fused biases, tables), all reported in one error."""
  problems = list(problems)
  try:
    out = from_state_dict(sd, rules, shapes=shapes, dtype=dtype,
                          source=source, ignore=ignore)
  except StateDictError as e:
    _fail(source, problems, e)
  if problems:
    _fail(source, problems)
  return out


def _check_gains(sd: dict, names: list[str], out_dim: int | None):
  """Pop the frozen weight-norm gains from ``sd``; problems as strings."""
  problems = []
  for k in names:
    if k not in sd:
      problems.append(f"missing: {k}")
      continue
    g = np.asarray(sd.pop(k))
    if out_dim is not None and g.shape != (out_dim, 1):
      problems.append(f"mis-shaped: {k}: {g.shape}, expected ({out_dim}, 1)")
    elif not np.all(g == 1):
      problems.append(f"invalid: {k} must be all ones (maskssl freezes the "
                      f"weight-norm gain at 1, as norm_last_layer=True "
                      f"does); max |g - 1| = {np.abs(g - 1).max():.3g}")
  return problems


def _shapes(like) -> tuple[Mapping, int]:
  """(params shape tree, channels) of an SDMAE method, a ViTClassifier or
  an SDMAEModel module, or a params tree."""
  from maskssl.methods.sdmae import SDMAE
  if isinstance(like, SDMAE):
    return jax.eval_shape(like.init_params, jax.random.PRNGKey(0)), 3
  if isinstance(like, vit.ViTClassifier):
    x = jax.ShapeDtypeStruct((1, like.image_size, like.image_size, 3),
                             np.uint8)
    return jax.eval_shape(like.init, jax.random.PRNGKey(0), x)["params"], 3
  if isinstance(like, Mapping):
    return like, 3
  raise TypeError(f"cannot infer the model from {type(like).__name__}; pass "
                  "an SDMAE method, a ViTClassifier or a params tree")


def _dtype_of(tree) -> Any:
  return np.dtype(jax.tree_util.tree_leaves(tree)[0].dtype)


# ---- import ------------------------------------------------------------------
def import_official(state_dict: Mapping[str, np.ndarray], like, *,
                    dtype=None, source: str = "state_dict") -> dict:
  """Flax params from an official SD-MAE state_dict.

  ``like`` names the model and its shapes: an :class:`SDMAE` method (or its
  params tree) for the pretraining model, a
  :class:`maskssl.models.vit.ViTClassifier` (or its params tree) for the
  fine-tuning classifier. Missing, unexpected and mis-shaped tensors (and
  weight-norm gains that are not 1) raise one :class:`StateDictError`
  listing each. Returns nested dicts of numpy arrays (``dtype``: cast the
  floating ones, default: as stored).
  """
  shapes, channels = _shapes(like)
  sd = dict(state_dict)
  if "decoder" in shapes:
    rules = pretrain_rules(shapes, channels)
    out_dim = (shapes["head_enc"]["last"]["kernel"].shape[1]
               if "head_enc" in shapes else None)
    problems = _check_gains(sd, _gain_names(shapes), out_dim)
  elif "fc_norm" in shapes:
    rules, problems = classifier_rules(shapes, channels), []
  else:
    raise TypeError("``like`` is neither the pretraining model (needs "
                    "'decoder') nor the classifier (needs 'fc_norm')")
  out = _convert(sd, rules, {"params": shapes}, dtype=dtype, source=source,
                 problems=problems)
  return out["params"]


def import_linear_probe(state_dict: Mapping[str, np.ndarray], like, *,
                        dtype=None, source: str = "state_dict"):
  """``(params, probe)`` from the official linear-probe model (the
  classifier with ``head = Sequential(BatchNorm1d(affine=False), Linear)``):
  ``params`` = the :class:`ViTClassifier` tree without ``head``, ``probe``
  = ``dict(w, b, mean, var)`` as in :mod:`maskssl.evaluators.linear_probe`.
  ``like``: a ViTClassifier or its params tree."""
  shapes, channels = _shapes(like)
  shapes = {k: v for k, v in shapes.items() if k != "head"}
  r = ("params",)
  rules = (encoder_rules(shapes["encoder"], "", r + ("encoder",), channels)
           + _ln("fc_norm", r + ("fc_norm",)) + linear_probe_rules())
  d = shapes["fc_norm"]["scale"].shape[0]
  k = next((np.shape(state_dict[n])[0] for n in ("head.1.bias",
                                                  "head.1.weight")
            if n in state_dict), 0)
  probe_shapes = {"params": {"probe": {"w": np.zeros((d, k)),
                                       "b": np.zeros((k,))}},
                  "batch_stats": {"probe": {"mean": np.zeros((d,)),
                                            "var": np.zeros((d,))}}}
  probe_shapes["params"].update(shapes)
  out = _convert(state_dict, rules, probe_shapes, dtype=dtype, source=source,
                 ignore=("head.0.num_batches_tracked",))
  params = dict(out["params"])
  probe = dict(params.pop("probe"), **out["batch_stats"]["probe"])
  return params, probe


# ---- export ------------------------------------------------------------------
def timm_model_name(dim: int, depth: int, heads: int, patch_size: int):
  """timm's registered ``vit_<size>_patch<p>_224`` for these widths, or
  None (then build ``timm.models.vision_transformer.VisionTransformer``
  with ``info["timm"]["kwargs"]``)."""
  size = _TIMM_SIZES.get((dim, depth, heads))
  if size is None or patch_size not in size[1]:
    return None
  return f"vit_{size[0]}_patch{patch_size}_224"


def _info(method, target: str, class_token: bool) -> dict:
  kw = method.kw
  info = dict(
      target=target, method="sdmae", feature_dim=kw["enc_dim"],
      patch_size=kw["patch_size"], image_size=kw["image_size"],
      num_patches=method.num_patches, channels=3,
      input=dict(
          description="RGB, uint8 / 255, resized (bilinear) to image_size, "
                      "then (x - mean) / std; torch models take NCHW",
          mean=[float(v) for v in vit.IMAGENET_MEAN],
          std=[float(v) for v in vit.IMAGENET_STD]),
      features=("mean over all patch tokens of the encoder blocks (no final "
                "norm), then LayerNorm without affine, eps 1e-6 (SDMAE.encode"
                f", encode_pool={method.encode_pool!r})"),
      model=dict(kw, layer_norm_eps=1e-6, qkv_bias="q_bias/v_bias only",
                 positions="fixed 1-D interleaved sin-cos, no CLS token",
                 sd_weight=method.sd_weight))
  if target == "timm":
    name = timm_model_name(kw["enc_dim"], kw["enc_depth"], kw["enc_heads"],
                           kw["patch_size"])
    create = dict(num_classes=0, img_size=kw["image_size"])
    if not class_token:
      create.update(class_token=False, global_pool="avg")
    vt = dict(patch_size=kw["patch_size"], embed_dim=kw["enc_dim"],
              depth=kw["enc_depth"], num_heads=kw["enc_heads"],
              mlp_ratio=kw["mlp_ratio"], qkv_bias=True, **create)
    args = ", ".join(f"{k}={v!r}" for k, v in create.items())
    info["timm"] = dict(
        model_name=name, create_model_kwargs=create, kwargs=vt,
        class_token=class_token,
        code=(f'timm.create_model("{name}", {args})' if name else
              "timm.models.vision_transformer.VisionTransformer(**kwargs)"),
        pos_embed="fixed 1-D sin-cos table for image_size; for another size "
                  "put maskssl.models.vit.sincos_1d(N, D) in it (do not "
                  "resample it as a 2-D grid) and keep it frozen")
  else:
    hd = method.model
    info["official"] = dict(
        model="modeling_pretrain.PretrainVisionTransformer",
        kwargs=dict(img_size=kw["image_size"], patch_size=kw["patch_size"],
                    encoder_embed_dim=kw["enc_dim"],
                    encoder_depth=kw["enc_depth"],
                    encoder_num_heads=kw["enc_heads"],
                    decoder_num_classes=3 * kw["patch_size"] ** 2,
                    decoder_embed_dim=kw["dec_dim"],
                    decoder_depth=kw["dec_depth"],
                    decoder_num_heads=kw["dec_heads"],
                    mlp_ratio=kw["mlp_ratio"], qkv_bias=True,
                    dino_head_dim=hd.head_out, dino_hidden_dim=hd.head_hidden,
                    dino_bottleneck_dim=hd.head_bottleneck))
  return info


def export(method, state: Mapping, target: str, *, class_token: bool = True,
           dtype=None) -> tuple[dict[str, np.ndarray], dict]:
  """``(tensors, info)``: the SD-MAE weights under another code's names.

  ``target="official"``: the whole pretraining model with the official
  SD-MAE names (``PretrainVisionTransformer.state_dict()``, key order
  included, the weight-norm gains written as ones); plain MAE
  (``sd_weight == 0``) has no distillation heads, so the official model
  (which always builds them) loads it with ``strict=False``.

  ``target="timm"``: the encoder for timm's ``VisionTransformer``, e.g.
  ``timm.create_model("vit_small_patch16_224", num_classes=0,
  img_size=96)`` for ViT-S/16 at 96 px (the name for the widths is
  ``info["timm"]["model_name"]``; None for non-standard widths, then
  ``VisionTransformer(**info["timm"]["kwargs"])``); ``model.
  load_state_dict(tensors)`` is strict-clean. Keys: ``cls_token``,
  ``pos_embed``, ``patch_embed.proj.*``, ``blocks.i.{norm1, attn.qkv,
  attn.proj, norm2, mlp.fc1, mlp.fc2}.*`` (``qkv.bias`` = ``[q_bias, 0,
  v_bias]``), ``norm.*`` (the encoder's final LayerNorm).

  * SD-MAE has no CLS token: ``cls_token`` and the CLS row of ``pos_embed``
    are zeros. A zero token still takes part in attention, so this model's
    patch tokens are not maskssl's. ``class_token=False`` writes the exact
    equivalent instead, for ``create_model(name, num_classes=0,
    img_size=S, class_token=False, global_pool="avg")`` (timm >= 0.9, where
    ``VisionTransformer`` has ``class_token``): no ``cls_token``,
    ``pos_embed`` without the CLS row, and ``fc_norm`` = ones / zeros
    (norm is Identity there), so ``forward_features`` + pooling +
    ``fc_norm`` give exactly :meth:`SDMAE.encode`'s features (the official
    fine-tuning model's architecture).
  * ``pos_embed`` holds maskssl's fixed sin-cos table (float32-rounded,
    ``(1, [1 +] N, D)`` for ``N = (image_size / p)^2``), so the model must
    be created with ``img_size=image_size`` (224 gives a size-mismatch).
    For another size, rebuild the table as
    ``maskssl.models.vit.sincos_1d(N_new, D)`` rather than timm's 2-D
    ``resample_abs_pos_embed`` (the table is 1-D over the flattened patch
    index, not a 2-D grid), and freeze it (``pos_embed.requires_grad_
    (False)``) to keep the positions fixed as in SD-MAE.

  ``info``: ``feature_dim``, ``patch_size``, ``image_size``,
  ``num_patches``, the input normalisation (``input.mean/std``: the float32
  ImageNet values maskssl uses), the model config and the target's model
  class / kwargs. ``dtype``: cast the floating tensors (default: stored).
  """
  if target not in TARGETS:
    raise StateDictError(f"unknown export target {target!r} for sdmae; "
                         f"choose one of {', '.join(TARGETS)}")
  params = state["params"]
  info = _info(method, target, class_token)
  if target == "official":
    rules = pretrain_rules(params)
    flat = to_state_dict({"params": params}, rules, dtype=dtype)
    tensors = {}
    for k, v in flat.items():
      if k.endswith(".last_layer.weight_v"):     # official order: g, then v
        tensors[k[:-1] + "g"] = np.ones((v.shape[0], 1), v.dtype)
      tensors[k] = v
    return tensors, info
  flat = to_state_dict({"params": params}, timm_rules(params, class_token),
                       dtype=dtype)
  dt = flat["patch_embed.proj.weight"].dtype
  d, n = method.kw["enc_dim"], method.num_patches
  pe = vit.sincos_1d(n, d).astype(dt)
  tensors = {}
  if class_token:
    tensors["cls_token"] = np.zeros((1, 1, d), dt)
    pe = np.concatenate([np.zeros((1, d), dt), pe], 0)
  tensors["pos_embed"] = pe[None]
  for k, v in flat.items():
    m = re.fullmatch(r"blocks\.(\d+)\.attn\.(q|v)_bias", k)
    if m is None:
      tensors[k] = v
    elif m.group(2) == "v":   # written once, after q_bias was seen
      q = flat[f"blocks.{m.group(1)}.attn.q_bias"]
      tensors[f"blocks.{m.group(1)}.attn.qkv.bias"] = np.concatenate(
          [q, np.zeros_like(q), v])
  if not class_token:
    tensors["fc_norm.weight"] = np.ones((d,), dt)
    tensors["fc_norm.bias"] = np.zeros((d,), dt)
  # timm's module order: qkv.bias right after qkv.weight
  order = {k: i for i, k in enumerate(timm_names(method.kw["enc_depth"],
                                                 class_token))}
  return dict(sorted(tensors.items(), key=lambda kv: order[kv[0]])), info


def timm_names(depth: int, class_token: bool = True) -> list[str]:
  """The timm VisionTransformer state_dict keys export writes (module
  order; ``num_classes=0``, so no ``head.*``)."""
  names = (["cls_token"] if class_token else []) + [
      "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
  for i in range(depth):
    names += [f"blocks.{i}.{n}" for n in (
        "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
        "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
        "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
  return names + (["norm.weight", "norm.bias"] if class_token
                  else ["fc_norm.weight", "fc_norm.bias"])


def _timm_to_rule_names(tensors: Mapping, method, class_token: bool):
  """timm tensors -> the names of :func:`timm_rules` (q/v bias split, the
  tables checked and dropped) + problems, in timm names."""
  sd, problems = dict(tensors), []
  d, n = method.kw["enc_dim"], method.num_patches
  table = vit.sincos_1d(n, d).astype(np.float64)
  if class_token:
    if "cls_token" not in sd:
      problems.append("missing: cls_token")
    else:
      cls = np.asarray(sd.pop("cls_token"))
      if cls.shape != (1, 1, d):
        problems.append(f"mis-shaped: cls_token: {cls.shape}, expected "
                        f"{(1, 1, d)}")
      elif np.any(cls != 0):
        problems.append("invalid: cls_token is not zero; maskssl's ViT has "
                        "no CLS token")
    table = np.concatenate([np.zeros((1, d)), table], 0)
  if "pos_embed" not in sd:
    problems.append("missing: pos_embed")
  else:
    pe = np.asarray(sd.pop("pos_embed"))
    if pe.shape != (1,) + table.shape:
      problems.append(f"mis-shaped: pos_embed: {pe.shape}, expected "
                      f"{(1,) + table.shape} (image_size "
                      f"{method.image_size}, patch {method.patch_size})")
    elif np.abs(pe[0] - table).max() > 1e-6:
      problems.append("invalid: pos_embed is not maskssl's fixed sin-cos "
                      f"table (max |diff| {np.abs(pe[0] - table).max():.3g});"
                      " maskssl's positions are not parameters")
  if not class_token:
    for k, want in (("fc_norm.weight", 1.0), ("fc_norm.bias", 0.0)):
      if k not in sd:
        problems.append(f"missing: {k}")
      elif np.any(np.asarray(sd.pop(k)) != want):
        problems.append(f"invalid: {k} must be {want:g} (maskssl's encoder "
                        "pools with a parameter-free LayerNorm)")
  for i in range(method.kw["enc_depth"]):
    k = f"blocks.{i}.attn.qkv.bias"
    b = np.asarray(sd.pop(k)) if k in sd else None
    if b is None:
      problems.append(f"missing: {k}")
    elif b.shape != (3 * d,):
      problems.append(f"mis-shaped: {k}: {b.shape}, expected {(3 * d,)}")
    if b is None or b.shape != (3 * d,):
      b = np.zeros((3 * d,), np.float32)       # reported above
    # the key third is dropped: softmax is invariant to a key bias
    sd[f"blocks.{i}.attn.q_bias"] = b[:d]
    sd[f"blocks.{i}.attn.v_bias"] = b[2 * d:]
  return sd, problems


def import_into(method, state: Mapping, tensors: Mapping[str, np.ndarray],
                target: str, *, source: str = "state_dict") -> dict:
  """The inverse of :func:`export`: a new ``state`` whose covered params
  (everything for ``"official"``, the encoder [+ its final norm] for
  ``"timm"``) come from ``tensors``, cast to the dtypes of ``state``'s
  params. The timm layout (with or without ``cls_token``) is detected."""
  if target not in TARGETS:
    raise StateDictError(f"unknown import target {target!r} for sdmae; "
                         f"choose one of {', '.join(TARGETS)}")
  params = state["params"]
  dtype = _dtype_of(params)
  if target == "official":
    new = import_official(tensors, params, dtype=dtype, source=source)
  else:
    class_token = "cls_token" in tensors or "norm.weight" in tensors
    sd, problems = _timm_to_rule_names(tensors, method, class_token)
    rules = timm_rules(params, class_token)
    new = _convert(sd, rules, {"params": params}, dtype=dtype, source=source,
                   problems=problems)["params"]
  merged = dict(params)
  for k, v in new.items():
    merged[k] = _merge(params[k], v)
  return dict(state, params=merged)


def _merge(old, new):
  if isinstance(new, Mapping):
    out = dict(old)
    for k, v in new.items():
      out[k] = _merge(old[k], v)
    return out
  return jax.numpy.asarray(new)
