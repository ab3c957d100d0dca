"""MetaMask (Li et al., NeurIPS 2022): Barlow Twins + SimCLR with a
meta-learned dimensional mask (arXiv 2209.07902).

Model: ResNet (CIFAR stem, 512-d pooled feature ``h``) -> ``h * M`` with a
global mask ``M = sigmoid(m)`` (``m`` init 0, so ``M = 0.5``) -> two
projectors: Barlow Twins ``g_bt`` (3 layers, 2048) and contrastive ``g_cl``
(2 layers, 256), each ending with an affine BatchNorm. Each augmented view is
a separate forward pass with its own BatchNorm batch statistics (running
statistics are updated view 0, then view 1), as in the reference.

One iteration (``train_step``, one jitted function), in the reference order:

1. **regular step**: ``g = grad_theta [L_BT + w_cl * L_CL](theta_t, M)`` with
   ``M`` held constant (the mask never learns from ``L_BT``), then one
   SGD-momentum step (``optax``: coupled weight decay, torch semantics);
2. **virtual step** from the *updated* weights ``theta_1`` on ``L_CL`` only,
   with the optimiser's momentum trace and weight decay:
   ``theta'(m) = theta_1 - lr (mu * trace + grad L_CL(theta_1, M(m)) + wd * theta_1)``;
3. **hypergradient** ``h_m = d/dm L_CL(theta'(m), M(m))`` (``meta_grad``);
4. **mask step**: its own SGD (momentum 0.9, wd 5e-4 on the logits).

``metamask.meta_grad`` modes (all exact ones agree to float error):

* ``"exact"`` (default): the exact hypergradient computed with one
  linearisation of the backbone at ``theta_1``:
  ``h_m = d1 - lr * grad_m <grad_theta L_CL(theta_1, M(m)), v>`` where
  ``v = grad_theta L_CL(theta')`` and ``d1 = dL_CL(theta')/dm``. Because ``m``
  enters after the backbone, ``<grad_theta L_CL(theta_1, m), v>`` equals
  a JVP of the *heads* with tangents ``(v_heads, J_backbone(theta_1) v_backbone)``;
  ``J v`` reuses the residuals of the inner gradient's forward pass
  (``jax.linearize`` + ``jax.linear_transpose``), so the second-order term
  costs one backbone tangent pass instead of a reverse-over-reverse sweep.
* ``"exact_unrolled"``: literally ``jax.grad`` of the unrolled meta objective
  (reverse-over-reverse through the virtual step; the spec's pseudo-code).
* ``"exact_jvp"``: ``d1 - lr * jvp(theta -> dL_CL(theta, M(m))/dm, theta_1, v)``.
* ``"finite_difference"`` (alias ``"fd"``): the reference/DARTS estimate,
  ``eps = fd_r / ||v||`` (``fd_r = 0.01``) and a central difference of
  ``dL_CL/dm`` at ``theta_1 +- eps v``.
* ``"first_order"``: ``h_m = d1`` (no second-order term).

BatchNorm inside the meta step: batch statistics are functions of
``theta`` and are differentiated through; the running statistics of the
step-2 forward at ``theta_1`` are kept (``meta_updates_bn_stats=True``, as the
reference updates the real model's buffers there), those of the ``theta'``
and ``theta_1 +- eps v`` passes are discarded.

Learning rates follow the reference's per-epoch cosine
(``lr_e = lr_0 * (1 + cos(pi e / E)) / 2``, ``e = step // steps_per_epoch``)
or are constant (``optim.schedule``; :mod:`maskssl.optim`). The
``mask_report`` evaluator writes the learned mask's report.

State: ``step``, ``params`` ({encoder, bt_head, cl_head}), ``batch_stats``
(same keys), ``opt_state`` (encoder SGD), ``mask`` (logits ``m``, (F,)),
``mask_opt_state`` (mask SGD).

``encode`` returns eval-mode backbone features multiplied by the learned
mask (``metamask.encode_apply_mask``, default True, as the reference kNN).
Checked against two iterations of the official code (float64 to ~1e-12:
losses, theta_1, momentum, theta', v, d1, the FD term, mask step, BN running
statistics; ``exact`` against the reference's FD at r = 1e-6 to ~2e-9;
``tests/test_parity_metamask.py``). Deviations, all without effect on any
loss, gradient, mask or kept statistic:

* the two SimSiam predictors of the reference are omitted (they feed no
  loss and receive no gradient);
* theta' of the BT head: it has a zero ``L_CL`` gradient, so the virtual step
  moves it by ``-lr (mu trace + wd theta_1)``, as the reference does under
  its pinned torch 1.10 (``zero_grad`` zeroes); under torch >= 2 (gradients
  set to None) the reference keeps it at ``theta_1``. It does not enter
  ``L_CL`` either way;
* FD: ``theta_1 - R v`` directly (reference: ``theta_+ - 2 R v`` in place);
* the reference's scratch model keeps its own, never used, BN buffers for
  the theta' / theta_+- passes; here those statistics are discarded.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from maskssl.data import augment as aug_lib
from maskssl import optim as optim_lib
from maskssl.losses import joint_embedding as je
from maskssl.methods.base import Method
from maskssl.models.heads import ProjectionMLP
from maskssl.models.resnet import ResNetClassifier, build_resnet, dtype_from_name
from maskssl.config_utils import from_config

META_GRAD_MODES = ("exact", "exact_unrolled", "exact_jvp",
                   "finite_difference", "first_order")
_ALIASES = {"fd": "finite_difference", "exact_autodiff": "exact_unrolled"}
HEADS = ("bt_head", "cl_head")



def _axpy(a, x, y):
  return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


momentum_trace = optim_lib.momentum_trace


@dataclasses.dataclass(frozen=True)
class MetaMaskModelConfig:
  """``config.model``: ResNet backbone + the two projection heads."""
  backbone: str = "resnet18"          # | resnet50 | resnet_tiny
  stem: str = "cifar"
  stem_relu: bool = False             # the reference's CIFAR stem has none
  init_scheme: str = "pytorch"
  width: Optional[int] = None         # resnet_tiny: 8
  stage_sizes: Optional[Sequence[int]] = None  # resnet_tiny: (1, 1)
  head_init_scheme: str = "pytorch"
  bt_features: Sequence[int] = (2048, 2048, 2048)
  cl_features: Sequence[int] = (2048, 256)
  compute_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class MetaMaskConfig:
  """``config.metamask`` (the reference's defaults)."""
  mask_param: str = "sigmoid"         # "identity" = --disable-sigmoid
  enable_meta: bool = True            # False: M == 1, no meta step
  meta_grad: str = "exact"            # see META_GRAD_MODES
  fd_r: float = 0.01                  # finite_difference: eps = fd_r / ||v||
  w_cl: float = 10.0
  bt_lambda: float = 5e-3
  bt_eps: float = 0.0
  temperature: float = 0.07
  task_loss: str = "nt_xent"
  mask_lr: float = 1e-3               # the mask's SGD (schedule: optim's)
  mask_momentum: float = 0.9
  mask_weight_decay: float = 5e-4
  steps_per_epoch: int = 0            # 0: total_steps (one epoch)
  epochs: int = 0                     # 0: ceil(total_steps / steps_per_epoch)
  meta_updates_bn_stats: bool = True
  encode_apply_mask: bool = True


class MetaMask(Method):
  """SimCLR + Barlow Twins with a meta-learned dimensional mask."""

  name = "metamask"

  def __init__(self, config):
    super().__init__(config)
    mcfg = from_config(MetaMaskModelConfig, config.get("model", None),
                       "config.model (metamask)")
    cfg = from_config(MetaMaskConfig, config.get("metamask", None),
                      "config.metamask")
    ocfg = config.get("optim", None) or {}
    self.dtype = dtype_from_name(mcfg.compute_dtype)
    kw = dict(stem=mcfg.stem, stem_relu=bool(mcfg.stem_relu),
              init_scheme=mcfg.init_scheme, dtype=self.dtype)
    if mcfg.backbone == "resnet_tiny":
      kw["width"] = int(mcfg.width or 8)
      kw["stage_sizes"] = tuple(mcfg.stage_sizes or (1, 1))
    elif mcfg.width:
      kw["width"] = int(mcfg.width)
    self.encoder = build_resnet(mcfg.backbone, **kw)
    self.feature_dim = self.encoder.num_features
    head_kw = dict(last_bn=True, dtype=self.dtype,
                   init_scheme=mcfg.head_init_scheme)
    self.bt_head = ProjectionMLP(tuple(mcfg.bt_features), **head_kw)
    self.cl_head = ProjectionMLP(tuple(mcfg.cl_features), **head_kw)
    self.modules = {"encoder": self.encoder, "bt_head": self.bt_head,
                    "cl_head": self.cl_head}
    self.aug = aug_lib.augment_config(config.get("augment", None))

    self.mask_param = cfg.mask_param
    if self.mask_param not in ("sigmoid", "identity"):
      raise ValueError(f"metamask.mask_param {self.mask_param!r}: use "
                       "'sigmoid' or 'identity'")
    self.enable_meta = bool(cfg.enable_meta)
    self.meta_grad = _ALIASES.get(cfg.meta_grad, cfg.meta_grad)
    if self.meta_grad not in META_GRAD_MODES:
      raise ValueError(f"metamask.meta_grad {cfg.meta_grad!r}; known: "
                       f"{META_GRAD_MODES + tuple(_ALIASES)}")
    self.w_cl, self.bt_lambda = float(cfg.w_cl), float(cfg.bt_lambda)
    self.bt_eps, self.temperature = float(cfg.bt_eps), float(cfg.temperature)
    self.task_loss = je.get_loss(cfg.task_loss)
    self.task_kwargs = ({"temperature": self.temperature}
                        if self.task_loss is je.nt_xent else {})
    self.fd_r = float(cfg.fd_r)
    self.meta_updates_bn_stats = bool(cfg.meta_updates_bn_stats)
    self.encode_apply_mask = bool(cfg.encode_apply_mask)

    total_steps = int(config.get("total_steps", 0) or 0)
    spe = int(cfg.steps_per_epoch or 0) or max(total_steps, 1)
    epochs = int(cfg.epochs or 0) or max(
        1, math.ceil(max(total_steps, 1) / spe))
    # the reference: PyTorch SGD, coupled decay on every leaf, per-epoch
    # cosine without warm-up (config.optim overrides any of these)
    ocfg = optim_lib.optim_config({**dict(
        name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4,
        decay_all=True, schedule="cosine_epoch", steps_per_epoch=spe,
        epochs=epochs), **dict(ocfg)})
    self.momentum, self.weight_decay = ocfg.momentum, ocfg.weight_decay
    self.tx, self.schedule = optim_lib.make(ocfg, total_steps)
    self.mask_tx, self.mask_schedule = optim_lib.make(optim_lib.optim_config(
        ocfg, lr=float(cfg.mask_lr), momentum=float(cfg.mask_momentum),
        weight_decay=float(cfg.mask_weight_decay)),
        total_steps)

  # ------------------------------------------------------------ state ----
  def init_state(self, rng, batch):
    size = self.aug.size
    x = jnp.zeros((2, size, size, 3), jnp.float32)
    k_enc, k_bt, k_cl = jax.random.split(rng, 3)
    params, stats = {}, {}
    v = self.encoder.init(k_enc, x, train=False)
    params["encoder"], stats["encoder"] = v["params"], v["batch_stats"]
    h = jnp.zeros((2, self.feature_dim), jnp.float32)
    for name, key in (("bt_head", k_bt), ("cl_head", k_cl)):
      v = self.modules[name].init(key, h, train=False)
      params[name], stats[name] = v["params"], v["batch_stats"]
    init = 0.0 if self.mask_param == "sigmoid" else 1.0
    mask = jnp.full((self.feature_dim,), init, jnp.float32)
    return dict(step=jnp.zeros((), jnp.int32), params=params,
                batch_stats=stats, opt_state=self.tx.init(params),
                mask=mask, mask_opt_state=self.mask_tx.init(mask))

  # ---------------------------------------------------------- forward ----
  def mask_values(self, m):
    """``M`` from the logits (``sigmoid`` or ``identity``); ones when the
    meta mask is disabled."""
    if not self.enable_meta:
      return jnp.ones_like(m)
    return jax.nn.sigmoid(m) if self.mask_param == "sigmoid" else m

  def _apply(self, name, p, bn, x, train: bool):
    mod = self.modules[name]
    if train:
      out, upd = mod.apply({"params": p, "batch_stats": bn}, x, train=True,
                           mutable=["batch_stats"])
      return out, upd["batch_stats"]
    return mod.apply({"params": p, "batch_stats": bn}, x, train=False), bn

  def backbone_views(self, p_enc, bn_enc, x0, x1):
    """Train-mode backbone on each view separately -> ((h0, h1), bn')."""
    h0, bn_enc = self._apply("encoder", p_enc, bn_enc, x0, True)
    h1, bn_enc = self._apply("encoder", p_enc, bn_enc, x1, True)
    return (h0, h1), bn_enc

  def heads_loss(self, p_heads, bn_heads, hs, mask_vec, kind: str):
    """Loss from pooled features of both views.

    ``kind="reg"``: ``L_BT + w_cl L_CL``; ``kind="cl"``: ``L_CL`` (the BT head
    still runs when ``meta_updates_bn_stats`` so its running statistics move
    as in the reference). Returns ``(loss, (bn_heads', metrics))``."""
    new_bn = dict(bn_heads)
    run_bt = kind == "reg" or self.meta_updates_bn_stats
    zs = {"bt_head": [], "cl_head": []}
    for h in hs:
      ht = h * mask_vec.astype(h.dtype)[None, :]
      for name in (HEADS if run_bt else ("cl_head",)):
        z, new_bn[name] = self._apply(name, p_heads[name], new_bn[name], ht,
                                      True)
        zs[name].append(z)
    cl, cl_m = self.task_loss(zs["cl_head"][0], zs["cl_head"][1],
                              **self.task_kwargs)
    metrics = dict(cl_loss=cl, cl_pos_sim=cl_m.get("pos_sim", cl),
                   cl_emb_std=cl_m["emb_std"],
                   cl_emb_rank=je.effective_rank(zs["cl_head"][0]))
    if kind == "reg":
      bt, bt_m = je.barlow_twins(zs["bt_head"][0], zs["bt_head"][1],
                                 self.bt_lambda, "unbiased", self.bt_eps)
      metrics.update(bt_loss=bt, bt_on_diag=bt_m["bt_on_diag"],
                     bt_off_diag=bt_m["bt_off_diag"],
                     bt_diag_mean=bt_m["bt_diag_mean"])
      return bt + self.w_cl * cl, (new_bn, metrics)
    return cl, (new_bn, metrics)

  def full_loss(self, params, bn, mask_vec, x0, x1, kind: str):
    """``L_reg`` or ``L_CL`` of the whole network -> ``(loss, (bn', metrics))``."""
    hs, bn_enc = self.backbone_views(params["encoder"], bn["encoder"], x0, x1)
    loss, (bn_h, metrics) = self.heads_loss(
        {k: params[k] for k in HEADS}, {k: bn[k] for k in HEADS}, hs,
        mask_vec, kind)
    return loss, (dict(bn_h, encoder=bn_enc), metrics)

  def cl_loss_m(self, params, bn, m, x0, x1):
    """``L_CL(theta, M(m))`` -> ``(loss, bn')``."""
    loss, (bn_new, _) = self.full_loss(params, bn, self.mask_values(m), x0,
                                       x1, "cl")
    return loss, bn_new

  # ------------------------------------------------------- meta step -----
  def virtual_params(self, params1, trace1, grads, lr):
    """``theta_1 - lr (mu trace + g + wd theta_1)``."""
    mu, wd = self.momentum, self.weight_decay
    return jax.tree.map(lambda p, b, g: p - lr * (mu * b + g + wd * p),
                        params1, trace1, grads)

  def meta_objective(self, m, params1, trace1, bn1, x0, x1, lr):
    """``F(m) = L_CL(theta'(m), M(m))`` -> ``(F, bn after the step-2
    forward at theta_1)``; differentiable in ``m``."""
    g, bn_a = jax.grad(self.cl_loss_m, has_aux=True)(params1, bn1, m, x0, x1)
    theta_v = self.virtual_params(params1, trace1, g, lr)
    loss, _ = self.cl_loss_m(theta_v, bn1, m, x0, x1)
    return loss, bn_a

  def hypergradient(self, params1, trace1, bn1, m, x0, x1, lr, mode=None,
                    fd_r=None):
    """``(h_m, aux)`` for the meta step; ``aux`` holds ``meta_loss`` (F),
    ``d1``, ``second_order`` (the term multiplied by ``-lr``),
    ``cl_loss_inner``, ``theta_virtual`` (theta'), ``v`` (``grad_theta
    L_CL`` at theta', the FD direction) and ``batch_stats`` (running
    statistics to keep); entries a mode does not compute are ``None``.
    ``finite_difference`` adds ``fd_eps`` (``R = fd_r / ||v||``) and
    ``fd_grad_plus`` / ``fd_grad_minus`` (``dL_CL/dm`` at ``theta_1 +- R v``).
    ``mode`` defaults to ``metamask.meta_grad``; ``fd_r`` (may be traced) to
    ``metamask.fd_r``."""
    mode = _ALIASES.get(mode, mode) or self.meta_grad
    fd_r = self.fd_r if fd_r is None else fd_r
    params1 = jax.lax.stop_gradient(params1)
    trace1 = jax.lax.stop_gradient(trace1)
    zero_m = jnp.zeros_like(m)
    fd = {}
    if mode == "exact_unrolled":
      (f_val, bn_a), h_m = jax.value_and_grad(
          self.meta_objective, has_aux=True)(m, params1, trace1, bn1, x0, x1,
                                             lr)
      return h_m, dict(meta_loss=f_val, batch_stats=bn_a, d1=None,
                       second_order=None, cl_loss_inner=None,
                       theta_virtual=None, v=None)

    if mode == "exact":
      return self._hypergradient_linearized(params1, trace1, bn1, m, x0, x1,
                                            lr)

    # Inner gradient at theta_1 (keeps the step-2 running statistics).
    (l_in, bn_a), g = jax.value_and_grad(self.cl_loss_m, has_aux=True)(
        params1, bn1, m, x0, x1)
    theta_v = self.virtual_params(params1, trace1, g, lr)
    dm_fn = lambda th: jax.grad(  # noqa: E731
        lambda mm: self.cl_loss_m(th, bn1, mm, x0, x1)[0])(m)
    if mode == "first_order":
      f_val, d1 = jax.value_and_grad(
          lambda mm: self.cl_loss_m(theta_v, bn1, mm, x0, x1)[0])(m)
      second, v = zero_m, None
    else:
      (f_val, _), (v, d1) = jax.value_and_grad(
          self.cl_loss_m, argnums=(0, 2), has_aux=True)(theta_v, bn1, m, x0,
                                                         x1)
      if mode == "exact_jvp":
        _, second = jax.jvp(dm_fn, (params1,), (v,))
      elif mode == "finite_difference":
        eps = fd_r / optax.tree.norm(v)
        plus = dm_fn(_axpy(eps, v, params1))
        minus = dm_fn(_axpy(-eps, v, params1))
        second = (plus - minus) / (2.0 * eps)
        fd = dict(fd_eps=eps, fd_grad_plus=plus, fd_grad_minus=minus)
      else:
        raise ValueError(f"unknown meta_grad mode {mode!r}")
    h_m = d1 - lr * second
    return h_m, dict(meta_loss=f_val, batch_stats=bn_a, d1=d1,
                     second_order=second, cl_loss_inner=l_in,
                     theta_virtual=theta_v, v=v, **fd)

  def _hypergradient_linearized(self, params1, trace1, bn1, m, x0, x1, lr):
    p_heads = {k: params1[k] for k in HEADS}
    bn_heads = {k: bn1[k] for k in HEADS}

    def backbone(p_enc):
      return self.backbone_views(p_enc, bn1["encoder"], x0, x1)

    hs, f_jvp, bn_enc_a = jax.linearize(backbone, params1["encoder"],
                                        has_aux=True)
    f_vjp = jax.linear_transpose(f_jvp, params1["encoder"])

    def ell(ph, hs_, mm):
      loss, (bn_h, _) = self.heads_loss(ph, bn_heads, hs_,
                                        self.mask_values(mm), "cl")
      return loss, bn_h

    # Inner gradient g' = grad_theta L_CL(theta_1, M(m)).
    (l_in, bn_h_a), (g_heads, d_hs) = jax.value_and_grad(
        ell, argnums=(0, 1), has_aux=True)(p_heads, hs, m)
    (g_enc,) = f_vjp(d_hs)
    grads = dict(g_heads, encoder=g_enc)
    theta_v = self.virtual_params(params1, trace1, grads, lr)
    # One reverse pass at theta': v (all params) and d1 (mask).
    (f_val, _), (v, d1) = jax.value_and_grad(
        self.cl_loss_m, argnums=(0, 2), has_aux=True)(theta_v, bn1, m, x0, x1)
    # <grad_theta L_CL(theta_1, m), v> as a JVP of the heads with tangents
    # (v_heads, J_backbone v_encoder); its m-gradient is the mixed term.
    t_hs = f_jvp(v["encoder"])
    v_heads = {k: v[k] for k in HEADS}

    def directional(mm):
      return jax.jvp(lambda ph, hs_: ell(ph, hs_, mm)[0], (p_heads, hs),
                     (v_heads, t_hs))[1]

    second = jax.grad(directional)(m)
    h_m = d1 - lr * second
    bn_a = dict(bn_h_a, encoder=bn_enc_a)
    return h_m, dict(meta_loss=f_val, batch_stats=bn_a, d1=d1,
                     second_order=second, cl_loss_inner=l_in,
                     theta_virtual=theta_v, v=v)

  # ------------------------------------------------------- train step ----
  def views(self, rng, images):
    return aug_lib.two_views(rng, images, self.aug)

  def train_step(self, state, batch, rng):
    x0, x1 = self.views(rng, batch["image"])
    new_state, metrics, _ = self.iterate(state, x0.astype(self.dtype),
                                         x1.astype(self.dtype))
    return new_state, {k: jnp.asarray(v, jnp.float32)
                       for k, v in metrics.items()}

  def iterate(self, state, x0, x1):
    """One iteration on given views -> ``(new_state, metrics, aux)``.

    ``metrics`` are in the compute dtype; ``aux`` holds the intermediates
    (for parity checks; unused outputs cost nothing under ``jit``):
    ``batch_stats_regular`` (after the regular step's forwards),
    ``hypergradient`` (``h_m``) and :meth:`hypergradient`'s aux
    (``theta_virtual``, ``d1``, ``second_order``, ``meta_loss``,
    ``cl_loss_inner``)."""
    step = state["step"]
    lr = self.schedule(step)
    m = state["mask"]
    mask_vec = jax.lax.stop_gradient(self.mask_values(m))

    # 1. regular step on L_BT + w_cl L_CL (mask constant).
    (loss, (bn1, metrics)), grads = jax.value_and_grad(
        self.full_loss, has_aux=True)(state["params"], state["batch_stats"],
                                      mask_vec, x0, x1, "reg")
    updates, opt_state = self.tx.update(grads, state["opt_state"],
                                        state["params"])
    params1 = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   lr=lr)
    new_state = dict(state, step=step + 1, params=params1, batch_stats=bn1,
                     opt_state=opt_state)
    aux = dict(batch_stats_regular=bn1)

    if self.enable_meta:
      # 2-3. virtual step + hypergradient (same views, from theta_{t+1}).
      trace1 = momentum_trace(opt_state, params1)
      h_m, hyper = self.hypergradient(params1, trace1, bn1, m, x0, x1, lr)
      aux.update(hyper, hypergradient=h_m)
      if self.meta_updates_bn_stats:
        new_state["batch_stats"] = hyper["batch_stats"]
      # 4. mask step.
      m_upd, mask_opt = self.mask_tx.update(h_m, state["mask_opt_state"], m)
      new_state["mask"] = optax.apply_updates(m, m_upd)
      new_state["mask_opt_state"] = mask_opt
      metrics.update(meta_loss=hyper["meta_loss"],
                     hypergrad_norm=jnp.linalg.norm(h_m),
                     mask_lr=self.mask_schedule(step))
      if hyper["second_order"] is not None:
        metrics["second_order_norm"] = lr * jnp.linalg.norm(
            hyper["second_order"])
        metrics["first_order_norm"] = jnp.linalg.norm(hyper["d1"])
    mv = self.mask_values(new_state["mask"])
    metrics.update(mask_mean=jnp.mean(mv), mask_min=jnp.min(mv),
                   mask_max=jnp.max(mv), mask_std=jnp.std(mv))
    return new_state, metrics, aux

  # ---------------------------------------------------------- evaluation --
  def encode(self, state, batch):
    x = aug_lib.eval_preprocess(batch["image"], self.aug).astype(self.dtype)
    h, _ = self._apply("encoder", state["params"]["encoder"],
                       state["batch_stats"]["encoder"], x, False)
    if self.encode_apply_mask:
      h = h * self.mask_values(state["mask"])[None, :]
    return h.astype(jnp.float32)

  def eval_step(self, state, batch):
    """Held-out losses (train-mode BN on the batch, no update)."""
    x0, x1 = self.views(jax.random.PRNGKey(0), batch["image"])
    loss, (_, metrics) = self.full_loss(
        state["params"], state["batch_stats"],
        self.mask_values(state["mask"]), x0, x1, "reg")
    return dict(metrics, loss=loss)

  def classifier(self, num_outputs: int):
    """ResNet + Dense head (``params["encoder"]`` from pretraining). The
    learned mask is not part of the fine-tuned model (a fixed per-dimension
    scale followed by a Dense layer is absorbed by the head)."""
    return ResNetClassifier(self.encoder, num_outputs, mean=self.aug.mean,
                            std=self.aug.std)

  def predict_fns(self):
    fns = super().predict_fns()
    # the learned mask for the mask_report evaluator: (values, logits)
    fns["mask_values"] = lambda state: (self.mask_values(state["mask"]),
                                        state["mask"])
    return fns
