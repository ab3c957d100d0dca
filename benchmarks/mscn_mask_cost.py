r"""Cost of augmentation + MSCN masking as a share of the siamese train step.

    python benchmarks/mscn_mask_cost.py [--config=configs/mscn_cifar10.py] \
        [--variant=] [--batch=64] [--width=64] [--views=2] [--iters=3]

Times, each jitted and warmed up once, median over ``--iters`` calls:
  * ``step``:    the full ``Siamese.train_step`` (crops, HPF, J masked
                 copies, J+1 forwards/backwards, LARS update);
  * ``inputs``:  ``Siamese.make_inputs`` alone (crops + flip + HPF + masks +
                 noise fill: everything that is not the network);
  * ``masking``: ``mscn.mscn_views`` alone on pre-cropped views (HPF + masks
                 + noise);
  * ``step_unmasked``: the same step with ``mscn.enabled=False``.
Prints one JSON object; ``inputs_share = inputs / step`` is the number the
target (<= 10 %) refers to. Never asserts speed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from maskssl.masks import mscn  # noqa: E402
from maskssl.methods import get_method  # noqa: E402


def load_config(path, variant):
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant or None)


def timeit(fn, *args, iters=3):
  out = fn(*args)
  jax.block_until_ready(out)                     # compile + warm-up
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--config", default=os.path.join(REPO, "configs",
                                                  "mscn_cifar10.py"))
  p.add_argument("--variant", default="")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--views", type=int, default=2)
  p.add_argument("--iters", type=int, default=3)
  a = p.parse_args()
  cfg = load_config(a.config, a.variant)
  cfg.batch_size = a.batch
  cfg.model.width = a.width
  cfg.mscn.n_masked_views = a.views
  size = int(cfg.augment.size)
  images = np.random.default_rng(0).integers(0, 256, (a.batch, size, size, 3),
                                             dtype=np.uint8)
  batch = {"image": images}
  rng = jax.random.PRNGKey(1)

  method = get_method(cfg)
  state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batch)
  step = jax.jit(method.train_step)
  t_step = timeit(step, state, batch, rng, iters=a.iters)
  t_inputs = timeit(jax.jit(method.make_inputs), rng, images, iters=a.iters)
  k_a, k_b = jax.random.split(rng)
  va = jax.jit(method.view)(k_a, images)
  vb = jax.jit(method.view)(k_b, images)
  views = jax.jit(lambda r, x, y: mscn.mscn_views(r, x, y, cfg.mscn))
  t_mask = timeit(views, rng, va, vb, iters=a.iters)

  cfg_off = cfg.copy_and_resolve_references()
  cfg_off.mscn.enabled = False
  off = get_method(cfg_off)
  state_off = jax.jit(off.init_state)(jax.random.PRNGKey(0), batch)
  t_off = timeit(jax.jit(off.train_step), state_off, batch, rng,
                 iters=a.iters)

  print(json.dumps(dict(
      benchmark="mscn_mask_cost", backend=jax.default_backend(),
      devices=jax.device_count(), cpu=platform.processor() or platform.machine(),
      batch=a.batch, image_size=size, backbone=cfg.model.backbone,
      width=a.width, loss=cfg.loss.name, n_masked_views=a.views,
      step_s=round(t_step, 4), inputs_s=round(t_inputs, 4),
      masking_s=round(t_mask, 4), step_unmasked_s=round(t_off, 4),
      inputs_share=round(t_inputs / t_step, 4),
      masking_share=round(t_mask / t_step, 4),
      target_inputs_share=0.10,
      mscn=mscn.resolved_summary(cfg.mscn, size)), default=str))


if __name__ == "__main__":
  main()
