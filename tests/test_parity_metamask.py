"""MetaMask parity with the official PyTorch code, and the ResNet state_dict
converter / exporter (:mod:`maskssl.interop.resnet`).

The case (``../shared/data/parity/metamask``, see its SOURCE.md): two
iterations of the official ``MetaMaskBartonTwins`` (lionellee9089/MetaMask
7d405f5, lightly 1.0.8) at 1/8 width -- ResNet-18 with 8..64 channels, 64-d
feature, BT head 128-128-128, CL head 128-32 -- batch 8 per view, fixed
normalised 32x32 views, lr = mask lr = 1e-3 (epoch 0), FD r = 0.01, in
float64 and float32; iteration 0 again with r = 1e-5 / 1e-6 / 1e-7.

The official initial state_dict goes through ``import_official`` and
maskssl's own :meth:`MetaMask.iterate` (the body of ``train_step``: regular
step on ``L_BT + 10 L_CL``, virtual step, hypergradient, mask SGD step) runs
on the case's views:

* float64, ``finite_difference`` (fd_r 0.01), both iterations along
  maskssl's own trajectory, and iteration 1 again from the *official* state
  after iteration 0 (theta_1, SGD momentum, BN buffers, mask and mask
  momentum imported): losses, theta_1, momentum, theta', v, d1, R,
  dL/dm at theta_1 +- R v, the FD term, mask gradient, mask and mask
  momentum, and the real model's BN running statistics after the regular
  forward (``bn0``) and after the virtual step's inner forward (``bn1``), at
  SOURCE.md's float64 tolerances (a correct port lands at 1e-15..1e-11).
* float64, ``exact`` (iteration 0) against the r = 1e-6 run, which stands in
  for the exact hypergradient (~2e-9). At this size the official r = 0.01
  estimate is 169 % off the exact value, so ``finite_difference`` and
  ``exact`` are checked against different references.
* float32, ``finite_difference``, both iterations along maskssl's
  trajectory and iteration 1 from the official state, against the float64
  arrays at SOURCE.md's float32 tolerances (iteration 1 from the official
  state: the tighter iteration-0 column).

Pinned differences (deliberate; documented in maskssl.methods.metamask and
maskssl.models.resnet):

* theta' of the BT head. It gets no ``L_CL`` gradient; maskssl moves it by
  ``-lr (0.9 b + 5e-4 theta_1)`` as the official code does under its pinned
  torch 1.10, while the case ran torch 2.13 (``zero_grad`` sets None), which
  keeps it at theta_1 (SOURCE.md quirk 4). Checked against that formula on
  the case's theta_1 / momentum; it feeds nothing.
* float32 hypergradient. The case is extremely ill-conditioned (the
  second-order term is as large as the first-order one; relative noise 1e-13
  on the init gives 1e-10 on the mask gradient). torch's CPU BatchNorm
  accumulates its statistics *and their gradients* in double, XLA's float32
  reductions in float32. Measured: theta_1, momentum, theta', F, BN stats
  and losses sit at torch-float32's spread, but d1 is ~20x and the FD term /
  mask gradient ~40x further from float64 than torch-float32 (iteration 0:
  d1 2.1e-2, FD term 0.18; torch-float32: 1.2e-3, 4.7e-3). Running the same
  float32 model with only the BatchNorm arithmetic in float64 lands at
  torch's spread (d1 1.2e-3, FD term 5.3e-3, mask gradient 5.2e-3); with
  only the forward statistics in float64 nothing changes, so it is the
  float32 sums of the BN backward. Both are float32 noise. The mask moved
  by that noisier gradient then shifts maskssl's own iteration 1 (up to 0.17
  on its mask quantities, 1.3e-3 on L_CL at theta_1), while iteration 1 from
  the official state is again at 1e-7..3e-5. So the iteration-0 mask
  gradient family and what iteration 1 inherits are checked at
  ``F32_PINNED`` (measured x ~2), looser than SOURCE.md's float32 rows,
  which assume torch-CPU accumulation.

BN running variance: torch keeps the *unbiased* batch variance in
``running_var``; maskssl's BatchNorm used flax's biased one (a factor
``n/(n-1)`` on each increment, 8/7 in the projector BN1d layers). That was a
real difference for exported buffers and eval-mode features and is fixed in
maskssl (``maskssl.models.resnet.TorchBatchNorm``), so buffers are compared
directly here.

Not compared: the official scratch model's own BN buffers (``bn2``-``bn4``;
never used, maskssl discards those statistics), the unused predictors
(omitted in maskssl), ``cl_fd_plus`` / ``cl_fd_minus`` (maskssl only takes
their mask gradients) and the debug activations ``reg_*`` (the losses and
``bn0`` cover them). Quirk-9 leaves (exactly-zero gradients holding rounding
noise) get an absolute floor in per-leaf checks; whole trees are compared by
relative L2 norm.
"""
import concurrent.futures
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from maskssl.interop import StateDictError, from_state_dict
from maskssl.interop import resnet as ir
from maskssl.masks import mscn
from maskssl.methods import siamese
from maskssl.methods.metamask import MetaMask, momentum_trace

