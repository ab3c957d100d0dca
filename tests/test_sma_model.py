"""SMA model / method tests (spec sma.md sections 2, 4, 7.2), tiny sizes."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskssl.losses.reconstruction import masked_cross_entropy, masked_mse
from maskssl.methods.sma import SMA
from maskssl.models import sma as M

N = 12
LENGTHS = (12, 9, 5, 2)


def _cfg(**model_over):
  c = ml_collections.ConfigDict()
  c.method = "sma"
  c.seed = 0
  c.batch_size = 4
  c.total_steps = 100
  model = dict(input="continuous", c_in=1, n_max=N, embed_dim=16,
               latent_dim=16, encoder_mode="transformer", num_latents=6,
               num_self_layers=1, self_heads=2, cross_heads=2, decoder_heads=1,
               compact=True)
  model.update(model_over)
  c.model = model
  c.mask = dict(ratio=0.25, num_per_query=2, head_aggregation="random_mix",
                mask_self=True, rho=1.0, mask_mode="sma",
                curriculum_fraction=0.25)
  c.optim = dict(name="adamw", lr=1e-3, schedule="cosine", warmup_steps=2,
                 weight_decay=0.01, clip_norm=1.0)
  return c


def _batch(kind="continuous", lengths=LENGTHS, seed=0, n=N):
  rs = np.random.RandomState(seed)
  valid = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
  if kind == "bytes":
    tok = np.where(valid, rs.randint(6, 262, (len(lengths), n)), 0)
    return dict(tokens=jnp.asarray(tok, jnp.int32), valid=jnp.asarray(valid))
  x = np.where(valid[..., None], rs.randn(len(lengths), n, 1), 0.0)
  return dict(x=jnp.asarray(x, jnp.float32), valid=jnp.asarray(valid))


def _setup(**model_over):
  m = SMA(_cfg(**model_over))
  batch = _batch(m.input_kind)
  params = m.init_params(jax.random.PRNGKey(0), batch)
  return m, batch, params


def _apply(model, params, x, valid, rng=None, mask=None, method=None, **kw):
  """``model.apply`` with the mask rng (eager: op caches are shared)."""
  def f(p, x, valid, rng, mask):
    rngs = {"mask": rng} if rng is not None else {}
    return model.apply({"params": p}, x, valid, mask=mask, rngs=rngs,
                       method=method, **kw)
  return f(params, x, valid, rng, mask)


def _full_model(m):
  """The same pretraining model on the full-length key_keep path."""
  return M.SMAPretrainModel(encoder=m.encoder.clone(compact=False),
                            decoder_heads=m.model.decoder_heads,
                            out_dim=m.model.out_dim)


def _attn(inter):
  """{module path: attention probs} from sown intermediates."""
  out = {}

  def walk(d, path):
    for k, v in d.items():
      if k == "attn":
        out["/".join(path)] = v[0]
      elif isinstance(v, dict):
        walk(v, path + [k])
  walk(jax.device_get(inter), [])
  return out


def test_zero_attention_to_masked_and_pad_keys_transformer():
  m, batch, params = _setup()
  model = _full_model(m)
  x, valid = m.inputs(batch)
  out, st = _apply(model, params, x, valid, jax.random.PRNGKey(5), train=True,
                    masking=True, s=0.0, mutable=["intermediates"])
  mask = np.asarray(out["mask"])
  keep = np.asarray(valid) & ~mask
  n = np.asarray(valid).sum(-1)
  np.testing.assert_array_equal(mask.sum(-1), np.round(np.float32(0.25) * n))
  assert not (mask & ~np.asarray(valid)).any()
  attn = _attn(st["intermediates"])
  names = sorted(attn)
  assert names == ["decoder/layer", "encoder/layer_0", "encoder/layer_1"], names
  for name, p in attn.items():
    p = np.asarray(p)                               # (B, H, Nq, Nk)
    assert p.shape[-1] == N
    dead = ~keep[:, None, None, :]
    assert (p[np.broadcast_to(dead, p.shape)] == 0.0).all(), name
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert (p[np.broadcast_to(~dead, p.shape)] > 0).all(), name


def _reference_encoder(m, params, x, keep):
  """Explicit gather -> run -> scatter, one example at a time (no padding)."""
  e = m.encoder
  pre = M.Preprocessor(e.input_kind, e.c_in, e.vocab_size, e.n_max,
                       e.embed_dim, 0.0)
  emb = pre.apply({"params": params["preprocessor"]}, x)
  l0 = M.SMALayer(num_heads=e.self_heads, qk_dim=e.latent_dim,
                  v_dim=e.latent_dim, cross=True)
  ls = M.SMALayer(num_heads=e.self_heads, qk_dim=e.latent_dim,
                  v_dim=e.latent_dim, cross=False)
  out = np.zeros(emb.shape, np.float32)
  for b in range(emb.shape[0]):
    idx = np.nonzero(keep[b])[0]
    xb = emb[b, idx][None]
    h = l0.apply({"params": params["layer_0"]}, xb, xb, None)
    for i in range(e.num_self_layers):
      h = ls.apply({"params": params[f"layer_{i + 1}"]}, h, None, None)
    out[b, idx] = np.asarray(h[0])
  return out


def test_compaction_gather_impls_agree():
  rs = np.random.RandomState(0)
  flags = jnp.asarray(rs.rand(5, 30) < 0.7)
  x = jnp.asarray(rs.randn(5, 30, 3), jnp.float32)
  size = int(np.asarray(flags).sum(-1).max()) + 1
  a = M.compaction(flags, size, "onehot")
  b = M.compaction(flags, size, "take")
  np.testing.assert_array_equal(a.valid, b.valid)
  ga, gb = M.gather_rows(x, a), M.gather_rows(x, b)
  v = np.asarray(a.valid)
  np.testing.assert_array_equal(np.asarray(ga)[v], np.asarray(gb)[v])
  for i in range(5):
    np.testing.assert_array_equal(np.asarray(ga)[i, :v[i].sum()],
                                  np.asarray(x)[i, np.asarray(flags)[i]])
  np.testing.assert_array_equal(M.scatter_rows(ga, a, 30),
                                M.scatter_rows(gb, b, 30))
  np.testing.assert_array_equal(M.scatter_rows(ga, a, 30),
                                np.where(np.asarray(flags)[..., None], x, 0))


def test_compaction_equivalence():
  m, batch, params = _setup()
  x, valid = m.inputs(batch)
  rng = {"mask": jax.random.PRNGKey(7)}
  # a generated mask, then both paths fed with it
  mask = _apply(m.model, params, x, valid, rng["mask"], train=True,
                masking=True)["mask"]
  keep = np.asarray(valid & ~mask)
  full = _full_model(m)
  enc = lambda mdl, *a, **k: mdl.encoder(*a, **k)
  enc_full = _apply(full, params, x, valid, mask=mask, method=enc)
  enc_cmp = _apply(m.model, params, x, valid, mask=mask, method=enc)
  ref = _reference_encoder(m, params["encoder"], x, keep)
  h_full = np.asarray(enc_full[0])
  np.testing.assert_allclose(h_full[keep], ref[keep], atol=1e-5, rtol=1e-5)
  # compact buffer: kept tokens in ascending position, then padding
  h_c, hk = np.asarray(enc_cmp[0]), np.asarray(enc_cmp[2])
  n_vis = M.kept_count_bound(N, 0.25)
  assert h_c.shape == (4, n_vis, 16)
  np.testing.assert_array_equal(hk.sum(-1), keep.sum(-1))
  for b in range(4):
    np.testing.assert_allclose(h_c[b, :keep[b].sum()], ref[b, keep[b]],
                               atol=1e-5, rtol=1e-5)
  # decoder predictions at masked positions and the loss agree
  o_full = _apply(full, params, x, valid, mask=mask)
  o_cmp = _apply(m.model, params, x, valid, mask=mask)
  pred_full = np.asarray(o_full["pred"])
  lm, idx = np.asarray(o_cmp["loss_mask"]), np.asarray(o_cmp["index"])
  np.testing.assert_array_equal(lm.sum(-1), np.asarray(mask).sum(-1))
  for b in range(4):
    k = lm[b].sum()
    np.testing.assert_array_equal(idx[b, :k], np.nonzero(np.asarray(mask)[b])[0])
    np.testing.assert_allclose(np.asarray(o_cmp["pred"])[b, :k],
                               pred_full[b, idx[b, :k]], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(m.loss_from_output(o_cmp, x),
                             m.loss_from_output(o_full, x), rtol=1e-5)


def test_no_gradient_through_selection():
  m, batch, params = _setup()
  x, valid = m.inputs(batch)
  rngs = {"mask": jax.random.PRNGKey(3)}
  mask = _apply(m.model, params, x, valid, rngs["mask"], train=True,
                masking=True)["mask"]

  def loss(p, fixed):
    out = m.model.apply({"params": p}, x, valid, train=True, masking=True,
                        mask=fixed, rngs=rngs)
    return m.loss_from_output(out, x)

  g_gen = jax.grad(loss)(params, None)
  g_const = jax.grad(loss)(params, mask)
  flat_gen = jax.tree_util.tree_leaves_with_path(g_gen)
  flat_const = jax.tree.leaves(g_const)
  assert len(flat_gen) == len(flat_const)
  nonzero = 0
  for (path, a), b in zip(flat_gen, flat_const):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
    nonzero += int(np.abs(np.asarray(a)).max() > 0)
  assert nonzero > 8  # the gradients are real


def test_eval_mode_and_finetune_encoder_match_unmasked_forward():
  m, batch, params = _setup()
  x, valid = m.inputs(batch)
  enc = lambda mdl, *a, **k: mdl.encoder(*a, **k)
  h, mask, hk = _apply(m.model, params, x, valid, train=False, method=enc)
  assert not np.asarray(mask).any()
  np.testing.assert_array_equal(hk, valid)
  # full-length pretraining forward with an all-False mask
  h0, _, _ = _apply(_full_model(m), params, x, valid,
                    mask=jnp.zeros_like(valid), method=enc)
  np.testing.assert_allclose(h, h0, atol=1e-6)
  # fine-tuning model built from the pretrained encoder params
  clf = m.classifier(3)
  cparams = clf.init(jax.random.PRNGKey(1), batch)["params"]
  assert set(cparams) == {"encoder", "head"}
  assert (jax.tree.structure(cparams["encoder"])
          == jax.tree.structure(params["encoder"]))
  cparams = dict(cparams, encoder=params["encoder"])
  hf, _, _ = clf.apply({"params": cparams}, x, valid, method=lambda mdl, *a:
                       mdl.encoder(*a, train=False))
  np.testing.assert_allclose(hf, h0, atol=1e-6)
  logits = clf.apply({"params": cparams}, batch)
  assert logits.shape == (4, 3) and np.isfinite(logits).all()
  # pad tokens do not change the classifier output
  x2 = jnp.where(valid[..., None], x, 123.0)
  np.testing.assert_allclose(clf.apply({"params": cparams}, dict(batch, x=x2)),
                             logits, atol=1e-5)
  feats = m.encode(dict(params=params), batch)
  assert feats.shape == (4, 16) and np.isfinite(feats).all()


def test_losses_only_count_masked_positions():
  rs = np.random.RandomState(0)
  pred = jnp.asarray(rs.randn(3, 5, 2), jnp.float32)
  tgt = jnp.asarray(rs.randn(3, 5, 2), jnp.float32)
  mask = jnp.asarray(rs.rand(3, 5) < 0.4)
  ref = float(np.sum(np.asarray(mask)[..., None] * (pred - tgt) ** 2)
              / (2 * np.asarray(mask).sum()))
  np.testing.assert_allclose(masked_mse(pred, tgt, mask), ref, rtol=1e-6)
  pred2 = jnp.where(mask[..., None], pred, pred + 100.0)
  np.testing.assert_allclose(masked_mse(pred2, tgt, mask), ref, rtol=1e-6)
  logits = jnp.asarray(rs.randn(3, 5, 7), jnp.float32)
  t = jnp.asarray(rs.randint(0, 7, (3, 5)))
  lp = jax.nn.log_softmax(logits)
  ce = -np.sum(np.where(mask, np.take_along_axis(lp, t[..., None], -1)[..., 0],
                        0)) / np.asarray(mask).sum()
  np.testing.assert_allclose(masked_cross_entropy(logits, t, mask), ce,
                             rtol=1e-6)
  logits2 = jnp.where(mask[..., None], logits, -logits * 9)
  np.testing.assert_allclose(masked_cross_entropy(logits2, t, mask), ce,
                             rtol=1e-6)
  zero = jnp.zeros((3, 5), bool)
  assert float(masked_mse(pred, tgt, zero)) == 0.0
  assert float(masked_cross_entropy(logits, t, zero)) == 0.0
  g = jax.grad(lambda p: masked_mse(p, tgt, zero))(pred)
  assert np.isfinite(g).all()
  # through the model: changing unmasked inputs' targets changes nothing
  m, batch, params = _setup()
  x, valid = m.inputs(batch)
  out = _apply(m.model, params, x, valid, jax.random.PRNGKey(2),
               masking=True)
  out_full = _apply(_full_model(m), params, x, valid, mask=out["mask"])
  pert = dict(out_full, pred=jnp.where(out["mask"][..., None],
                                       out_full["pred"], 7.0))
  np.testing.assert_allclose(m.loss_from_output(pert, x),
                             m.loss_from_output(out_full, x), rtol=1e-7)


def test_loss_at_init():
  m, batch, params = _setup(input="bytes")
  st = m.init_state(jax.random.PRNGKey(0), batch)
  lf = lambda p, r: m.loss_fn(p, batch, r, 0.0)[0]
  losses = [float(lf(st["params"], jax.random.PRNGKey(i))) for i in range(3)]
  assert all(5.4 <= v <= 6.1 for v in losses), losses
  m, _, _ = _setup()
  rs = np.random.RandomState(1)
  big = dict(x=jnp.asarray(rs.randn(16, N, 1), jnp.float32),
             valid=jnp.ones((16, N), bool))
  p = m.init_params(jax.random.PRNGKey(0), big)
  v = float(m.loss_fn(p, big, jax.random.PRNGKey(0), 0.0)[0])
  assert 0.8 <= v <= 2.0, v


def test_perceiver_masks_input_keys_only_and_linear_cost():
  m, batch, params = _setup(encoder_mode="perceiver")
  x, valid = m.inputs(batch)
  out, st = _apply(_full_model(m), params, x, valid, jax.random.PRNGKey(1),
                    train=True, masking=True, mutable=["intermediates"])
  mask = np.asarray(out["mask"])
  keep = np.asarray(valid) & ~mask
  np.testing.assert_array_equal(mask.sum(-1),
                                np.round(np.float32(0.25) * np.array(LENGTHS)))
  attn = _attn(st["intermediates"])
  p0 = np.asarray(attn["encoder/layer_0"])          # (B, H, L, N)
  assert p0.shape == (4, 2, 6, N)
  assert (p0[np.broadcast_to(~keep[:, None, None], p0.shape)] == 0).all()
  assert (p0[np.broadcast_to(keep[:, None, None], p0.shape)] > 0).all()
  for name in ("encoder/layer_1", "decoder/layer"):
    assert (np.asarray(attn[name]) > 0).all(), name  # latents: no key mask
  # compact path gives the same loss
  np.testing.assert_allclose(
      m.loss_from_output(_apply(m.model, params, x, valid, mask=out["mask"]),
                         x),
      m.loss_from_output(out, x), rtol=1e-5)

  def flops(n):
    mm = SMA(_cfg(encoder_mode="perceiver", n_max=n, gather_impl="take"))
    b = _batch(lengths=(n, n - 1, 3, 2), n=n)
    p = jax.eval_shape(mm.init_params, jax.random.PRNGKey(0), b)
    fwd = jax.jit(lambda p, bb: mm.loss_fn(p, bb, jax.random.PRNGKey(0), 0.0))
    ca = fwd.lower(p, b).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"])
  f1, f2, f4 = flops(32), flops(64), flops(128)
  # linear in N: equal increments per added token (quadratic would double)
  ratio = (f4 - f2) / (f2 - f1)
  assert 1.7 < ratio < 2.3, (f1, f2, f4)


def test_train_step_compiles_once_and_learns():
  m = SMA(_cfg())
  batch = _batch()
  state = m.init_state(jax.random.PRNGKey(0), batch)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, batch, rng):
    return m.train_step(state, batch, rng)

  losses = []
  for i in range(6):
    b = _batch(lengths=[(LENGTHS[j] + i) % N + 1 for j in range(4)], seed=0)
    state, met = step(state, b, jax.random.PRNGKey(i))
    losses.append(float(met["loss"]))
    assert np.isfinite(losses[-1])
    n = np.asarray(b["valid"]).sum()
    frac = float(met["mask_fraction"])
    # curriculum: |K1 + K2 - round(r n)| <= 1 per example
    assert abs(frac * n - 0.25 * n) <= 4 + 0.5 * 4, frac
  assert int(state["step"]) == 6
  assert set(met) >= {"loss", "mask_fraction", "grad_norm"}


def test_random_mask_mode_counts():
  c = _cfg()
  c.mask.mask_mode = "random"
  m = SMA(c)
  batch = _batch()
  params = m.init_params(jax.random.PRNGKey(0), batch)
  x, valid = m.inputs(batch)
  out = _apply(m.model, params, x, valid, jax.random.PRNGKey(4), masking=True)
  np.testing.assert_array_equal(np.asarray(out["mask"]).sum(-1),
                                np.round(np.float32(0.25) * np.array(LENGTHS)))
  np.testing.assert_array_equal(np.asarray(out["loss_mask"]).sum(-1),
                                np.asarray(out["mask"]).sum(-1))


def test_bfloat16_compute_matches_float32_loss():
  m32, batch, params = _setup()
  m16 = SMA(_cfg(compute_dtype="bfloat16"))
  rng = jax.random.PRNGKey(3)
  l32 = float(m32.loss_fn(params, batch, rng, 0.0)[0])
  l16, _ = m16.loss_fn(params, batch, rng, 0.0)
  g = jax.grad(lambda p: m16.loss_fn(p, batch, rng, 0.0)[0])(params)
  assert l16.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 and np.isfinite(x).all()
             for x in jax.tree.leaves(g))
  np.testing.assert_allclose(float(l16), l32, rtol=0.05)
