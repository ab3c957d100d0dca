"""SD-MAE parity with the official PyTorch code (irsLu/SD-MAE @ 3ec3383).

The cases (``shared/data/parity/sdmae``) were produced by the official
modules on a tiny ViT (img 32, patch 8, encoder 64/2/4, decoder 32/1/2,
heads 64/32/256), float64 and float32, with every random draw recorded:

* case A: the pretraining model with both distillation heads, two
  consecutive loss evaluations on the same weights, the center carried
  over (maskssl's own center from step 1 feeds step 2);
* case B: the fine-tuning classifier (mean pooling, ``fc_norm``) and the
  linear-probe head (``BatchNorm1d(affine=False) -> Linear``).

maskssl's own loss / gradients run on the converted weights and are compared
with the official values at the tolerances of the case's SOURCE.md. Also:
the converters (export -> import bitwise, official / timm names and shapes,
errors naming every bad tensor).
"""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maskssl.evaluators.linear_probe import standardize
from maskssl.interop import StateDictError
from maskssl.interop import vit as iv
from maskssl.losses.mae import normalized_patch_targets
from maskssl.masks.random_patches import mask_indices, num_masked
from maskssl.methods.sdmae import SDMAE
from maskssl.methods.supervised import supervised_loss
from maskssl.models import vit

# (losses, arrays / gradients, center / teacher probs, global grad norm)
TOL = {"f64": dict(loss=1e-10, array=1e-9, center=1e-10, norm=1e-9),
       "f32": dict(loss=1e-5, array=1e-4, center=1e-5, norm=1e-4)}
_CASE = {}


def _load(shared_data):
  path = shared_data / "parity" / "sdmae" / "cases.npz"
  if not path.exists():
    pytest.skip(f"{path} not found")
  if "z" not in _CASE:
    with np.load(path, allow_pickle=False) as z:
      _CASE["z"] = {k: z[k] for k in z.files}
  return _CASE["z"]


def tiny_config(compute_dtype="float32", sd_weight=0.2):
  """Case A's model: ``pretrain_mae_small_patch16_224`` at tiny widths."""
  return ml_collections.ConfigDict(dict(
      method="sdmae", seed=0, batch_size=3, total_steps=10,
      optim=dict(name="adamw", lr=1e-3, weight_decay=0.05),
      model=dict(image_size=32, patch_size=8, enc_dim=64, enc_depth=2,
                 enc_heads=4, dec_dim=32, dec_depth=1, dec_heads=2,
                 compute_dtype=compute_dtype),
      sdmae=dict(mask_ratio=0.6, sd_weight=sd_weight, head_hidden=64,
                 head_bottleneck=32, head_out=256)))


def official_sd(z, case, tag):
  names = z[f"{case}_param_names"]
  return {str(n): z[f"{case}_{tag}_param/{n}"] for n in names}


def rel(a, ref):
  """max |a - ref| / max |ref| (per array, as SOURCE.md measures)."""
  a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
  assert a.shape == ref.shape, (a.shape, ref.shape)
  return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-300))


def nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def compile_fast(fn, *args):
  """jit + compile at XLA's lowest backend optimisation level: these graphs
  are tiny and compile time (not run time) is what these tests cost."""
  lowered = jax.jit(fn).lower(*args)
  try:
    return lowered.compile({"xla_backend_optimization_level": 0})
  except Exception:  # noqa: BLE001  (option unknown to this XLA)
    return lowered.compile()


def taps(fn):
  """Wrap ``fn`` so it also returns ``{module path: (first arg, output)}`` of
  every flax ``__call__`` it runs (as has_aux data: safe under grad)."""
  def wrapped(*args):
    rec = {}

    def icpt(next_fun, a, kw, ctx):
      out = next_fun(*a, **kw)
      if ctx.method_name == "__call__":
        rec["/".join(ctx.module.path)] = (a[0] if a else None, out)
      return out
    with nn.intercept_methods(icpt):
      loss, aux = fn(*args)
    return loss, (aux, rec)
  return wrapped


