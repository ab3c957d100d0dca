"""MetaMask: hypergradient modes vs finite differences (float64), SGD/virtual
step semantics, iteration order, mask isolation from L_BT, kNN, models."""
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maskssl.data import augment as aug_lib
from maskssl.evaluators import knn as knn_lib
from maskssl.methods import get_method
from maskssl.evaluators.mask_report import write_mask_report
from maskssl.methods.metamask import MetaMask, momentum_trace

B = 16
# The graphs here are tiny; XLA's backend optimisations only cost compile
# time on the shared CPU.
jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def tiny_config(dtype="float64", **mm):
  return ml_collections.ConfigDict(dict(
      method="metamask", seed=0, batch_size=B, total_steps=10,
      model=dict(backbone="resnet_tiny", width=8, stage_sizes=(1,),
                 compute_dtype=dtype, bt_features=(8, 8, 8),
                 cl_features=(8, 8)),
      metamask=dict(dict(steps_per_epoch=5), **mm),
      optim=dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
      augment=dict(size=8)))


def to64(tree):
  return jax.tree.map(
      lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tree)


MM64 = MetaMask(tiny_config())


@functools.partial(jit, static_argnums=0)
def real_step(mm, st, m, x0, x1):
  """Step 1 of an iteration -> (theta_1, trace_1, bn_1)."""
  (_, (bn1, _)), g = jax.value_and_grad(mm.full_loss, has_aux=True)(
      st["params"], st["batch_stats"], mm.mask_values(m), x0, x1, "reg")
  upd, opt = mm.tx.update(g, st["opt_state"], st["params"])
  p1 = optax.apply_updates(st["params"], upd)
  return p1, momentum_trace(opt, p1), bn1


@functools.partial(jit, static_argnums=(0, 1))
def hyper(mm, mode, p1, tr, bn1, m, x0, x1, lr, fd_r=0.01):
  return mm.hypergradient(p1, tr, bn1, m, x0, x1, lr, mode, fd_r=fd_r)


@functools.partial(jit, static_argnums=0)
def meta_f(mm, m, p1, tr, bn1, x0, x1, lr):
  return mm.meta_objective(m, p1, tr, bn1, x0, x1, lr)[0]


@pytest.fixture(scope="module")
def setup64():
  """Tiny float64 MetaMask after one real step (arrays are float64; tests
  re-enter ``jax.enable_x64``)."""
  with jax.enable_x64(True):
    mm = MM64
    imgs = np.zeros((B, 8, 8, 3), np.uint8)
    st = to64(mm.init_state(jax.random.PRNGKey(0), dict(image=imgs)))
    r = np.random.default_rng(0)
    m = jnp.asarray(r.normal(size=st["mask"].shape))
    x0 = jnp.asarray(r.normal(size=(B, 8, 8, 3)))
    x1 = jnp.asarray(r.normal(size=(B, 8, 8, 3)))
    p1, tr, bn1 = real_step(mm, st, m, x0, x1)
    return dict(st=st, m=m, x0=x0, x1=x1, p1=p1, tr=tr, bn1=bn1,
                lr=jnp.float64(0.05))


def _hyper(s, mode, **kw):
  return hyper(MM64, mode, s["p1"], s["tr"], s["bn1"], s["m"], s["x0"],
               s["x1"], s["lr"], **kw)


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) /
               np.linalg.norm(np.asarray(b)))


def test_exact_hypergradient_matches_central_difference(setup64):
  s = setup64
  with jax.enable_x64(True):
    f = lambda mv: meta_f(MM64, mv, s["p1"], s["tr"], s["bn1"], s["x0"],  # noqa: E731
                          s["x1"], s["lr"])
    m0 = np.asarray(s["m"])
    h = 1e-6
    eye = np.eye(m0.size)
    cfd = np.array([(f(m0 + h * e) - f(m0 - h * e)) / (2 * h) for e in eye])
    exact, aux = _hyper(s, "exact")
    unrolled, _ = _hyper(s, "exact_unrolled")
    jvp, _ = _hyper(s, "exact_jvp")
    assert np.linalg.norm(cfd) > 1e-3
    assert _rel(exact, cfd) < 1e-6
    assert _rel(unrolled, cfd) < 1e-6
    assert _rel(exact, unrolled) < 1e-10
    assert _rel(jvp, exact) < 1e-10
    # the second-order correction is not negligible here (lr 0.05)
    assert _rel(aux["d1"], exact) > 1e-3
    np.testing.assert_allclose(aux["meta_loss"], f(m0), rtol=1e-12)


def test_finite_difference_converges_and_first_order(setup64):
  s = setup64
  with jax.enable_x64(True):
    exact, aux = _hyper(s, "exact")
    errs = []
    for r in (1e-1, 1e-3, 1e-5):
      fd, fd_aux = _hyper(s, "finite_difference", fd_r=jnp.float64(r))
      errs.append(_rel(fd, exact))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-4
    np.testing.assert_allclose(fd_aux["d1"], aux["d1"], rtol=1e-10)
    fo, fo_aux = _hyper(s, "first_order")
    np.testing.assert_array_equal(fo_aux["second_order"], 0.0)
    np.testing.assert_allclose(fo, aux["d1"], rtol=1e-10)