CASE = "parity/metamask/cases.npz"
HEAD_PREFIXES = ("backbone.", "projection_mlp2.")   # what L_CL depends on

# SOURCE.md tolerances, relative L2 over whole arrays / trees.
F64_TOL = dict(losses=1e-11, theta=1e-10, mask=1e-9, bn=1e-10)
LEAF_ATOL = 1e-12          # float64 per-leaf floor (quirk-9 noise leaves)
F64 = dict(loss=F64_TOL["losses"], loss_bt=F64_TOL["losses"],
           loss_cl=F64_TOL["losses"], cl_virtual_inner=F64_TOL["losses"],
           cl_meta=F64_TOL["losses"], theta1=F64_TOL["theta"],
           momentum=F64_TOL["theta"], theta_virtual=F64_TOL["theta"],
           vector=F64_TOL["theta"], bn=F64_TOL["bn"],
           **{n: F64_TOL["mask"] for n in (
               "fd_R", "d1", "fd_grad_plus", "fd_grad_minus", "fd_term",
               "mask_grad", "mask_after", "mask_momentum")})
# float32 against the float64 arrays: (iteration 0, iteration 1). SOURCE.md
# rows; cl_virtual_inner takes the loss row, BN the theta1 row, R and the
# FD gradients the d1 row.
F32 = dict(loss=(1e-5, 2e-4), loss_bt=(1e-5, 2e-4), loss_cl=(1e-5, 2e-4),
           cl_virtual_inner=(1e-5, 2e-4), cl_meta=(5e-4, 1e-2),
           theta1=(1e-5, 5e-4), momentum=(5e-5, 2e-3),
           theta_virtual=(2e-4, 1e-3), bn=(1e-5, 5e-4), d1=(2e-2, 5e-2),
           fd_R=(2e-2, 5e-2), fd_grad_plus=(2e-2, 5e-2),
           fd_grad_minus=(2e-2, 5e-2), fd_term=(5e-2, 1e-1),
           mask_grad=(5e-2, 1e-1), mask_after=(5e-2, 1e-1),
           mask_momentum=(5e-2, 1e-1))
# Pinned (module docstring): the float32 mask gradient of iteration 0 and
# what iteration 1 inherits from it along maskssl's own trajectory; about
# twice the measured errors, which are (it 0 / it 1): d1 2.1e-2 / 0.10,
# dL/dm at theta_1 + R v 1.5e-3 / 4.3e-2 and at theta_1 - R v 5.3e-2 /
# 2.3e-2, FD term 0.18 / 0.10, mask gradient 0.18 / 0.10, mask and mask
# momentum 0.18 / 0.17, L_CL at theta_1 4e-6 / 1.3e-3. Iteration 1 started
# from the official state instead meets the iteration-0 column of F32.
F32_PINNED = dict(d1=(5e-2, 2e-1), fd_grad_plus=(1e-1, 1e-1),
                  fd_grad_minus=(1e-1, 1e-1), fd_term=(4e-1, 2e-1),
                  mask_grad=(4e-1, 2e-1), mask_after=(4e-1, 4e-1),
                  mask_momentum=(4e-1, 4e-1), cl_virtual_inner=(None, 3e-3))
REPORT = {}


# ------------------------------------------------------------------ helpers --
def case_config(dtype: str, mode: str = "finite_difference"):
  return ml_collections.ConfigDict(dict(
      method="metamask", seed=1, batch_size=8, total_steps=98 * 800,
      model=dict(backbone="resnet18", width=8, stem="cifar", stem_relu=False,
                 init_scheme="pytorch", head_init_scheme="pytorch",
                 bt_features=(128, 128, 128), cl_features=(128, 32),
                 compute_dtype=dtype),
      metamask=dict(meta_grad=mode, fd_r=0.01, w_cl=10.0, bt_lambda=5e-3,
                    temperature=0.07, mask_lr=1e-3, mask_momentum=0.9,
                    mask_weight_decay=5e-4, steps_per_epoch=98, epochs=800),
      optim=dict(lr=1e-3, momentum=0.9, weight_decay=5e-4),
      augment=dict(size=32)))


@functools.lru_cache(maxsize=None)
def _case(path: str) -> dict:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _case_of(shared_data) -> dict:
  return _case(str(shared_data / CASE))


def _sub(case, prefix) -> dict:
  """``{name: array}`` of the case entries under ``prefix/``."""
  n = len(prefix) + 1
  return {k[n:]: v for k, v in case.items() if k.startswith(prefix + "/")}