class Report:
  """Collects max errors and asserts them against the tolerance."""

  def __init__(self, tag, title):
    self.tag, self.title, self.errs = tag, title, {}

  def check(self, name, err, kind):
    self.errs[name] = err
    assert err <= TOL[self.tag][kind], (self.title, name, err)

  def show(self):
    print(f"\n[{self.title}]", json.dumps(
        {k: float(f"{v:.3g}") for k, v in self.errs.items()}))


# ---- case A: pretraining, two steps -----------------------------------------

@pytest.mark.parametrize("tag", ["f64", "f32"])
def test_case_a_pretraining_two_steps(shared_data, tag):
  z = _load(shared_data)
  dt = {"f64": "float64", "f32": "float32"}[tag]
  with jax.enable_x64(tag == "f64"):
    m = SDMAE(tiny_config(dt))
    params = iv.import_official(official_sd(z, "a", tag), m)
    rules = iv.pretrain_rules(params)
    # the official float32-rounded constants, also in the float64 run
    np.testing.assert_array_equal(vit.sincos_1d(16, 64), z["a_pos_embed_enc"])
    np.testing.assert_array_equal(vit.sincos_1d(16, 32), z["a_pos_embed_dec"])
    np.testing.assert_array_equal(vit.IMAGENET_MEAN, z["norm_mean"])
    np.testing.assert_array_equal(vit.IMAGENET_STD, z["norm_std"])
    # int(0.6 * 16) = 9 masked, as RandomMaskingGenerator
    assert m.n_masked == num_masked(16, 0.6) == 9

    def step(params, center, u8, mask):
      # all device work in one compiled call: compile time is the cost here
      ids_vis, ids_mask = mask_indices(mask, m.n_masked)
      x01 = m.prepare(u8)
      (loss, ((met, new_c), rec)), g = jax.value_and_grad(
          taps(m.losses), has_aux=True)(params, center, x01, ids_vis,
                                        ids_mask)
      head = vit.DINOHead(64, 32, 256, m.dtype)     # per token, no pool
      tokens = {k: head.apply({"params": params[k]}, rec[k][0])
                for k in ("head_enc", "head_dec")}
      teacher = rec["head_dec"][1]
      inter = dict(
          images=rec["encoder"][0], patch_embed=rec["encoder/patch_embed"][1],
          enc_out=rec["encoder_norm"][1], e2d=rec["decoder/e2d"][1],
          dec_in=rec["decoder/block_0"][0],
          dec_vis=rec["decoder"][1][:, :ids_vis.shape[1]],
          dec_pred=rec["pixel_head"][1], student=rec["head_enc"][1],
          teacher=teacher, student_tokens=tokens["head_enc"],
          teacher_tokens=tokens["head_dec"],
          target_all=normalized_patch_targets(x01, 8))
      out = dict(loss=loss, loss_sd=met["loss_sd"], loss_mse=met["loss_rec"],
                 center_after=new_c, grad_norm=optax.tree.norm(g),
                 teacher_probs=jax.nn.softmax((teacher - center) / 0.04, -1),
                 target=vit.take_tokens(inter["target_all"], ids_mask),
                 ids_vis=ids_vis, ids_mask=ids_mask)
      return out, inter, g

    center = jnp.zeros((1, 256), m.float_dtype)
    fn = compile_fast(step, params, center, z["a_s1_images_u8"],
                      z["a_s1_mask"])
    rep = Report(tag, f"case A {tag}")
    for s in (1, 2):
      pre = f"a_{tag}_s{s}_"
      mask = z[f"a_s{s}_mask"]
      assert (mask.sum(1) == 9).all()
      rep.check(f"s{s}/center_before", rel(center, z[pre + "center_before"]),
                "center")
      out, inter, g = jax.device_get(fn(params, center,
                                        z[f"a_s{s}_images_u8"], mask))
      # the recorded draws and maskssl's index order agree exactly
      ids_vis, ids_mask = out.pop("ids_vis"), out.pop("ids_mask")
      np.testing.assert_array_equal(ids_vis, z[f"a_s{s}_ids_vis"])
      np.testing.assert_array_equal(ids_mask, z[f"a_s{s}_ids_mask"])
      kinds = dict(loss="loss", loss_sd="loss", loss_mse="loss",
                   center_after="center", teacher_probs="center",
                   grad_norm="norm", target="array")
      for k, kind in kinds.items():
        rep.check(f"s{s}/{k}", rel(out[k], z[pre + k]), kind)
      ref = dict(
          images=np.transpose(z[pre + "images"], (0, 2, 3, 1)),
          patch_embed=np.take_along_axis(z[pre + "patch_embed"],
                                         ids_vis[..., None], 1))
      act = max(rel(inter[k], ref[k] if k in ref else z[pre + k])
                for k in inter)
      rep.check(f"s{s}/activations(max)", act, "array")
      g_sd = iv.to_state_dict({"params": g}, rules)
      assert sorted(g_sd) == sorted(map(str, z["a_grad_names"]))
      worst = max((rel(g_sd[n], z[pre + "grad/" + n]), n) for n in g_sd)
      rep.check(f"s{s}/grads(max)", worst[0], "array")
      center = out["center_after"]           # maskssl's center into step 2
    rep.show()


