"""The official SMA checkpoints (Johnathan-Xie/sma, a Hugging Face
transformers 4.26 fork, ``transformers.models.sma``) <-> maskssl SMA params.

::

    from maskssl.interop import load_state_dict, sma
    params = sma.import_official(load_state_dict("pytorch_model.npz"),
                                 shapes=method.init_params(rng, batch))
    tensors, info = sma.export(method, state, "official")   # SMAForSSL names

Covered: the encoder (``SMAModel`` without decoder: input preprocessor,
latents, layer 1 and the self-attention layers), the reconstruction decoder
(``teacher.reconstruction_decoder`` of ``SMAForSSL``) and the fine-tuning head
(``perceiver.decoder`` of ``SMAForSequenceClassification``).

Name mapping (torch ``named_parameters`` -> maskssl param tree)::

    perceiver.input_preprocessor.input_projection (continuous)  encoder/preprocessor/embed
    perceiver.input_preprocessor.embeddings.weight (bytes)      encoder/preprocessor/embed/embedding
    perceiver.input_preprocessor.position_embeddings.weight     encoder/preprocessor/pos_emb
    perceiver.input_preprocessor.layernorm (eps 1e-12)          encoder/preprocessor/norm
    perceiver.encoding_latents.latents (perceiver mode)         encoder/latents
    perceiver.encoder.cross_attention (layer 1, both modes)     encoder/layer_0
    perceiver.encoder.self_attends.{i}                          encoder/layer_{i+1}
    teacher.reconstruction_decoder.decoder_latents.latents      decoder/queries
    teacher.reconstruction_decoder.pre_layernorm                decoder/ln_pre
    teacher.reconstruction_decoder.decoding_cross_attention     decoder/layer
    teacher.reconstruction_decoder.final_layernorm (eps 1e-12)  decoder/ln_final
    teacher.reconstruction_decoder.final_project                decoder/out
    perceiver.decoder.decoder_latents.latents (classifier)      head/query
    perceiver.decoder.pre_layernorm                             head/ln_pre
    perceiver.decoder.decoding_cross_attention                  head/layer
    perceiver.decoder.final_layernorm (eps 1e-12)               head/ln
    perceiver.decoder.final_project                             head/out

Inside one layer (``SMALayer``): ``attention.attention.layernorm1`` ->
``ln_a``, ``attention.attention.{query,key,value}`` -> ``q`` + ``kv`` (cross
layers: layer 1 and the decoders) or ``qkv`` (self layers),
``attention.output.dense`` -> ``o``, ``layernorm`` -> ``ln_b``,
``mlp.dense1`` / ``mlp.dense2`` -> ``mlp_in`` / ``mlp_out``. LayerNorm
``weight`` / ``bias`` -> ``scale`` / ``bias``.

Layout quirks:

* Linear weights are ``(out, in)`` in torch and ``(in, out)`` in flax.
* maskssl fuses projections: ``kv`` is ``[K | V]`` and ``qkv`` is
  ``[Q | K | V]`` along the output axis (kernel and bias); the split sizes
  are ``v = latent width`` (the width of ``o``) and the rest for Q / K. The
  rules therefore work on a *split view* of the tree (``.../kv/kernel/k``,
  ``.../kv/kernel/v``, ...) that is fused / split around the generic
  :func:`~maskssl.interop.common.from_state_dict` /
  :func:`~maskssl.interop.common.to_state_dict` (bitwise both ways).
* Heads are contiguous channel blocks in both codes (``transpose_for_scores``
  = maskssl's ``_split_heads``), so no head permutation is needed.
* The official state_dict is **aliased**: ``SMAForSSL`` registers its
  ``SMAModel`` also as ``teacher.student_model`` and the input preprocessor
  as ``teacher.encoder_input_preprocesor`` (sic) and
  ``teacher.reconstruction_decoder.encoder_input_preprocessor``; the
  classifier has ``perceiver.decoder.encoder_input_preprocessor``. Import
  reads the canonical name (or an alias when the canonical one is absent,
  e.g. a deduplicated safetensors file) and checks that aliases agree;
  export writes every alias, so ``SMAForSSL(config).load_state_dict(sd,
  strict=True)`` loads the file as is.
* In transformer mode (``encoder_type="self_attention"``) layer 1 is still
  named ``cross_attention`` (its K / V read the raw embeddings, Q the
  normalised ones), and it uses the *self*-attention sizes; the official
  ``num_cross_attention_heads`` / ``encoder_cross_attention_channels`` are
  dead there (kept in ``cross_heads`` / ``cross_qk_dim`` for the round trip).
* LayerNorm eps is not stored: 1e-12 for the preprocessor and the final
  decoder / head LayerNorms, 1e-5 elsewhere, in both codes.
* The official fine-tuning path (``SMAForSequenceClassification
  .from_pretrained`` of an ``SMAForSSL`` checkpoint) keeps ``perceiver.*``
  and drops ``teacher.*``: ``import_official(sd, parts=("encoder",))``.
* ``num_blocks > 1`` (the official weight-shared repetition of the self
  layers) and ``share_decoder_queries=True`` have no maskssl equivalent and
  are rejected by :func:`config_from_official`.

Checked against the official code by ``tests/test_parity_sma.py`` (loss and
every gradient of the three cases of ``parity/sma``, float64 and float32).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from maskssl.interop.common import (Rule, StateDictError, check_rules,
                                    from_state_dict, to_state_dict)

TARGETS = ("official",)
PARTS = ("encoder", "decoder", "head")

ENC = "perceiver."
DEC = "teacher.reconstruction_decoder."
HEAD = "perceiver.decoder."
# (alias prefix, canonical prefix), longest alias first
ALIASES = (
    ("teacher.reconstruction_decoder.encoder_input_preprocessor.",
     "perceiver.input_preprocessor."),
    ("perceiver.decoder.encoder_input_preprocessor.",
     "perceiver.input_preprocessor."),
    ("teacher.encoder_input_preprocesor.", "perceiver.input_preprocessor."),
    ("teacher.student_model.", "perceiver."),
)
_FUSED = {"qkv": ("q", "k", "v"), "kv": ("k", "v")}


@dataclasses.dataclass(frozen=True)
class Structure:
  """What the rules depend on (no sizes: those come from the tensors)."""
  input_kind: str = "continuous"       # "continuous" | "bytes"
  encoder_mode: str = "transformer"    # "transformer" | "perceiver"
  num_self_layers: int = 4
  parts: tuple = ("encoder", "decoder")


# ---- rules -------------------------------------------------------------------
def _lin(torch, path):
  return [Rule(torch + ".weight", path + ("kernel",), "linear"),
          Rule(torch + ".bias", path + ("bias",))]


def _ln(torch, path):
  return [Rule(torch + ".weight", path + ("scale",)),
          Rule(torch + ".bias", path + ("bias",))]


def layer_rules(torch: str, path: tuple, cross: bool) -> list[Rule]:
  """One official ``SMALayer`` (``torch`` prefix, no trailing dot) -> a
  maskssl :class:`~maskssl.models.sma.SMALayer` at ``path`` (split view)."""
  a = torch + ".attention.attention."
  fused = "kv" if cross else "qkv"
  out = _ln(a + "layernorm1", path + ("ln_a",))
  for proj in ("q", "k", "v"):
    name = a + {"q": "query", "k": "key", "v": "value"}[proj]
    mod = "q" if (cross and proj == "q") else fused
    if mod == "q":
      out += _lin(name, path + ("q",))
    else:
      out += [Rule(name + ".weight", path + (mod, "kernel", proj), "linear"),
              Rule(name + ".bias", path + (mod, "bias", proj))]
  out += _lin(torch + ".attention.output.dense", path + ("o",))
  out += _ln(torch + ".layernorm", path + ("ln_b",))
  out += _lin(torch + ".mlp.dense1", path + ("mlp_in",))
  out += _lin(torch + ".mlp.dense2", path + ("mlp_out",))
  return out


def encoder_rules(st: Structure) -> list[Rule]:
  """``perceiver.*`` of ``SMAForSSL`` / ``SMAForSequenceClassification``,
  in the official ``named_parameters`` order."""
  p = ("params", "encoder")
  pre, fpre = ENC + "input_preprocessor.", p + ("preprocessor",)
  pos = [Rule(pre + "position_embeddings.weight", fpre + ("pos_emb",))]
  if st.input_kind == "bytes":
    out = [Rule(pre + "embeddings.weight", fpre + ("embed", "embedding"))] + pos
  else:
    out = pos + _lin(pre + "input_projection", fpre + ("embed",))
  out += _ln(pre + "layernorm", fpre + ("norm",))
  if st.encoder_mode == "perceiver":
    out.append(Rule(ENC + "encoding_latents.latents", p + ("latents",)))
  out += layer_rules(ENC + "encoder.cross_attention", p + ("layer_0",), True)
  for i in range(st.num_self_layers):
    out += layer_rules(f"{ENC}encoder.self_attends.{i}", p + (f"layer_{i + 1}",),
                       False)
  return out


def decoder_rules() -> list[Rule]:
  """``teacher.reconstruction_decoder.*`` (``SMABasicDecoder``)."""
  p = ("params", "decoder")
  return (layer_rules(DEC + "decoding_cross_attention", p + ("layer",), True)
          + _ln(DEC + "pre_layernorm", p + ("ln_pre",))
          + [Rule(DEC + "decoder_latents.latents", p + ("queries",))]
          + _ln(DEC + "final_layernorm", p + ("ln_final",))
          + _lin(DEC + "final_project", p + ("out",)))


def head_rules() -> list[Rule]:
  """``perceiver.decoder.*`` of ``SMAForSequenceClassification``."""
  p = ("params", "head")
  return (layer_rules(HEAD + "decoding_cross_attention", p + ("layer",), True)
          + _ln(HEAD + "pre_layernorm", p + ("ln_pre",))
          + [Rule(HEAD + "decoder_latents.latents", p + ("query",))]
          + _ln(HEAD + "final_layernorm", p + ("ln",))
          + _lin(HEAD + "final_project", p + ("out",)))


def rules(st: Structure) -> list[Rule]:
  out = encoder_rules(st) if "encoder" in st.parts else []
  if "head" in st.parts:
    out += head_rules()
  if "decoder" in st.parts:
    out += decoder_rules()
  return out


def _prefixes(part: str) -> tuple[str, ...]:
  if part == "decoder":
    return ("teacher.",)
  if part == "head":
    return (HEAD,)
  return ()


# ---- structure ---------------------------------------------------------------
def structure_from_params(params: Mapping) -> Structure:
  """The :class:`Structure` of a maskssl SMA param tree (pretraining model
  ``{encoder, decoder}``, classifier ``{encoder, head}``)."""
  params = params.get("params", params)
  enc = params["encoder"]
  layers = [k for k in enc if re.fullmatch(r"layer_\d+", k)]
  return Structure(
      input_kind=("bytes" if "embedding" in enc["preprocessor"]["embed"]
                  else "continuous"),
      encoder_mode="perceiver" if "latents" in enc else "transformer",
      num_self_layers=len(layers) - 1,
      parts=tuple(p for p in PARTS if p in params))


def structure_from_state_dict(sd: Mapping) -> Structure:
  """The :class:`Structure` of a canonical official state_dict."""
  idx = [int(m.group(1)) for k in sd
         if (m := re.match(re.escape(ENC) + r"encoder\.self_attends\.(\d+)\.", k))]
  parts = ["encoder"]
  if any(k.startswith(HEAD) for k in sd):
    parts.append("head")
  if any(k.startswith(DEC) for k in sd):
    parts.append("decoder")
  return Structure(
      input_kind=("bytes" if ENC + "input_preprocessor.embeddings.weight" in sd
                  else "continuous"),
      encoder_mode=("perceiver" if ENC + "encoding_latents.latents" in sd
                    else "transformer"),
      num_self_layers=max(idx) + 1 if idx else 0, parts=tuple(parts))


# ---- split view of the fused projections ------------------------------------
def _split(tree: Mapping) -> dict:
  """``qkv`` / ``kv`` kernels and biases -> ``{q, k, v}`` pieces (numpy
  views). V is as wide as the layer's output projection ``o``."""
  out = {}
  for k, v in tree.items():
    if not isinstance(v, Mapping):
      out[k] = v
      continue
    if k in _FUSED and "kernel" in v and "o" in tree:
      dv = np.shape(tree["o"]["kernel"])[1]
      names = _FUSED[k]
      width = np.shape(v["kernel"])[-1]
      dqk = (width - dv) // (len(names) - 1)
      cuts = np.cumsum([dqk] * (len(names) - 1))
      out[k] = {leaf: dict(zip(names, np.split(np.asarray(v[leaf]), cuts,
                                               axis=-1)))
                for leaf in ("kernel", "bias")}
    else:
      out[k] = _split(v)
  return out