def _views(case, dtype):
  return [(jnp.asarray(case["x0"][k].astype(dtype).transpose(0, 2, 3, 1)),
           jnp.asarray(case["x1"][k].astype(dtype).transpose(0, 2, 3, 1)))
          for k in (0, 1)]


@functools.lru_cache(maxsize=None)
def _rules(mm):
  st = jax.eval_shape(lambda: mm.init_state(jax.random.PRNGKey(0), {}))
  return tuple(ir.official_rules({"params": st["params"],
                                  "batch_stats": st["batch_stats"],
                                  "mask": st["mask"]}))


def _state(mm, sd, dtype, step=0, momentum=None, mask_momentum=None):
  """A MetaMask train state from official tensors (and optimiser traces)."""
  var = ir.import_official(sd, mm, dtype=dtype)
  params = jax.tree.map(jnp.asarray, var["params"])
  mask = jnp.asarray(var["mask"])
  opt, mopt = mm.tx.init(params), mm.mask_tx.init(mask)
  if momentum is not None:
    rules = [r for r in _rules(mm) if r.path[0] == "params"]
    trace = from_state_dict(momentum, rules, dtype=dtype)["params"]
    opt = optax.tree_utils.tree_set(opt, trace=jax.tree.map(jnp.asarray,
                                                           trace))
  if mask_momentum is not None:
    mopt = optax.tree_utils.tree_set(
        mopt, trace=jnp.asarray(mask_momentum, dtype))
  return dict(step=jnp.asarray(step, jnp.int32), params=params,
              batch_stats=jax.tree.map(jnp.asarray, var["batch_stats"]),
              mask=mask, opt_state=opt, mask_opt_state=mopt)


def _official_state_after(mm, case, run, k, dtype):
  """The official model's state after iteration ``k`` (teacher forcing)."""
  sd = dict(_sub(case, f"{run}/it{k}/theta1"))
  sd.update(_sub(case, f"{run}/it{k}/bn1"))
  sd["auto_mask.mask"] = case[f"{run}/it{k}/mask_after"]
  return _state(mm, sd, dtype, step=k + 1,
                momentum=_sub(case, f"{run}/it{k}/momentum"),
                mask_momentum=case[f"{run}/it{k}/mask_momentum"])


def _np(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree),
                      is_leaf=lambda x: x is None)


def _named(mm, tree, collection: str) -> dict:
  """torch name -> torch-layout array for a params / batch_stats tree."""
  out = {}
  for r in _rules(mm):
    if r.path[0] != collection:
      continue
    node = tree
    for key in r.path[1:]:
      node = node[key]
    out[r.torch] = r.layout.to_torch(np.asarray(node, np.float64))
  return out


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class Checks:
  """Relative-error checks that record every value (``REPORT``) and fail
  at :meth:`done` with all misses listed."""

  def __init__(self, run: str, k: int, forced: bool = False, tag=None):
    self.tag = tag or f"{run}/it{k}/" + ("forced/" if forced else "")
    if run == "f64":
      self.tols = dict(F64)
    else:   # iteration 1 from the official state: iteration-0 column
      col = 0 if forced else k
      self.tols = {n: t[col] for n, t in F32.items()}
      if not forced:
        self.tols.update({n: t[k] for n, t in F32_PINNED.items()
                          if t[k] is not None})
    self.leaf_atol = LEAF_ATOL if run == "f64" else None
    self.fails = []

  def _record(self, name, err, tol):
    key = self.tag + name
    REPORT[key] = err
    if not err <= tol:
      self.fails.append(f"{key}: relative error {err:.3g} > {tol:.3g}")

  def rel(self, name, ours, ref, tol_name=None, tol=None):
    self._record(name, _rel(ours, ref),
                 self.tols[tol_name or name] if tol is None else tol)

  def tree(self, name, ours: dict, ref: dict, names=None, tol_name=None,
           tol=None):
    """Whole-tree relative L2 over ``names`` (default: the reference's);
    in float64 also every leaf, with an absolute floor."""
    tol = self.tols[tol_name or name] if tol is None else tol
    names = sorted(ref if names is None else names)
    assert names and set(names) <= set(ours), sorted(set(names) - set(ours))
    a = np.concatenate([np.ravel(ours[n]) for n in names])
    b = np.concatenate([np.ravel(ref[n]) for n in names])
    self._record(name, _rel(a, b), tol)
    if self.leaf_atol is not None:
      bad = [n for n in names
             if np.linalg.norm(np.asarray(ours[n], np.float64) - ref[n])
             > tol * np.linalg.norm(ref[n]) + self.leaf_atol * np.sqrt(
                 ref[n].size)]
      if bad:
        self.fails.append(f"{self.tag}{name}: leaves off: {bad}")

  def done(self):
    assert not self.fails, "\n".join(self.fails)