def test_virtual_step_formula_and_sgd_parity():
  # optax SGD = torch SGD (momentum, coupled wd, first trace = d)
  mm = MetaMask(tiny_config("float32"))
  r = np.random.default_rng(1)
  p = {"a": jnp.asarray(r.normal(size=(3, 2)), jnp.float32),
       "b": jnp.asarray(r.normal(size=(4,)), jnp.float32)}
  g1 = jax.tree.map(lambda x: jnp.asarray(r.normal(size=x.shape), x.dtype), p)
  g2 = jax.tree.map(lambda x: jnp.asarray(r.normal(size=x.shape), x.dtype), p)
  lr, mu, wd = 0.05, 0.9, 5e-4
  s = mm.tx.init(p)
  u, s = mm.tx.update(g1, s, p)
  p1 = optax.apply_updates(p, u)
  u, s = mm.tx.update(g2, s, p1)
  p2 = optax.apply_updates(p1, u)
  for k in p:
    pt, gt1, gt2 = (np.asarray(x[k], np.float64) for x in (p, g1, g2))
    b = gt1 + wd * pt
    q1 = pt - lr * b
    b = mu * b + gt2 + wd * q1
    q2 = q1 - lr * b
    np.testing.assert_allclose(p1[k], q1, atol=1e-7)
    np.testing.assert_allclose(p2[k], q2, atol=1e-7)
    np.testing.assert_allclose(momentum_trace(s, p2)[k], b, atol=1e-7)
  tr = momentum_trace(s, p2)
  v = mm.virtual_params(p2, tr, g1, lr)
  for k in p:
    np.testing.assert_array_equal(
        v[k], p2[k] - lr * (mu * tr[k] + g1[k] + wd * p2[k]))


@functools.partial(jit, static_argnums=0)
def bt_mask_grad(mm, st, m, x0, x1):
  """d L_BT / dm at theta_t (what the reference computes and discards)."""
  def bt_only(mv):
    hs, _ = mm.backbone_views(st["params"]["encoder"],
                              st["batch_stats"]["encoder"], x0, x1)
    ph = {k: st["params"][k] for k in ("bt_head", "cl_head")}
    bh = {k: st["batch_stats"][k] for k in ("bt_head", "cl_head")}
    tot, (_, mets) = mm.heads_loss(ph, bh, hs, mm.mask_values(mv), "reg")
    return tot - mm.w_cl * mets["cl_loss"]
  return jax.grad(bt_only)(m)


def test_train_step_order_and_mask_isolated_from_bt(setup64):
  """One jitted iteration (compiled once): mask update == mask SGD on the
  CL-only hypergradient at theta_{t+1}; the non-zero d L_BT / dm is not
  used; starting the meta step from theta_t would give a different h_m."""
  s = setup64
  mm, st, m = MM64, dict(setup64["st"], mask=setup64["m"]), setup64["m"]
  with jax.enable_x64(True):
    imgs = np.random.default_rng(3).integers(0, 256, (B, 8, 8, 3), np.uint8)
    rng = jax.random.PRNGKey(7)
    jstep = jit(chex.assert_max_traces(mm.train_step, n=1))
    new, metrics = jstep(st, dict(image=imgs), rng)
    new2, _ = jstep(new, dict(image=imgs[::-1].copy()), rng)  # no retrace
    x0, x1 = jit(mm.views)(rng, imgs)
    x0, x1 = x0.astype(jnp.float64), x1.astype(jnp.float64)
    p1, tr, bn1 = real_step(mm, st, m, x0, x1)
    lr = mm.schedule(0)
    h_m, _ = hyper(mm, "exact", p1, tr, bn1, m, x0, x1, lr)
    mlr, wd = float(mm.mask_schedule(0)), 5e-4
    expected = m - mlr * (h_m + wd * m)
    err = np.abs(np.asarray(new["mask"] - expected)).max()
    g_bt = bt_mask_grad(mm, st, m, x0, x1)
    assert np.linalg.norm(g_bt) > 1e-3
    with_bt = m - mlr * (h_m + g_bt + wd * m)
    err_bt = np.abs(np.asarray(new["mask"] - with_bt)).max()
    assert err < 1e-7 and err < 1e-3 * err_bt, (err, err_bt)
    # order: the meta step from theta_t (zero trace) gives another h_m
    tr0 = jax.tree.map(jnp.zeros_like, tr)
    h_old, _ = hyper(mm, "exact", st["params"], tr0, st["batch_stats"], m,
                     x0, x1, lr)
    assert _rel(h_old, h_m) > 1e-3
    assert int(new2["step"]) == 2
    for k in ("loss", "bt_loss", "cl_loss", "meta_loss", "hypergrad_norm",
              "mask_mean"):
      assert np.isfinite(float(metrics[k])), k
    del s


