r"""SMA's masks, the paper's central picture, from a trained run::

    # images (configs/sma_image.py, data cifar10_pixels): rows = test images,
    # columns = the image + the mask at each kept checkpoint step
    python -m maskssl.tools.sma_masks --workdir=runs/sma_image \
        --out=runs/sma_image_masks.png [--steps=0,100,1000,3000] \
        [--num_images=6] [--split=test] [--seed=0]
    # HIGGS (configs/sma_particle.py): how often each pair of the 28
    # features is masked together, over --num_examples test rows
    python -m maskssl.tools.sma_masks --workdir=runs/sma_particle \
        --out=runs/sma_higgs_comasking.png [--steps=latest] [--num_examples=1500]

The masks come from the model's own mask path, the call the train step
makes (:func:`training_masks`: ``method.model.apply(..., train=True,
masking=True, s)`` with the rng split of ``SMA.loss_fn``; the mask is chosen
inside encoder layer 1 from its attention logits), so the picture shows what
training saw. Step 0 is the initial state exactly as the train loop builds
it (``train.init_state``: same seed and example batch). One fixed ``--seed``
is used at every step, so the random parts of the mask (the selected
queries / latents, the head per query) are the same in every column and the
columns differ only by what the attention learned. ``--s`` is the
curriculum scale: ``train`` (default: the value training used at that step,
``SMA.curriculum``) or a number (``0`` = attention only).

Seen this way (2-core CPU, 2026-12-01): ``configs/sma_image.py:quick`` at
32x32 (``--config.data.image_size=32 --config.model.n_max=1024
--config.mask.num_per_query=16 --config.data.max_train=0
--config.total_steps=3000 --config.checkpoint_every=100
--config.keep_checkpoints=40``): the init masks are scattered pixels; at
steps 100-300 the mask takes whole regions of similar colour (the bird's
body, the airplane's silhouette, dark backgrounds); by step 3000 it is
spread over the object again in smaller clumps. ``configs/
sma_particle.py:quick`` with 600 steps: the four b-tag features are masked
in 47-71 % of the test rows (mean rate 21 %) and mostly together (up to
15x the random-masking rate: jet_1_btag and jet_2_btag are both
masked in 59 % of the rows, 4 % under random masking).

``--steps``: ``auto`` (default; images: 0 + up to 5 kept steps spread
geometrically; features: the newest), ``all`` (0 + every kept step),
``latest`` or a comma list (``0`` = init).

Co-masking matrix (:func:`comasking`): ``C[i, j]`` = fraction of examples
in which features ``i`` and ``j`` are both masked, so ``C`` is symmetric,
its diagonal is each feature's mask rate and ``sum_j C[i, j] = E[K 1{i
masked}]`` (``K`` masked tokens per row, ``round(ratio * 28)`` plus the
curriculum fill). The right panel divides ``C`` by what uniform random
masking of the same counts gives (``K(K-1) / (n(n-1))`` off the diagonal,
``K / n`` on it), in log2: red pairs are masked together more often than
chance. Needs matplotlib.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from maskssl import plots
from maskssl.data.base import DataError


# ------------------------------------------------------------- the masks --
def training_masks(method, params, batch, rng, s):
  """(B, N) bool: the mask ``SMA.train_step`` would choose for ``batch``.

  The same call as ``SMA.loss_fn`` (``train=True, masking=True``, rng split
  into mask / dropout keys), keeping only the mask."""
  x, valid = method.inputs(batch)
  k_mask, k_drop = jax.random.split(rng)
  out = method.model.apply({"params": params}, x, valid, train=True,
                           masking=True, s=s,
                           rngs={"mask": k_mask, "dropout": k_drop})
  return out["mask"]


def masks_for(method, state, arrays: dict, rng, s, batch_size: int = 256
              ) -> np.ndarray:
  """:func:`training_masks` over every row of ``arrays`` (in batches of
  ``batch_size``, the last padded; every batch uses ``fold_in(rng, b)``)."""
  keys = [k for k in ("x", "tokens", "valid") if k in arrays]
  n = len(arrays[keys[0]])
  fn = jax.jit(lambda p, b, r, s: training_masks(method, p, b, r, s))
  out = []
  for b, lo in enumerate(range(0, n, batch_size)):
    idx = np.minimum(np.arange(lo, lo + batch_size), n - 1)
    batch = {k: jnp.asarray(arrays[k][idx]) for k in keys}
    m = fn(state["params"], batch, jax.random.fold_in(rng, b),
           jnp.asarray(s, jnp.float32))
    out.append(np.asarray(m)[:min(batch_size, n - lo)])
  return np.concatenate(out).astype(bool)


def comasking(masks: np.ndarray, valid: np.ndarray | None = None):
  """(C, E): ``C[i, j]`` = fraction of rows with ``i`` and ``j`` both
  masked; ``E`` = the same under uniform random masking of each row's
  count ``K`` among its ``n`` valid tokens."""
  m = np.asarray(masks, np.float64)
  rows = len(m)
  c = m.T @ m / rows
  v = (np.ones_like(m) if valid is None else np.asarray(valid, np.float64))
  k = m.sum(1)
  n = v.sum(1)
  pair = np.where(n > 1, k * (k - 1) / np.maximum(n * (n - 1), 1), 0.0)
  single = np.where(n > 0, k / np.maximum(n, 1), 0.0)
  e = np.einsum("r,ri,rj->ij", pair, v, v) / rows
  np.fill_diagonal(e, (single[:, None] * v).sum(0) / rows)
  return c, e


# -------------------------------------------------------------- the runs --
def kept_steps(workdir: str) -> list[int]:
  from maskssl import checkpoint as ckpt_lib
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    raise DataError(f"{workdir}: no checkpoints/ directory")
  c = ckpt_lib.Checkpointer(d, 1000, False)
  try:
    return c.all_steps()
  finally:
    c.close()


def choose_steps(spec: str, kept: list[int], kind: str) -> list[int]:
  if spec == "latest":
    return [kept[-1]]
  if spec == "all":
    return [0] + kept
  if spec == "auto":
    if kind == "features":
      return [kept[-1]]
    if len(kept) <= 5:
      return [0] + kept
    # 0, then kept steps closest to a geometric ladder first .. last
    ladder = np.geomspace(kept[0], kept[-1], 5)
    pick = sorted({min(kept, key=lambda s: abs(np.log(s) - np.log(t)))
                   for t in ladder})
    return [0] + pick
  out = [int(s) for s in spec.split(",") if s.strip()]
  missing = [s for s in out if s and s not in kept]
  if missing:
    raise DataError(f"steps {missing} are not kept checkpoints (kept: "
                    f"{kept}); 0 = the initial state")
  return out


def states(workdir: str, steps: list[int]):
  """[(step, Encoder-like (method, state, config))] with step 0 = init."""
  import maskssl
  out = []
  last = None
  for s in steps:
    if s == 0:
      continue
    last = maskssl.load(workdir, step=s)
    out.append((s, last.method, last.state))
  if 0 in steps:
    enc = last if last is not None else maskssl.load(workdir)
    out.insert(0, (0, enc.method, initial_state(enc)))
    last = enc
  order = {s: i for i, s in enumerate(steps)}
  out.sort(key=lambda t: order[t[0]])
  return out, last


def initial_state(enc):
  """The step-0 state as ``train.init_state`` builds it (same rng, same
  example batch), on the host."""
  from maskssl import train as train_lib
  from maskssl.data import data_schema, load_split
  cfg = enc.config
  ds = load_split(cfg.data, data_schema(cfg.data).pretrain_split)
  lc = train_lib.loop_config(cfg, len(ds), verbose=False)
  batch = train_lib.example_batch(ds, lc)
  rng = jax.random.fold_in(jax.random.PRNGKey(lc.seed), 0)
  return jax.jit(enc.method.init_state)(rng, batch)


def _s_value(spec: str, method, step: int):
  if spec == "train":
    return float(method.curriculum(jnp.asarray(step, jnp.int32)))
  return float(spec)


# ---------------------------------------------------------------- images --
def image_panel(workdir, out, steps_spec="auto", num_images=6, split="test",
                seed=0, s_spec="train", scale=None) -> dict:
  from maskssl.data import augment, data_schema
  kept = kept_steps(workdir)
  steps = choose_steps(steps_spec, kept, "images")
  runs, enc = states(workdir, steps)
  cfg = enc.config
  if cfg.data.get("name") != "cifar10_pixels":
    raise DataError(f"image masks need a cifar10_pixels run (configs/"
                    f"sma_image.py); {workdir} has data "
                    f"{cfg.data.get('name')!r}")
  ds = enc.load_data(split)
  size = int(data_schema(cfg.data).image_size)
  pick = _spread_classes(ds.arrays["label"], num_images)
  arrays = {k: ds.arrays[k][pick] for k in ("x", "valid")}
  names = ds.meta.get("label_names") or []
  # What the model saw, back in [0, 1]: un-normalised tokens.
  mean, std = np.asarray(augment.IMAGENET_MEAN), np.asarray(
      augment.IMAGENET_STD)
  pics = np.clip(arrays["x"].reshape(-1, size, size, 3) * std + mean, 0, 1)
  cols, titles, rates = [pics], [f"{split} image ({size}x{size})"], []
  rng = jax.random.PRNGKey(seed)
  for step, method, state in runs:
    s = _s_value(s_spec, method, step)
    m = masks_for(method, state, arrays, rng, s, batch_size=len(pick))
    m = m.reshape(-1, size, size)
    rates.append(float(m.mean()))
    cols.append(_overlay(pics, m))
    titles.append(f"step {step}" + (" (init)" if step == 0 else "")
                  + (f", s={s:.2f}" if s else ""))
  row_labels = [names[y] if 0 <= y < len(names) else str(y)
                for y in ds.arrays["label"][pick].tolist()]
  mk = cfg.mask
  title = (f"SMA attention-guided masks on {split} images: {workdir} "
           f"(masked pixels magenta, {100 * float(mk.ratio):.0f}% per image; "
           f"k={int(mk.num_per_query)} latent queries, "
           f"{mk.head_aggregation} heads; seed {seed}, same draws per column)")
  _grid_png(out, cols, titles, row_labels, title, scale)
  return dict(out=out, steps=[r[0] for r in runs], mask_rate=rates,
              images=len(pick))


def _spread_classes(labels: np.ndarray, n: int) -> np.ndarray:
  """``n`` test images, one per class first (the lowest index of each)."""
  first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
  rest = [i for i in range(len(labels)) if i not in set(first)]
  return np.asarray((first + rest)[:n])


def _overlay(pics: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Kept pixels as they are; masked pixels magenta (rare in natural
  images, so it is not confused with dark or white regions)."""
  paint = np.asarray([1.0, 0.0, 1.0])
  m = mask[..., None]
  return np.where(m, 0.85 * paint + 0.15 * pics, pics)