# ------------------------------------------------------------------- runs ----
MM = {"f64": MetaMask(case_config("float64")),
      "f32": MetaMask(case_config("float32"))}


def _compile(path, program):
  """One of the three programs, traced with the case's initial state."""
  case = _case(path)
  run = "f32" if program == "f32" else "f64"
  mm, dtype = MM[run], np.float64 if run == "f64" else np.float32
  with jax.enable_x64(run == "f64"):   # thread-local, like all jax config
    st = _state(mm, _sub(case, "init"), dtype)
    x0, x1 = _views(case, dtype)[0]
    if program == "exact":
      fn = jax.jit(functools.partial(mm.hypergradient, mode="exact"))
      return fn.lower(st["params"], st["params"], st["batch_stats"],
                      st["mask"], x0, x1, jnp.asarray(1e-3)).compile()
    return jax.jit(mm.iterate).lower(st, x0, x1).compile()


@functools.lru_cache(maxsize=None)
def _programs(path):
  """float64 / float32 ``iterate`` and the float64 ``exact``
  hypergradient, compiled concurrently: XLA compiles release the GIL and
  compiling is ~95 % of this file's time."""
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futs = {p: pool.submit(_compile, path, p) for p in ("f64", "exact", "f32")}
    return {p: f.result() for p, f in futs.items()}


@functools.lru_cache(maxsize=None)
def _run(path, run):
  """maskssl's two iterations from the official init, and iteration 1 again
  from the official (float64) state after iteration 0."""
  case, mm = _case(path), MM[run]
  it = _programs(path)[run]
  dtype = np.float64 if run == "f64" else np.float32
  with jax.enable_x64(run == "f64"):
    xs = _views(case, dtype)
    st = _state(mm, _sub(case, "init"), dtype)
    outs = []
    for k in (0, 1):
      new, metrics, aux = it(st, *xs[k])
      outs.append(dict(state=_np(new), metrics=_np(metrics), aux=_np(aux),
                       state_in=_np(st)))
      st = new
    new, metrics, aux = it(_official_state_after(mm, case, "f64", 0, dtype),
                           *xs[1])
    return mm, dict(it=outs, forced1=dict(state=_np(new), metrics=_np(metrics),
                                          aux=_np(aux)))


@functools.lru_cache(maxsize=None)
def _run_exact(path):
  """``exact`` hypergradient at iteration 0 from maskssl's float64 theta_1."""
  mm, res = _run(path, "f64")
  case, r0 = _case(path), res["it"][0]
  with jax.enable_x64(True):
    st = jax.tree.map(jnp.asarray, r0["state"])
    x0, x1 = _views(case, np.float64)[0]
    h, aux = _programs(path)["exact"](
        st["params"], momentum_trace(st["opt_state"], st["params"]),
        jax.tree.map(jnp.asarray, r0["aux"]["batch_stats_regular"]),
        jnp.asarray(r0["state_in"]["mask"]), x0, x1,
        jnp.asarray(case["f64/it0/lr"]))
    return mm, _np(h), _np(aux)


def _results(shared_data, run):
  return _run(str(shared_data / CASE), run)


@pytest.fixture(scope="module", autouse=True)
def _print_report():
  yield
  if REPORT:
    print("\nMetaMask parity (max relative error):")
    for k in sorted(REPORT):
      print(f"  {k:40s} {REPORT[k]:.2e}")


RUNS = [("f64", 0), ("f64", 1), ("f32", 0), ("f32", 1)]
# (run, iteration, forced): forced = iteration 1 from the official state
ITERS = [(r, k, False) for r, k in RUNS] + [("f64", 1, True),
                                            ("f32", 1, True)]


def _iteration(shared_data, run, k, forced):
  mm, res = _results(shared_data, run)
  return mm, (res["forced1"] if forced else res["it"][k])


def _ids(p):
  return f"{p[0]}-it{p[1]}" + ("-forced" if p[2] else "")


# ---------------------------------------------------------------- parity -----
@pytest.mark.parametrize("run,k,forced", ITERS, ids=map(_ids, ITERS))
def test_regular_step(shared_data, run, k, forced):
  """Losses, lr, theta_1 and the SGD momentum buffer of the regular step."""
  case = _case_of(shared_data)
  mm, r = _iteration(shared_data, run, k, forced)
  ref, c = f"f64/it{k}/", Checks(run, k, forced)
  dt = np.float64 if run == "f64" else np.float32
  assert r["metrics"]["lr"] == dt(case[ref + "lr"]) == dt(1e-3)
  for ours, theirs in (("loss", "loss"), ("bt_loss", "loss_bt"),
                       ("cl_loss", "loss_cl")):
    c.rel(theirs, r["metrics"][ours], case[ref + theirs])
  theta1 = _named(mm, r["state"]["params"], "params")
  c.tree("theta1", theta1, _sub(case, ref + "theta1"), names=list(theta1))
  c.tree("momentum", _named(mm, momentum_trace(
      r["state"]["opt_state"], r["state"]["params"]), "params"),
      _sub(case, ref + "momentum"))
  c.done()