# ---- case B: classifier and linear probe ------------------------------------

@pytest.mark.parametrize("tag", ["f64", "f32"])
def test_case_b_classifier_and_linear_probe(shared_data, tag):
  z = _load(shared_data)
  dt = {"f64": jnp.float64, "f32": jnp.float32}[tag]
  with jax.enable_x64(tag == "f64"):
    m = SDMAE(tiny_config({"f64": "float64", "f32": "float32"}[tag]))
    clf = m.classifier(2)
    clf = clf.clone(drop_path=0.0)           # the case runs with drop-path 0
    sd = official_sd(z, "b", tag)
    params = iv.import_official(sd, clf)
    rules = iv.classifier_rules(params)
    batch = {"image": jnp.asarray(z["b_images_u8"])}
    labels = jnp.asarray(z["b_labels"])

    def loss_fn(params):
      logits = clf.apply({"params": params}, batch, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             labels).mean()
      return loss, logits

    def step(params):
      (loss, (logits, rec)), g = jax.value_and_grad(
          taps(loss_fn), has_aux=True)(params)
      inter = dict(images=rec["encoder"][0], tokens=rec["encoder"][1],
                   pooled=rec["fc_norm"][0], features=rec["fc_norm"][1],
                   logits=logits)
      return loss, g, inter, optax.tree.norm(g), supervised_loss(
          "multiclass", logits, labels)

    loss, g, inter, g_norm, sup_loss = jax.device_get(
        compile_fast(step, params)(params))
    rep = Report(tag, f"case B {tag}")
    pre = f"b_{tag}_"
    rep.check("loss", rel(loss, z[pre + "loss"]), "loss")
    if tag == "f32":                         # maskssl's fine-tuning loss
      rep.check("loss(supervised_loss)", rel(sup_loss, z[pre + "loss"]),
                "loss")
    ref = dict(images=np.transpose(z[pre + "images"], (0, 2, 3, 1)))
    rep.check("activations(max)", max(
        rel(inter[k], ref[k] if k in ref else z[pre + k]) for k in inter),
        "array")
    g_sd = iv.to_state_dict({"params": g}, rules)
    assert sorted(g_sd) == sorted(map(str, z["b_grad_names"]))
    rep.check("grads(max)", max(rel(g_sd[n], z[pre + "grad/" + n])
                                for n in g_sd), "array")
    rep.check("grad_norm", rel(g_norm, z[pre + "grad_norm"]), "norm")

    # linear probe: the official model's state_dict -> maskssl's probe
    lp = {k: v for k, v in sd.items() if not k.startswith("head.")}
    lp.update({"head.0.running_mean": z[f"b_lp_{tag}_bn_running_mean"],
               "head.0.running_var": z[f"b_lp_{tag}_bn_running_var"],
               "head.0.num_batches_tracked": np.array(1),
               "head.1.weight": sd["head.weight"],
               "head.1.bias": sd["head.bias"]})
    lp_params, probe = iv.import_linear_probe(lp, clf)
    jax.tree_util.tree_map(np.testing.assert_array_equal, lp_params,
                           {k: params[k] for k in ("encoder", "fc_norm")})
    feats = np.asarray(inter["features"])
    lpre = f"b_lp_{tag}_"
    rep.check("lp/bn_in", rel(feats, z[lpre + "bn_in"]), "array")
    # train-mode BatchNorm(affine=False) = maskssl's probe standardisation
    # (biased variance, eps 1e-6) with this batch's statistics
    (x,) = standardize(feats, eps=1e-6)
    rep.check("lp/bn_out", rel(x, z[lpre + "bn_out"]), "array")
    # the running statistics torch keeps (momentum 0.1, unbiased variance)
    rep.check("lp/running_mean", rel(0.1 * feats.mean(0),
                                     z[lpre + "bn_running_mean"]), "array")
    rep.check("lp/running_var", rel(0.9 + 0.1 * feats.var(0, ddof=1),
                                    z[lpre + "bn_running_var"]), "array")

    def lp_loss(p):             # maskssl's probe: softmax(x W + b), CE
      logits = jnp.asarray(x, dt) @ p["w"] + p["b"]
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean(), logits

    def lp_step(p):
      (l, logits), g = jax.value_and_grad(lp_loss, has_aux=True)(p)
      return l, logits, g, optax.tree.norm(g)

    wb = {"w": jnp.asarray(probe["w"], dt), "b": jnp.asarray(probe["b"], dt)}
    lp_l, lp_logits, lp_g, lp_norm = jax.device_get(
        compile_fast(lp_step, wb)(wb))
    rep.check("lp/logits", rel(lp_logits, z[lpre + "logits"]), "array")
    rep.check("lp/loss", rel(lp_l, z[lpre + "loss"]), "loss")
    lp_g_sd = iv.to_state_dict({"params": {"probe": lp_g}},
                               iv.linear_probe_rules()[2:])
    rep.check("lp/grads(max)", max(rel(lp_g_sd[n], z[lpre + "grad/" + n])
                                   for n in map(str, z["b_lp_grad_names"])),
              "array")
    rep.check("lp/grad_norm", rel(lp_norm, z[lpre + "grad_norm"]), "norm")
    rep.show()