def _grid_png(out, cols, titles, row_labels, title, scale=None):
  plots.image_grid(out, cols, titles, row_labels, title,
                   cell_inches=1.55 if scale is None else float(scale))


def _wrap(text: str, width: int) -> str:
  import textwrap
  return "\n".join(textwrap.wrap(text, width))


# -------------------------------------------------------------- features --
def feature_panel(workdir, out, steps_spec="auto", num_examples=1500,
                  split="test", seed=0, s_spec="train") -> dict:
  kept = kept_steps(workdir)
  steps = choose_steps(steps_spec, kept, "features")
  runs, enc = states(workdir, steps)
  cfg = enc.config
  ds = enc.load_data(split)
  n = min(int(num_examples), len(ds)) if num_examples else len(ds)
  arrays = {k: ds.arrays[k][:n] for k in ("x", "tokens", "valid")
            if k in ds.arrays}
  names = list(ds.meta.get("columns") or
               [str(i) for i in range(arrays["valid"].shape[1])])
  rng = jax.random.PRNGKey(seed)
  mats = []
  for step, method, state in runs:
    s = _s_value(s_spec, method, step)
    m = masks_for(method, state, arrays, rng, s)
    c, e = comasking(m, arrays["valid"])
    mats.append((step, s, c, e))
  mk = cfg.mask
  title = (f"SMA feature co-masking, {cfg.data.get('name')} {split} split "
           f"({n} examples): {workdir}; ratio {float(mk.ratio):g}, "
           f"k={int(mk.num_per_query)}, {mk.head_aggregation}, seed {seed}")
  _heatmaps(out, mats, names, title)
  step, s, c, e = mats[-1]
  return dict(out=out, steps=[r[0] for r in runs], examples=n,
              mask_rate=np.diag(c).tolist(), comasking=c, expected=e)