@pytest.mark.parametrize("run,k,forced", ITERS, ids=map(_ids, ITERS))
def test_virtual_step(shared_data, run, k, forced):
  """theta' on backbone + CL head, its BT head (pinned: torch-1.10 formula),
  v, and L_CL at theta_1 (inner) and at theta' (the meta objective F)."""
  case = _case_of(shared_data)
  mm, r = _iteration(shared_data, run, k, forced)
  ref, c = f"f64/it{k}/", Checks(run, k, forced)
  aux = r["aux"]
  tv = _named(mm, aux["theta_virtual"], "params")
  ref_tv = _sub(case, ref + "theta_virtual")
  cl_names = [n for n in tv if n.startswith(HEAD_PREFIXES)]
  bt_names = [n for n in tv if n.startswith("projection_mlp.")]
  th1, mom = _sub(case, ref + "theta1"), _sub(case, ref + "momentum")
  for n in bt_names:   # torch 2: the zero-gradient BT head stays at theta_1
    np.testing.assert_array_equal(ref_tv[n], th1[n])
  bt_ref = {n: th1[n] - 1e-3 * (0.9 * mom[n] + 5e-4 * th1[n])
            for n in bt_names}
  c.tree("theta_virtual", tv, ref_tv, names=cl_names)
  c.tree("theta_virtual_bt_head(torch1.10)", tv, bt_ref,
         tol_name="theta_virtual")
  v = _named(mm, aux["v"], "params")
  assert all(not np.any(v[n]) for n in bt_names)   # BT head: exactly 0
  if run == "f64":   # v is stored for float64 only
    ref_v = _sub(case, ref + "vector")
    assert sorted(ref_v) == sorted(cl_names)
    c.tree("vector", v, ref_v)
  c.rel("cl_virtual_inner", aux["cl_loss_inner"], case[ref +
                                                       "cl_virtual_inner"])
  c.rel("cl_meta", aux["meta_loss"], case[ref + "cl_meta"])
  c.done()


@pytest.mark.parametrize("run,k,forced", ITERS, ids=map(_ids, ITERS))
def test_finite_difference_hypergradient_and_mask_step(shared_data, run, k,
                                                       forced):
  """``finite_difference`` (r = 0.01) against the official DARTS estimate:
  R, dL/dm at theta_1 +- R v, FD term, d1, mask gradient (eta = encoder
  lr); then the mask SGD step (mask logits and momentum buffer)."""
  case = _case_of(shared_data)
  _, r = _iteration(shared_data, run, k, forced)
  ref, c = f"f64/it{k}/", Checks(run, k, forced)
  aux, st = r["aux"], r["state"]
  assert float(case[ref + "fd_r"]) == 0.01
  assert float(case[ref + "eta"]) == float(case[ref + "mask_lr"]) == 1e-3
  got = dict(fd_R=aux["fd_eps"], d1=aux["d1"],
             fd_grad_plus=aux["fd_grad_plus"],
             fd_grad_minus=aux["fd_grad_minus"],
             fd_term=aux["second_order"], mask_grad=aux["hypergradient"],
             mask_after=st["mask"],
             mask_momentum=momentum_trace(st["mask_opt_state"], st["mask"]))
  for name, ours in got.items():
    c.rel(name, ours, case[ref + name])
  c.done()


@pytest.mark.parametrize("run,k,forced", ITERS, ids=map(_ids, ITERS))
def test_batchnorm_running_statistics(shared_data, run, k, forced):
  """The real model's BN buffers after the regular forward (bn0) and after
  the virtual step's inner forward at theta_1 (bn1, kept), with torch's
  unbiased running variance; num_batches_tracked of the export = bn1's."""
  case = _case_of(shared_data)
  mm, r = _iteration(shared_data, run, k, forced)
  ref, c = f"f64/it{k}/", Checks(run, k, forced)
  for j, tree in ((0, r["aux"]["batch_stats_regular"]),
                  (1, r["state"]["batch_stats"])):
    ours = _named(mm, tree, "batch_stats")
    theirs = {n: v for n, v in _sub(case, f"{ref}bn{j}").items()
              if n in ours}
    # mean and var of 20 backbone + 5 projector BNs (no predictors)
    assert len(theirs) == len(ours) == 2 * 25
    c.tree(f"bn{j}", ours, theirs, tol_name="bn")
  tensors, _ = ir.export(mm, r["state"], "official")
  nbt = int(case[f"{ref}bn1/backbone.1.num_batches_tracked"])
  assert nbt == 4 * (k + 1)
  for n, v in tensors.items():
    if n.endswith(".num_batches_tracked"):
      assert v.dtype == np.int64 and int(v) == nbt, n
  c.done()