def test_mask_init_ablation_and_encode():
  mm = MetaMask(tiny_config("float32"))
  ab = MetaMask(tiny_config("float32", enable_meta=False))
  imgs = np.random.default_rng(0).integers(0, 256, (B, 8, 8, 3), np.uint8)
  st = mm.init_state(jax.random.PRNGKey(0), dict(image=imgs))
  assert st["mask"].shape == (mm.feature_dim,)
  np.testing.assert_array_equal(mm.mask_values(st["mask"]), 0.5)
  np.testing.assert_array_equal(ab.mask_values(st["mask"]), 1.0)

  @jit
  def run(st, imgs, rng):
    f = mm.encode(st, dict(image=imgs))
    x = aug_lib.eval_preprocess(imgs, mm.aug)
    h = mm.encoder.apply({"params": st["params"]["encoder"],
                          "batch_stats": st["batch_stats"]["encoder"]}, x,
                         train=False)
    # enable_meta=False: M == 1, mask untouched, plain SGD on L_BT + 10 L_CL
    new, met = ab.train_step(st, dict(image=imgs), rng)
    x0, x1 = ab.views(rng, imgs)
    (loss, _), g = jax.value_and_grad(ab.full_loss, has_aux=True)(
        st["params"], st["batch_stats"], jnp.ones(ab.feature_dim), x0, x1,
        "reg")
    return f, h, new, met, loss, g

  f, h, new, met, loss, g = run(st, imgs, jax.random.PRNGKey(1))
  assert f.shape == (B, mm.feature_dim)
  np.testing.assert_allclose(f, 0.5 * h, rtol=1e-6)
  np.testing.assert_array_equal(new["mask"], st["mask"])
  assert "meta_loss" not in met
  np.testing.assert_allclose(met["loss"], loss, rtol=1e-5)
  lr = float(ab.schedule(0))
  kern = lambda t: t["cl_head"]["fc1"]["dense"]["kernel"]  # noqa: E731
  np.testing.assert_allclose(
      kern(new["params"]), kern(st["params"]) * (1 - lr * 5e-4)
      - lr * kern(g), rtol=1e-4, atol=1e-7)
  assert isinstance(get_method(tiny_config("float32")), MetaMask)


def test_resnet18_shapes_and_classifier():
  from maskssl.models.resnet import build_resnet
  m = build_resnet("resnet18", stem="cifar", stem_relu=False)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0),
                                    jnp.zeros((1, 32, 32, 3)), train=False))
  assert sum(x.size for x in jax.tree.leaves(v["params"])) == 11168832
  mm = MetaMask(tiny_config("float32"))
  clf = mm.classifier(10)
  imgs = np.zeros((2, 8, 8, 3), np.uint8)
  var = clf.init(jax.random.PRNGKey(0), dict(image=imgs), train=False)
  assert set(var["params"]) == {"encoder", "head"}
  assert clf.apply(var, dict(image=imgs), train=False).shape == (2, 10)


def test_knn_known_neighbours():
  # bank: 4 classes; query 0 nearest to three class-2 points and two class-1
  bank = np.array([[1, 0], [0.9, 0.1], [0.95, 0.05], [0.8, 0.2], [0.85, 0.15],
                   [-1, 0], [0, -1]], np.float32)
  labels = np.array([2, 1, 2, 1, 2, 3, 0])
  query = np.array([[1, 0], [-1, 0.01], [0, -1]], np.float32)
  pred = knn_lib.knn_predict(jnp.asarray(query), jnp.asarray(bank),
                             jnp.asarray(labels), num_classes=4, k=5,
                             temperature=1.0)
  assert list(np.asarray(pred)) == [2, 3, 0]
  # weighted vote: with k=2, t tiny, the nearest wins; tie -> lower class id
  pred = knn_lib.knn_predict(jnp.asarray(np.array([[0, 1]], np.float32)),
                             jnp.asarray(np.array([[1, 1], [-1, 1]],
                                                  np.float32)),
                             jnp.asarray(np.array([3, 1])), num_classes=4,
                             k=2, temperature=1.0)
  assert int(pred[0]) == 1
  # weights exp(sim/t): 3 far neighbours of class 0 vs 2 near of class 1
  bank = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], np.float32)
  lab = np.array([1, 1, 0, 0, 0])
  q = np.array([[1, 0]], np.float32)
  p_cold = knn_lib.knn_predict(jnp.asarray(q), jnp.asarray(bank),
                               jnp.asarray(lab), 2, k=5, temperature=0.1)
  p_hot = knn_lib.knn_predict(jnp.asarray(q), jnp.asarray(bank),
                              jnp.asarray(lab), 2, k=5, temperature=100.0)
  assert int(p_cold[0]) == 1 and int(p_hot[0]) == 0


def test_mask_report(tmp_path):
  vals = np.linspace(0.2, 0.8, 16)
  s = write_mask_report(vals, str(tmp_path))
  doc = json.load(open(os.path.join(tmp_path, "mask.json")))
  assert len(doc["values"]) == 16 and doc["sorted_dims"][0] == 15
  np.testing.assert_allclose(s["mask_mean"], 0.5)