def _heatmaps(out, mats, names, title):
  """One joint-frequency panel per step (diagonal left blank: the mask
  rates are in the row labels instead, so they do not swamp the colour
  scale) and the log2 ratio to random masking of the last step."""
  plt = plots.pyplot()
  k = len(mats) + 1
  fig, axes = plt.subplots(1, k, figsize=(8.6 * k, 8.4), squeeze=False)
  axes = axes[0]
  off = ~np.eye(len(names), dtype=bool)
  vmax = max(float(c[off].max()) for _, _, c, _ in mats)
  ticks = np.arange(len(names))

  def axis(ax, sub, rates):
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{n}  {r:.2f}" for n, r in zip(names, rates)],
                       fontsize=8)
    ax.set_title(sub, fontsize=10)
    ax.set_xlabel("feature j")
    ax.set_ylabel("feature i  (its mask rate)")

  for ax, (step, s, c, e) in zip(axes, mats):
    cmap = plt.get_cmap("magma").copy()
    cmap.set_bad("white")
    im = ax.imshow(np.where(off, c, np.nan), cmap=cmap, vmin=0, vmax=vmax)
    rand = float(e[off].mean())
    axis(ax, f"step {step}{' (init)' if step == 0 else ''}"
         f"{f', curriculum s={s:.2f}' if s else ''}: P(i and j both "
         f"masked)\nmean mask rate {np.diag(c).mean():.3f}; uniform random "
         f"masking gives {rand:.3f} for every pair", np.diag(c))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03,
                 label="fraction of examples with i and j masked")
  step, s, c, e = mats[-1]
  lift = np.log2(np.maximum(c, 1e-6) / np.maximum(e, 1e-12))
  lim = max(1.0, float(np.abs(lift).max()))
  im = axes[-1].imshow(lift, cmap="RdBu_r", vmin=-lim, vmax=lim)
  axis(axes[-1], f"step {step}: log2 of P(i and j) / (the same under "
       f"uniform random masking)\nred = masked together more often than "
       f"chance (diagonal: mask rate vs {float(np.diag(e).mean()):.3f})",
       np.diag(c))
  fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.03,
               label="log2 ratio to random masking")
  fig.suptitle(_wrap(title, 150), fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)