def test_exact_hypergradient_against_small_r(shared_data):
  """``exact`` (iteration 0, float64) against the official FD with r = 1e-6
  (~2e-9 from exact); its second-order term against that run's FD term; d1,
  F, theta', v and the kept BN statistics as in the FD run. r = 0.01 is far
  from exact here (169 %)."""
  case = _case_of(shared_data)
  mm, h, aux = _run_exact(str(shared_data / CASE))
  small, ref = "f64_r1e-06/it0/", "f64/it0/"
  c = Checks("f64", 0, tag="f64/it0/exact/")
  assert float(case[small + "fd_r"]) == 1e-6
  c.rel("mask_grad_vs_r1e-6", h, case[small + "mask_grad"], tol=1e-7)
  c.rel("second_order_vs_r1e-6", aux["second_order"],
        case[small + "fd_term"], tol=1e-6)
  c.rel("d1", aux["d1"], case[ref + "d1"])
  c.rel("cl_meta", aux["meta_loss"], case[ref + "cl_meta"])
  c.rel("cl_virtual_inner", aux["cl_loss_inner"],
        case[ref + "cl_virtual_inner"])
  tv = _named(mm, aux["theta_virtual"], "params")
  c.tree("theta_virtual", tv, _sub(case, ref + "theta_virtual"),
         names=[n for n in tv if n.startswith(HEAD_PREFIXES)])
  c.tree("vector", _named(mm, aux["v"], "params"),
         _sub(case, ref + "vector"))
  bn = _named(mm, aux["batch_stats"], "batch_stats")
  c.tree("bn1", bn, {n: v for n, v in _sub(case, ref + "bn1").items()
                     if n in bn}, tol_name="bn")
  c.done()
  # the two references really differ: FD(0.01) is not the exact gradient
  assert _rel(h, case[ref + "mask_grad"]) > 0.5
  assert _rel(case[small + "mask_grad"], case[ref + "mask_grad"]) > 0.5


# ------------------------------------------------------ converter / export --
def test_export_official_names_shapes_and_values(shared_data):
  """Import then export of the official initial state_dict gives back its
  names (in order), shapes, dtypes and values bit for bit -- minus the two
  SimSiam predictors, which maskssl omits (they feed no loss)."""
  case = _case_of(shared_data)
  mm = MetaMask(case_config("float32"))
  init = _sub(case, "init")
  state = _state(mm, init, np.float32)
  tensors, info = ir.export(mm, state, "official")
  names = [str(n) for n in case["state_names"]]
  kept = [n for n in names if not n.startswith(ir.OFFICIAL_IGNORED)]
  # predictors: 2 x (two Linear weight/bias + one BN1d with 5 entries)
  assert len(names) - len(kept) == 2 * (2 * 2 + 5)
  assert list(tensors) == kept
  for n in kept:
    assert tensors[n].shape == init[n].shape, n
    assert tensors[n].dtype == init[n].dtype, n
    np.testing.assert_array_equal(tensors[n], init[n], err_msg=n)
  assert info["feature_dim"] == 64 and info["stem"] == "cifar"
  assert info["stem_relu"] is False and "relu" in info["stem_note"]
  assert info["input"]["mean"] == [0.485, 0.456, 0.406]
  assert info["input"]["std"] == [0.229, 0.224, 0.225]
  assert info["mask"]["values"] == [0.5] * 64
  assert info["batchnorm"] == dict(eps=1e-5, momentum=0.1,
                                   running_var="unbiased")
  # the LightningModule's own state_dict: prefixed, backbone twice, scratch
  lightning = {"auto_mask.mask": init["auto_mask.mask"]}
  for n, v in init.items():
    if n != "auto_mask.mask":
      lightning["resnet_simsiam." + n] = lightning["resnet_simsiam_." + n] = v
      if n.startswith("backbone."):
        lightning[n] = v
  jax.tree.map(np.testing.assert_array_equal, ir.import_official(lightning, mm),
               ir.import_official(init, mm))


def test_export_import_roundtrip_is_bitwise(shared_data):
  """export -> import_into is the identity on the covered variables, for
  both targets, from a trained (non-initial) state into a fresh one."""
  mm, res = _results(shared_data, "f32")
  trained = res["it"][1]["state"]
  fresh = _random_state(mm, {}, 3)
  for target in ir.TARGETS:
    tensors, _ = ir.export(mm, trained, target)
    back = ir.import_into(mm, fresh, tensors, target)
    again, _ = ir.export(mm, back, target)
    assert list(again) == list(tensors)
    for n in tensors:
      assert again[n].dtype == tensors[n].dtype
      if n.endswith(".num_batches_tracked"):   # from the state's step
        assert int(again[n]) == 0 and int(tensors[n]) == 8, n
        continue
      np.testing.assert_array_equal(again[n], tensors[n], err_msg=n)
    cov = ir.covered_variables(mm, back, target)
    want = ir.covered_variables(mm, trained, target)
    jax.tree.map(np.testing.assert_array_equal, cov, want)
    # what the target does not cover is left as it was
    if target == "torchvision":
      jax.tree.map(np.testing.assert_array_equal, back["params"]["bt_head"],
                   fresh["params"]["bt_head"])
      np.testing.assert_array_equal(back["mask"], fresh["mask"])