def test_case_b_transfer_drops_what_the_official_load_drops(shared_data):
  """The official fine-tuning load (strip ``encoder.``, strict=False) and
  maskssl's transfer (``params["encoder"]`` 1:1) agree: the same weights
  reach the classifier, and the encoder's final norm is dropped by both."""
  z = _load(shared_data)
  a = official_sd(z, "a", "f32")
  b = official_sd(z, "b", "f32")
  m, state = _state(z)
  pa = state["params"]
  pb = iv.import_official(b, m.classifier(2))
  jax.tree_util.tree_map(np.testing.assert_array_equal, pa["encoder"],
                         pb["encoder"])
  remapped = {k[len("encoder."):] if k.startswith("encoder.") else k
              for k in a}
  clf_names = {r.torch for r in iv.classifier_rules(pb)}
  assert remapped - clf_names == set(map(str, z["b_load_unexpected_keys"]))
  assert clf_names - remapped == set(map(str, z["b_load_missing_keys"]))


# ---- converters -------------------------------------------------------------

def _state(z):
  """(method, train state) holding case A's float32 weights (cached)."""
  if "state" not in _CASE:
    m = SDMAE(tiny_config())
    params = iv.import_official(official_sd(z, "a", "f32"), m)
    _CASE["state"] = m, {"step": 0, "params": jax.tree_util.tree_map(
        jnp.asarray, params)}
  return _CASE["state"]