# --------------------------------------------------------------------- CLI --
def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m maskssl.tools.sma_masks",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="an SMA run directory")
  p.add_argument("--out", required=True, help="output PNG")
  p.add_argument("--kind", default="auto", choices=("auto", "images",
                                                    "features"))
  p.add_argument("--steps", default="auto",
                 help="auto | all | latest | comma list (0 = init)")
  p.add_argument("--num_images", type=int, default=6)
  p.add_argument("--num_examples", type=int, default=1500)
  p.add_argument("--split", default="test")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--s", default="train",
                 help="curriculum scale: 'train' (as training) or a number")
  a = p.parse_args(sys.argv[1:] if argv is None else argv)
  from maskssl import api, run as run_lib
  from maskssl.tools.plot_embeddings import PlotError
  try:
    cfg = api.run_config(a.workdir)
    if cfg.get("method") != "sma":
      raise DataError(f"{a.workdir} is a {cfg.get('method')!r} run; "
                      "sma_masks shows SMA masks")
    kind = a.kind
    if kind == "auto":
      kind = ("images" if cfg.data.get("name") == "cifar10_pixels"
              else "features")
    if kind == "images":
      info = image_panel(a.workdir, a.out, a.steps, a.num_images, a.split,
                         a.seed, a.s)
    else:
      info = feature_panel(a.workdir, a.out, a.steps, a.num_examples,
                           a.split, a.seed, a.s)
  except (PlotError,) + run_lib.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  rates = info["mask_rate"]
  print(f"wrote {info['out']}: steps {info['steps']}; mask rate "
        f"{np.round(np.atleast_1d(rates), 3).tolist()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