def _random_state(method, batch, seed):
  """A state with the method's structure, shapes and dtypes and random
  floating values (eager ``init_state`` is slow on the shared CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: method.init_state(jax.random.PRNGKey(0),
                                                    batch))
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape).astype(s.dtype)
                 if np.issubdtype(s.dtype, np.floating)
                 else np.zeros(s.shape, s.dtype)), shapes)


def _siamese(**model):
  c = ml_collections.ConfigDict()
  c.method, c.seed, c.batch_size, c.total_steps = "siamese", 0, 4, 10
  c.data = ml_collections.ConfigDict(dict(name="none", image_key="image"))
  c.model = ml_collections.ConfigDict(dict(
      dict(backbone="resnet_tiny", stem="cifar", width=8, stage_sizes=(1, 1),
           init_scheme="kaiming_fan_out", zero_init_residual=True,
           compute_dtype="float32", projector_width=16, projector_dims=None),
      **model))
  c.loss = siamese.default_loss_config("vicreg")
  c.augment = siamese.default_augment_config(16)
  c.mscn = mscn.default_config(16)
  c.mscn.enabled = True
  c.optim = ml_collections.ConfigDict(dict(lr=1e-2))   # not exercised
  return siamese.Siamese(c)


def test_siamese_export_roundtrip_and_names():
  """MSCN's siamese backbone: lightly-style (official) and torchvision names,
  bitwise round trip; the projector is not covered."""
  sm = _siamese()
  batch = {"image": np.zeros((2, 16, 16, 3), np.uint8)}
  a, b = _random_state(sm, batch, 0), _random_state(sm, batch, 1)
  for target, stem in (("official", "backbone.0.weight"),
                       ("torchvision", "conv1.weight")):
    tensors, info = ir.export(sm, a, target)
    assert next(iter(tensors)) == stem
    assert info["method"] == "siamese" and info["feature_dim"] == 16
    assert info["stem_relu"] is True
    back = ir.import_into(sm, b, tensors, target)
    jax.tree.map(np.testing.assert_array_equal, back["params"]["encoder"],
                 a["params"]["encoder"])
    jax.tree.map(np.testing.assert_array_equal,
                 back["batch_stats"]["encoder"], a["batch_stats"]["encoder"])
    jax.tree.map(np.testing.assert_array_equal, back["params"]["projector"],
                 b["params"]["projector"])
  off, _ = ir.export(sm, a, "official")
  assert "backbone.3.0.shortcut.0.weight" in off
  assert not any(n.startswith(("projection", "auto_mask")) for n in off)
  assert info["input"]["kind"] == "mscn_hpf"     # MSCN on: HPF at eval


# torchvision's resnet18 state_dict (torchvision.models.resnet18().state_dict()
# minus fc.*): module, kind, shape. BN modules also hold running_mean,
# running_var and num_batches_tracked.
TV_RESNET18 = """
conv1 conv 64 3 7 7
bn1 bn 64
layer1.0.conv1 conv 64 64 3 3
layer1.0.bn1 bn 64
layer1.0.conv2 conv 64 64 3 3
layer1.0.bn2 bn 64
layer1.1.conv1 conv 64 64 3 3
layer1.1.bn1 bn 64
layer1.1.conv2 conv 64 64 3 3
layer1.1.bn2 bn 64
layer2.0.conv1 conv 128 64 3 3
layer2.0.bn1 bn 128
layer2.0.conv2 conv 128 128 3 3
layer2.0.bn2 bn 128
layer2.0.downsample.0 conv 128 64 1 1
layer2.0.downsample.1 bn 128
layer2.1.conv1 conv 128 128 3 3
layer2.1.bn1 bn 128
layer2.1.conv2 conv 128 128 3 3
layer2.1.bn2 bn 128
layer3.0.conv1 conv 256 128 3 3
layer3.0.bn1 bn 256
layer3.0.conv2 conv 256 256 3 3
layer3.0.bn2 bn 256
layer3.0.downsample.0 conv 256 128 1 1
layer3.0.downsample.1 bn 256
layer3.1.conv1 conv 256 256 3 3
layer3.1.bn1 bn 256
layer3.1.conv2 conv 256 256 3 3
layer3.1.bn2 bn 256
layer4.0.conv1 conv 512 256 3 3
layer4.0.bn1 bn 512
layer4.0.conv2 conv 512 512 3 3
layer4.0.bn2 bn 512
layer4.0.downsample.0 conv 512 256 1 1
layer4.0.downsample.1 bn 512
layer4.1.conv1 conv 512 512 3 3
layer4.1.bn1 bn 512
layer4.1.conv2 conv 512 512 3 3
layer4.1.bn2 bn 512
"""


def _expand(table):
  out = []
  for line in table.strip().splitlines():
    mod, kind, *shape = line.split()
    shape = tuple(int(s) for s in shape)
    if kind == "conv":
      out.append((f"{mod}.weight", shape))
    else:
      out += [(f"{mod}.{p}", shape) for p in
              ("weight", "bias", "running_mean", "running_var")]
      out.append((f"{mod}.num_batches_tracked", ()))
  return out


def _tv_resnet50():
  """torchvision resnet50 (v1.5 Bottleneck: conv1 1x1, conv2 3x3 with the
  stride, conv3 1x1 to 4x; downsample on the first block of every stage)."""
  lines = ["conv1 conv 64 3 7 7", "bn1 bn 64"]
  inp = 64
  for i, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
    for j in range(n):
      p = f"layer{i}.{j}."
      lines += [f"{p}conv1 conv {w} {inp} 1 1", f"{p}bn1 bn {w}",
                f"{p}conv2 conv {w} {w} 3 3", f"{p}bn2 bn {w}",
                f"{p}conv3 conv {4 * w} {w} 1 1", f"{p}bn3 bn {4 * w}"]
      if j == 0:
        lines += [f"{p}downsample.0 conv {4 * w} {inp} 1 1",
                  f"{p}downsample.1 bn {4 * w}"]
      inp = 4 * w
  return "\n".join(lines)


def _empty_state(method, batch):
  """A state of read-only zero views (no memory) with the method's shapes."""
  shapes = jax.eval_shape(lambda: method.init_state(jax.random.PRNGKey(0),
                                                    batch))
  return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype),
                                                s.shape), shapes)


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_torchvision_names_and_shapes(depth):
  """Exported torchvision names / shapes equal torchvision's (ImageNet stem:
  exactly torchvision's network); the CIFAR stem differs in conv1 only and
  says so."""
  table = TV_RESNET18 if depth == "resnet18" else _tv_resnet50()
  want = _expand(table)
  batch = {"image": np.zeros((2, 32, 32, 3), np.uint8)}
  for stem in ("imagenet", "cifar"):
    sm = _siamese(backbone=depth, stem=stem, width=None, stage_sizes=None)
    tensors, info = ir.export(sm, _empty_state(sm, batch), "torchvision")
    got = [(n, tuple(v.shape)) for n, v in tensors.items()]
    if stem == "imagenet":
      assert got == want
      assert "stem_note" not in info
    else:
      assert got[0] == ("conv1.weight", (64, 3, 3, 3))
      assert got[1:] == want[1:]
      assert "max-pool" in info["stem_note"]
    assert info["architecture"] == depth
    assert info["feature_dim"] == (512 if depth == "resnet18" else 2048)