def _fuse(tree: Mapping) -> dict:
  """Inverse of :func:`_split` (concatenation in Q, K, V order)."""
  out = {}
  for k, v in tree.items():
    if not isinstance(v, Mapping):
      out[k] = v
    elif k in _FUSED and isinstance(v.get("kernel"), Mapping):
      out[k] = {leaf: np.concatenate([v[leaf][n] for n in _FUSED[k]], axis=-1)
                for leaf in ("kernel", "bias")}
    else:
      out[k] = _fuse(v)
  return out


def _shape_views(tree: Mapping) -> dict:
  """Arrays or ``ShapeDtypeStruct`` s -> zero-cost numpy views of the same
  shapes (so :func:`_split` can slice them)."""
  return {k: _shape_views(v) if isinstance(v, Mapping) else
          np.broadcast_to(np.zeros((), np.int8), tuple(v.shape))
          for k, v in tree.items()}


def _numpy(tree: Mapping) -> dict:
  return {k: _numpy(v) if isinstance(v, Mapping) else np.asarray(v)
          for k, v in tree.items()}


def _only(tree: Mapping, parts) -> dict:
  return {k: v for k, v in tree.items() if k in parts}


# ---- aliases -----------------------------------------------------------------
def canonical_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Official state_dict -> canonical names only.

  A bare ``SMAModel`` state_dict (no ``perceiver.`` prefix) gets it; alias
  keys are dropped after checking that they equal their canonical tensor
  (an alias fills in a missing canonical name)."""
  sd = dict(state_dict)
  bare = ("input_preprocessor.", "encoder.", "encoding_latents.", "decoder.")
  if not any(k.startswith(("perceiver.", "teacher.")) for k in sd) and any(
      k.startswith(bare) for k in sd):
    sd = {"perceiver." + k: v for k, v in sd.items()}
  out, conflicts = {}, []
  for k, v in sd.items():
    if not any(k.startswith(a) for a, _ in ALIASES):
      out[k] = v
  for k, v in sd.items():
    for alias, canon in ALIASES:
      if k.startswith(alias):
        c = canon + k[len(alias):]
        if c not in out:
          out[c] = v
        elif (np.shape(out[c]) != np.shape(v)
              or not np.array_equal(np.asarray(out[c]), np.asarray(v))):
          conflicts.append(f"{k} != {c}")
        break
  if conflicts:
    raise StateDictError("aliased tensors differ from their canonical copy: "
                         + ", ".join(conflicts))
  return out


def with_aliases(tensors: Mapping[str, np.ndarray], st: Structure) -> dict:
  """Canonical tensors -> the full official ``state_dict()`` (every alias,
  in the official key order)."""
  enc = [k for k in tensors if k.startswith(ENC) and not k.startswith(HEAD)]
  pre = [k for k in enc if k.startswith(ENC + "input_preprocessor.")]
  out = {k: tensors[k] for k in enc}

  def dec_part(prefix, pre_alias):
    for k in [k for k in tensors if k.startswith(prefix)]:
      out[k] = tensors[k]
      if k == prefix + "pre_layernorm.bias":   # module order of the decoder
        for p in pre:
          out[pre_alias + p[len(ENC + "input_preprocessor."):]] = tensors[p]

  if "head" in st.parts:
    dec_part(HEAD, HEAD + "encoder_input_preprocessor.")
  if "decoder" in st.parts:
    for k in enc:
      out["teacher.student_model." + k[len(ENC):]] = tensors[k]
    for p in pre:
      out["teacher.encoder_input_preprocesor." +
          p[len(ENC + "input_preprocessor."):]] = tensors[p]
    dec_part(DEC, DEC + "encoder_input_preprocessor.")
  return out


# ---- import ------------------------------------------------------------------
def import_official(state_dict: Mapping[str, Any], shapes: Optional[Mapping] = None,
                    *, parts: Optional[Sequence[str]] = None, dtype=None,
                    source: str = "state_dict") -> dict:
  """maskssl SMA params (nested dicts of numpy arrays) from an official
  state_dict (``SMAForSSL``, ``SMAForSequenceClassification`` or
  ``SMAModel``; aliases allowed).

  ``shapes``: the params (or ``jax.eval_shape`` structs) of the maskssl
  model to fill; sets the structure and checks every shape. Without it the
  structure is read from the names. ``parts``: the subset of
  ``encoder`` / ``decoder`` / ``head`` to import; the tensors of the other
  parts are dropped (e.g. ``parts=("encoder",)`` loads a pretraining
  checkpoint into a classifier as the official fine-tuning does). Raises
  :class:`StateDictError` listing every missing, unexpected and mis-shaped
  tensor.
  """
  sd = canonical_state_dict(state_dict)
  if shapes is not None:
    shapes = shapes.get("params", shapes)
    st = structure_from_params(shapes)
  else:
    st = structure_from_state_dict(sd)
  if parts is not None:
    bad = [p for p in parts if p not in PARTS]
    if bad:
      raise StateDictError(f"unknown parts {bad}; use a subset of {PARTS}")
    st = dataclasses.replace(st, parts=tuple(p for p in PARTS if p in parts))
  ignore = tuple(x for p in PARTS if p not in st.parts for x in _prefixes(p))
  rs = rules(st)
  split_shapes = None
  if shapes is not None:
    split_shapes = {"params": _split(_shape_views(_only(shapes, st.parts)))}
    check_rules(rs, split_shapes)
  tree = from_state_dict(sd, rs, shapes=split_shapes, dtype=dtype,
                         source=source, ignore=ignore)
  return _fuse(tree.get("params", {}))


# ---- export ------------------------------------------------------------------
def _method_params(method, state):
  params = state["params"] if "params" in state else state
  st = structure_from_params(params)
  return params, st


def export(method, state, target: str = "official", *, decoder: bool = True,
           aliases: bool = True):
  """``(tensors, info)``: the trained SMA model with the official names.

  ``target="official"`` writes the ``SMAForSSL`` state_dict: encoder
  (``perceiver.*``) and, with ``decoder=True`` (default), the
  reconstruction decoder (``teacher.reconstruction_decoder.*``), so the
  file is a complete pretraining checkpoint; with ``aliases=True`` also
  the aliased keys of the official ``state_dict()``, so
  ``SMAForSSL(SMAConfig.from_dict(info["official_config"]))
  .load_state_dict(tensors, strict=True)`` works. Fine-tune it as the
  official scripts do: ``SMAForSequenceClassification.from_pretrained``
  keeps ``perceiver.*`` and initialises the head.
  """
  if target not in TARGETS:
    raise StateDictError(f"SMA export target {target!r} is not supported; "
                         f"use one of {list(TARGETS)}")
  params, st = _method_params(method, state)
  keep = ("encoder", "decoder") if decoder else ("encoder",)
  parts = tuple(p for p in st.parts if p in keep)
  tensors = export_params(params, parts=parts, aliases=aliases)
  return tensors, export_info(method, dataclasses.replace(st, parts=parts))


def export_params(params: Mapping, *, parts: Optional[Sequence[str]] = None,
                  aliases: bool = True) -> dict[str, np.ndarray]:
  """Official state_dict of any maskssl SMA param tree: a pretraining model
  (``SMAForSSL`` names) or a fine-tuned classifier
  (``SMAForSequenceClassification`` names); ``parts`` restricts it."""
  params = params.get("params", params)
  st = structure_from_params(params)
  if parts is not None:
    st = dataclasses.replace(st, parts=tuple(p for p in st.parts if p in parts))
  rs = rules(st)
  split = {"params": _split(_numpy(_only(params, st.parts)))}
  check_rules(rs, split)
  tensors = {k: np.ascontiguousarray(v)
             for k, v in to_state_dict(split, rs).items()}
  return with_aliases(tensors, st) if aliases else tensors


def import_into(method, state, tensors: Mapping[str, Any],
                target: str = "official"):
  """A copy of ``state`` with the params found in ``tensors`` (an
  official state_dict, e.g. from :func:`export`) replaced; the inverse of
  :func:`export`, bitwise. Parts absent from ``tensors`` (the decoder of an
  encoder-only file) keep their values; optimizer state is kept."""
  if target not in TARGETS:
    raise StateDictError(f"SMA import target {target!r} is not supported; "
                         f"use one of {list(TARGETS)}")
  params, st = _method_params(method, state)
  present = structure_from_state_dict(canonical_state_dict(tensors)).parts
  parts = [p for p in st.parts if p in present]
  new = import_official(tensors, shapes=params, parts=parts,
                        source="official state_dict")
  out_params = dict(params)
  for p in parts:
    out_params[p] = _cast_like(new[p], params[p])
  state = dict(state)
  if "params" in state:
    state["params"] = out_params
    return state
  return out_params


def _cast_like(new, old):
  if isinstance(new, Mapping):
    return {k: _cast_like(new[k], old[k]) for k in old}
  return np.asarray(new).astype(np.asarray(old).dtype, copy=False)


# ---- configs -----------------------------------------------------------------
def config_from_official(cfg: Mapping) -> dict:
  """maskssl ``config.model`` / ``config.mask`` fields from an official
  ``SMAConfig`` dict (``config.json`` of a checkpoint): returns
  ``{"model": {...}, "mask": {...}}``. Raises :class:`StateDictError` for
  official options maskssl does not implement."""
  cfg = dict(cfg)
  problems = []
  if int(cfg.get("num_blocks", 1)) != 1:
    problems.append("num_blocks != 1 (weight-shared block repetition)")
  if cfg.get("share_decoder_queries", False):
    problems.append("share_decoder_queries=True")
  if not cfg.get("use_query_residual", True):
    problems.append("use_query_residual=False in the encoder")
  if not cfg.get("dense_use_bias", True):
    problems.append("dense_use_bias=False")
  if cfg.get("hidden_act", "gelu") != "gelu":
    problems.append(f"hidden_act={cfg.get('hidden_act')!r}")
  d = int(cfg["latent_channels"])
  if int(cfg.get("v_channels") or d) != d:
    problems.append("v_channels != latent_channels")
  targs = cfg.get("teacher_args") or {}
  dargs = targs.get("reconstruction_decoder_args") or {}
  e = int(cfg["embedded_channels"])
  if dargs and (int(dargs.get("query_num_channels", e)) != e
                or int(dargs.get("v_channels", e)) != e):
    problems.append("reconstruction decoder width != embedded_channels")
  if problems:
    raise StateDictError("official SMA config not supported: "
                         + "; ".join(problems))
  enc_mode = ("transformer" if cfg.get("encoder_type") == "self_attention"
              else "perceiver")
  model = dict(
      input="bytes" if cfg.get("input_type") == "discrete" else "continuous",
      c_in=int(cfg.get("input_channels") or 1),
      vocab_size=int(cfg.get("num_discrete_tokens") or 262),
      n_max=int(cfg["max_position_embeddings"]),
      embed_dim=e, latent_dim=d, encoder_mode=enc_mode,
      num_latents=int(cfg.get("num_latents") or 256),
      num_self_layers=int(cfg["num_self_attends_per_block"]),
      self_heads=int(cfg["num_self_attention_heads"]),
      self_qk_dim=int(cfg.get("qk_channels") or d),
      self_widening=int(cfg.get("self_attention_widening_factor", 1)),
      cross_heads=int(cfg["num_cross_attention_heads"]),
      cross_qk_dim=int(cfg.get("encoder_cross_attention_channels") or d),
      cross_widening=int(cfg.get("cross_attention_widening_factor", 1)),
      decoder_heads=int(dargs.get("num_heads", 1)),
      decoder_qk_dim=int(dargs.get("qk_channels") or e),
      head_dim=int(cfg.get("decoder_latent_channels") or d),
      head_qk_dim=int(cfg.get("decoder_attention_channels") or d),
      head_heads=int(cfg.get("decoder_heads") or 1),
      hidden_dropout=float(cfg.get("hidden_dropout_prob", 0.0)),
      attn_dropout=float(cfg.get("attention_dropout_prob", 0.0)),
      drop_path=float(cfg.get("drop_path_rate", 0.0)))
  mask = dict(mode=enc_mode, rho=None, curriculum_fraction=0.0)
  for name, args in cfg.get("cross_train_noising_args") or []:
    if name == "RandomlySelectedCrossAttentionMasking":
      mask.update(ratio=float(args["masking_ratio"]),
                  num_per_query=int(args["num_per_query"]),
                  head_aggregation=str(args.get("head_aggregation", "mean")),
                  mask_self=bool(args.get("mask_self", False)))
  return dict(model=model, mask=mask)


def official_config(method) -> dict:
  """The official ``SMAConfig`` fields (``SMAConfig.from_dict``) of a
  maskssl :class:`~maskssl.methods.sma.SMA` pretraining model."""
  e, spec = method.encoder, method.mask_spec
  dec = method.model
  bytes_ = e.input_kind == "bytes"
  out_ch = e.vocab_size if bytes_ else e.c_in
  kw = method.head_kw
  return dict(
      model_type="sma",
      input_type="discrete" if bytes_ else "continuous",
      input_channels=e.c_in, num_discrete_tokens=e.vocab_size,
      max_position_embeddings=e.n_max, use_position_embeddings=True,
      embedded_channels=e.embed_dim, latent_channels=e.latent_dim,
      num_latents=e.num_latents,
      encoder_type=("self_attention" if e.encoder_mode == "transformer"
                    else "cross_attention"),
      num_blocks=1, num_self_attends_per_block=e.num_self_layers,
      num_self_attention_heads=e.self_heads,
      qk_channels=e.self_qk_dim or e.latent_dim, v_channels=e.latent_dim,
      self_attention_widening_factor=e.self_widening,
      num_cross_attention_heads=e.cross_heads,
      encoder_cross_attention_channels=e.cross_qk_dim or e.latent_dim,
      cross_attention_widening_factor=e.cross_widening,
      use_query_residual=True, dense_use_bias=True, hidden_act="gelu",
      hidden_dropout_prob=e.hidden_dropout,
      attention_dropout_prob=e.attn_dropout, drop_path_rate=e.drop_path,
      layernorm_eps=1e-12, use_decoder=False, share_decoder_queries=False,
      share_embedding_weights=False,
      decoder_latent_channels=kw["head_dim"] or e.latent_dim,
      decoder_attention_channels=kw["head_qk_dim"] or e.latent_dim,
      decoder_heads=kw["head_heads"],
      cross_train_noising_args=[["RandomlySelectedCrossAttentionMasking", dict(
          masking_ratio=spec.ratio, num_per_query=spec.num_per_query,
          head_aggregation=spec.head_aggregation, mask_self=spec.mask_self,
          exclude_seen_reconstruction=True, varying_length=True)]],
      cross_eval_noising_args=None,
      teacher_name="ReconstructionTeacher",
      teacher_args=dict(
          reconstruction_loss_fn="crossentropy" if bytes_ else "mse",
          reconstruction_decoder_args=dict(
              query_num_channels=e.embed_dim,
              qk_channels=dec.decoder_qk_dim or e.embed_dim,
              v_channels=e.embed_dim, num_heads=dec.decoder_heads,
              num_outputs=e.n_max, output_channels=out_ch),
          train_transform_args=None, eval_transform_args=None))


def export_info(method, st: Structure) -> dict:
  e = method.encoder
  bytes_ = e.input_kind == "bytes"
  inp = dict(kind=e.input_kind, seq_len=e.n_max, padding="right",
             attention_mask="1 = real token, 0 = padding (official "
                            "attention_mask); maskssl batch key 'valid'")
  if bytes_:
    inp.update(vocab_size=e.vocab_size, tokenizer=(
        "official SMATokenizer = maskssl.data.tokenizer: byte b -> b + 6, "
        "PAD 0, BOS 1, EOS 2, MASK 3, CLS 4, SEP 5; one SEP appended"),
               batch_key="tokens")
  else:
    inp.update(features_per_token=e.c_in, batch_key="x",
               shape="(B, seq_len, features_per_token) float")
  return dict(
      feature_dim=e.latent_dim, input=inp,
      encoder_mode=e.encoder_mode,
      output_tokens=(e.num_latents if e.encoder_mode == "perceiver"
                     else e.n_max),
      pooling=("mean over the latents" if e.encoder_mode == "perceiver"
               else "mean over the valid tokens"),
      official_class=("SMAForSSL" if "decoder" in st.parts else
                      "SMAForSSL / SMAForSequenceClassification (perceiver.* "
                      "only: the encoder)"),
      official_config=official_config(method),
      notes=[
          "Official names and layouts (Johnathan-Xie/sma @ bdc1877, "
          "transformers.models.sma); Linear weights (out, in).",
          "Aliased keys (teacher.student_model.*, "
          "teacher.encoder_input_preprocesor.*, "
          "teacher.reconstruction_decoder.encoder_input_preprocessor.*) "
          "hold the same tensors as their perceiver.* names, as in the "
          "official state_dict(); load with strict=True.",
          "Fine-tune: SMAForSequenceClassification.from_pretrained keeps "
          "perceiver.* and initialises the head."])