def _assert_same_params(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_official_export_names_shapes_values_and_round_trip(shared_data):
  z = _load(shared_data)
  m, state = _state(z)
  tensors, info = iv.export(m, state, "official")
  sd = official_sd(z, "a", "f32")
  assert list(tensors) == list(sd)           # names and the official order
  for k, v in sd.items():                    # bitwise the official weights
    assert tensors[k].shape == v.shape and tensors[k].dtype == v.dtype, k
    np.testing.assert_array_equal(tensors[k], v)
  assert info["feature_dim"] == 64 and info["patch_size"] == 8
  assert info["image_size"] == 32
  np.testing.assert_array_equal(np.float32(info["input"]["mean"]),
                                z["norm_mean"])
  np.testing.assert_array_equal(np.float32(info["input"]["std"]),
                                z["norm_std"])
  hp = json.loads(str(z["hparams_json"]))["case_a"]["model_kwargs"]
  for k, v in info["official"]["kwargs"].items():
    assert hp[k] == v, k
  back = iv.import_into(m, state, tensors, "official")
  _assert_same_params(back["params"], state["params"])
  assert back["step"] == 0
  # plain MAE (p = 0) has no distillation heads: the rest, same names
  mae = SDMAE(tiny_config(sd_weight=0.0))
  mae_state = dict(state, params={k: v for k, v in state["params"].items()
                                  if not k.startswith("head_")})
  t_mae, _ = iv.export(mae, mae_state, "official")
  assert list(t_mae) == [k for k in sd if "_head." not in k]
  _assert_same_params(
      iv.import_into(mae, mae_state, t_mae, "official")["params"],
      mae_state["params"])


def _timm_expected(class_token):
  """timm ``VisionTransformer(img_size=32, patch_size=8, embed_dim=64,
  depth=2, num_heads=4, num_classes=0[, class_token=False,
  global_pool="avg"])``.state_dict(), from timm's naming: ``cls_token``,
  ``pos_embed`` (CLS row first), ``patch_embed.proj`` (a Conv2d), per block
  ``norm1``, ``attn.qkv`` (fused, with bias), ``attn.proj``, ``norm2``,
  ``mlp.fc1``, ``mlp.fc2``, then ``norm`` (token pooling) or ``fc_norm``
  (avg pooling, ``norm`` = Identity); ``num_classes=0``: no ``head``."""
  d, n = 64, 16
  out = [("cls_token", (1, 1, d))] if class_token else []
  out += [("pos_embed", (1, n + class_token, d)),
          ("patch_embed.proj.weight", (d, 3, 8, 8)),
          ("patch_embed.proj.bias", (d,))]
  for i in range(2):
    b = f"blocks.{i}."
    out += [(b + "norm1.weight", (d,)), (b + "norm1.bias", (d,)),
            (b + "attn.qkv.weight", (3 * d, d)),
            (b + "attn.qkv.bias", (3 * d,)),
            (b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
            (b + "norm2.weight", (d,)), (b + "norm2.bias", (d,)),
            (b + "mlp.fc1.weight", (4 * d, d)), (b + "mlp.fc1.bias", (4 * d,)),
            (b + "mlp.fc2.weight", (d, 4 * d)), (b + "mlp.fc2.bias", (d,))]
  norm = "norm" if class_token else "fc_norm"
  return out + [(f"{norm}.weight", (d,)), (f"{norm}.bias", (d,))]


@pytest.mark.parametrize("class_token", [True, False])
def test_timm_export_names_shapes_and_round_trip(shared_data, class_token):
  z = _load(shared_data)
  m, state = _state(z)
  tensors, info = iv.export(m, state, "timm", class_token=class_token)
  assert [(k, v.shape) for k, v in tensors.items()] == _timm_expected(
      class_token)
  assert all(v.dtype == np.float32 for v in tensors.values())
  sd = official_sd(z, "a", "f32")
  # same tensors as the official encoder; qkv bias = [q_bias, 0, v_bias]
  np.testing.assert_array_equal(tensors["patch_embed.proj.weight"],
                                sd["encoder.patch_embed.proj.weight"])
  np.testing.assert_array_equal(
      tensors["blocks.1.attn.qkv.bias"],
      np.concatenate([sd["encoder.blocks.1.attn.q_bias"], np.zeros(64),
                      sd["encoder.blocks.1.attn.v_bias"]]))
  pe = tensors["pos_embed"][0, int(class_token):]
  np.testing.assert_array_equal(pe, z["a_pos_embed_enc"])
  if class_token:
    np.testing.assert_array_equal(tensors["norm.weight"],
                                  sd["encoder.norm.weight"])
    assert not tensors["cls_token"].any()
    assert not tensors["pos_embed"][0, 0].any()
  assert info["timm"]["model_name"] is None          # non-standard widths
  assert info["timm"]["create_model_kwargs"]["img_size"] == 32
  back = iv.import_into(m, state, tensors, "timm")
  _assert_same_params(back["params"], state["params"])
  assert iv.timm_model_name(384, 12, 6, 16) == "vit_small_patch16_224"


def test_timm_import_key_bias_is_dropped_exactly(shared_data):
  """A key bias shifts every logit of a query by the same q.b_k: dropping
  it on import leaves the attention unchanged."""
  z = _load(shared_data)
  m, state = _state(z)
  tensors, _ = iv.export(m, state, "timm")
  tensors["blocks.0.attn.qkv.bias"] = tensors["blocks.0.attn.qkv.bias"].copy()
  tensors["blocks.0.attn.qkv.bias"][64:128] = 0.3
  back = iv.import_into(m, state, tensors, "timm")
  _assert_same_params(back["params"], state["params"])
  attn = vit.Attention(64, 4)
  p = jax.tree_util.tree_map(np.asarray,
                             state["params"]["encoder"]["block_0"]["attn"])
  x = np.random.RandomState(0).randn(2, 5, 64).astype(np.float32)
  ours = jax.jit(attn.apply)({"params": p}, x)
  qkv = x @ p["qkv"]["kernel"] + tensors["blocks.0.attn.qkv.bias"]
  q, k, v = (qkv[..., i * 64:(i + 1) * 64].reshape(2, 5, 4, 16)
             for i in range(3))
  a = np.einsum("bqhd,bkhd->bhqk", q, k) / 4.0
  a = np.exp(a - a.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  o = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(2, 5, 64)
  o = o @ p["proj"]["kernel"] + p["proj"]["bias"]
  np.testing.assert_allclose(ours, o, atol=1e-5)


def test_errors_name_every_bad_tensor(shared_data):
  z = _load(shared_data)
  m, state = _state(z)
  sd = official_sd(z, "a", "f32")
  del sd["encoder.blocks.1.attn.q_bias"]
  sd["encoder.blocks.1.attn.k_bias"] = np.zeros(64, np.float32)
  sd["decoder.head.weight"] = np.zeros((191, 32), np.float32)
  sd["decoder_proh_head.last_layer.weight_g"] = np.full((256, 1), 2.0,
                                                        np.float32)
  del sd["encoder_proj_head.last_layer.weight_g"]
  with pytest.raises(StateDictError) as e:
    iv.import_official(sd, m, source="bad.safetensors")
  msg = str(e.value)
  assert "bad.safetensors" in msg
  for needle in ("missing (1): encoder.blocks.1.attn.q_bias",
                 "unexpected (1): encoder.blocks.1.attn.k_bias",
                 "decoder.head.weight: (191, 32)",
                 "missing: encoder_proj_head.last_layer.weight_g",
                 "decoder_proh_head.last_layer.weight_g must be all ones"):
    assert needle in msg, (needle, msg)
  # classifier: the pretraining checkpoint does not load as is
  with pytest.raises(StateDictError, match="missing .*fc_norm.weight"):
    iv.import_official(official_sd(z, "a", "f32"), m.classifier(2))
  # targets
  for f in (lambda: iv.export(m, state, "torchvision"),
            lambda: iv.import_into(m, state, {}, "hf")):
    with pytest.raises(StateDictError, match="official, timm"):
      f()
  # timm: a learned CLS token / position table cannot be represented
  tensors, _ = iv.export(m, state, "timm")
  tensors["cls_token"] = tensors["cls_token"] + 1
  tensors["pos_embed"] = tensors["pos_embed"][:, :10]
  del tensors["blocks.0.attn.qkv.bias"]
  tensors["head.weight"] = np.zeros((2, 64), np.float32)
  with pytest.raises(StateDictError) as e:
    iv.import_into(m, state, tensors, "timm")
  msg = str(e.value)
  for needle in ("cls_token is not zero", "mis-shaped: pos_embed",
                 "missing: blocks.0.attn.qkv.bias", "unexpected (1): "
                 "head.weight"):
    assert needle in msg, (needle, msg)


def test_mask_count_deviation_is_pinned():
  """Documented deviation (SDMAE docstring): maskssl masks floor(r N +
  1e-9) patches, the official RandomMaskingGenerator int(r N). They agree
  for the configs used (0.6 x 16 / 196, 0.75 x 196) and differ only where
  r N falls within 1e-9 below an integer in floating point."""
  for n, r in ((16, 0.6), (196, 0.6), (196, 0.75)):
    assert num_masked(n, r) == int(r * n)
  assert int(0.29 * 100) == 28 and num_masked(100, 0.29) == 29