def test_bad_state_dicts_and_targets_raise(shared_data):
  """Missing, unexpected and mis-shaped tensors are all named in one
  StateDictError; unknown targets name the allowed ones."""
  case = _case_of(shared_data)
  mm = MetaMask(case_config("float32"))
  sd = dict(_sub(case, "init"))
  del sd["backbone.2.0.conv1.weight"]
  sd["backbone.9.weight"] = np.zeros((3,), np.float32)
  sd["projection_mlp2.1.0.weight"] = sd["projection_mlp2.1.0.weight"].T
  with pytest.raises(StateDictError) as e:
    ir.import_official(sd, mm)
  msg = str(e.value)
  for frag in ("missing (1): backbone.2.0.conv1.weight",
               "unexpected (1): backbone.9.weight",
               "mis-shaped (1): projection_mlp2.1.0.weight"):
    assert frag in msg, msg
  state = _state(mm, _sub(case, "init"), np.float32)
  tensors, _ = ir.export(mm, state, "official")
  with pytest.raises(StateDictError, match="allowed: .'official', "
                     "'torchvision'."):
    ir.export(mm, state, "timm")
  with pytest.raises(StateDictError, match="allowed"):
    ir.import_into(mm, state, tensors, "timm")
  # torchvision tensors are not official ones: all listed
  tv, _ = ir.export(mm, state, "torchvision")
  with pytest.raises(StateDictError, match="(?s)missing .* unexpected"):
    ir.import_into(mm, state, tv, "official")
  with pytest.raises(StateDictError, match="import_into"):
    ir.import_official(sd, _siamese())
