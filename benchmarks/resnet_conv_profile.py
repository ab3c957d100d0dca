"""Where the ResNet-18 (CIFAR stem) step's time goes on XLA:CPU; prints JSON.

    python benchmarks/resnet_conv_profile.py [--batch 128] [--reps 5]
        [--out benchmarks/results/resnet_conv_profile.json]

For every distinct 3x3 / 1x1 convolution of ResNet-18 at 32x32 input (batch
= 2 views x 64 images, as the MetaMask / MSCN step runs it) it times, min of
``--reps`` after a warm-up, each in its own jitted function:
  * ``fwd``: the convolution;
  * ``grad_x``: its input gradient (XLA: a convolution with the flipped
    kernel, lowered to YNNPACK like the forward);
  * ``grad_w``: its kernel gradient as jax.vjp lowers it (a convolution whose
    window is the whole feature map and whose output is the 3x3 kernel);
  * ``grad_w_gemm``: the same kernel gradient as k*k shifted GEMMs
    (sum over batch and positions of x_shift^T dy), the formulation oneDNN's
    backward-weights kernel uses.
and reports GFLOP/s of each (2 * B * H_out * W_out * k * k * C_in * C_out
per convolution), the per-step totals weighted by how often each shape
occurs in ResNet-18, and the share of the step's convolution time that is
the kernel gradient. Run it on an otherwise idle machine (the load average
is recorded with the numbers).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import harness  # noqa: E402  (benchmarks/; sets sys.path for maskssl)

DN = ("NHWC", "HWIO", "NHWC")
# (H_in, C_in, C_out, k, stride, count in ResNet-18 with the CIFAR stem)
SHAPES = (
    (32, 3, 64, 3, 1, 1),     # stem
    (32, 64, 64, 3, 1, 4),    # stage 1
    (32, 64, 128, 3, 2, 1),   # stage 2 first conv
    (16, 64, 128, 1, 2, 0),   # placeholder, replaced below (downsample)
    (16, 128, 128, 3, 1, 3),
    (16, 128, 256, 3, 2, 1),
    (8, 256, 256, 3, 1, 3),
    (8, 256, 512, 3, 2, 1),
    (4, 512, 512, 3, 1, 3),
)
DOWNSAMPLE = ((32, 64, 128), (16, 128, 256), (8, 256, 512))  # 1x1 stride 2


def conv(x, w, stride):
  p = (w.shape[0] - 1) // 2  # torch-style symmetric padding, as models/resnet
  pad = ((p, p), (p, p))
  return jax.lax.conv_general_dilated(x, w, (stride, stride), pad,
                                      dimension_numbers=DN)


def grad_w_gemm(x, dy, k, stride):
  """dL/dw[i, j] = sum_{b, p} x[b, s*p + (i, j) - pad] dy[b, p] (k*k GEMMs)."""
  b, h, _, c = x.shape
  ho, n_out = dy.shape[1], dy.shape[-1]
  pad = (k - 1) // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  d = dy.reshape(-1, n_out)
  rows = []
  for i in range(k):
    for j in range(k):
      xs = jax.lax.slice(xp, (0, i, j, 0),
                         (b, i + stride * (ho - 1) + 1,
                          j + stride * (ho - 1) + 1, c),
                         (1, stride, stride, 1))
      rows.append(xs.reshape(-1, c).T @ d)
  return jnp.stack(rows).reshape(k, k, c, n_out)


def _time(fn, args, reps):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return min(ts)


def profile(batch, reps):
  shapes = [s for s in SHAPES if s[-1] > 0] + [
      (h, ci, co, 1, 2, 1) for h, ci, co in DOWNSAMPLE]
  rows, totals = [], dict(fwd=0.0, grad_x=0.0, grad_w=0.0, grad_w_gemm=0.0)
  key = jax.random.PRNGKey(0)
  for h, ci, co, k, s, count in shapes:
    kx, kw, kd = jax.random.split(jax.random.fold_in(key, len(rows)), 3)
    x = jax.random.normal(kx, (batch, h, h, ci))
    w = jax.random.normal(kw, (k, k, ci, co)) * (2.0 / (k * k * ci)) ** 0.5
    ho = h // s
    dy = jax.random.normal(kd, (batch, ho, ho, co))
    f = jax.jit(lambda x, w, s=s: conv(x, w, s))
    gx = jax.jit(lambda x, w, dy, s=s: jax.vjp(
        lambda a: conv(a, w, s), x)[1](dy)[0])
    gw = jax.jit(lambda x, w, dy, s=s: jax.vjp(
        lambda b_: conv(x, b_, s), w)[1](dy)[0])
    gw2 = jax.jit(lambda x, dy, k=k, s=s: grad_w_gemm(x, dy, k, s))
    np.testing.assert_allclose(np.asarray(gw2(x, dy)),
                               np.asarray(gw(x, w, dy)), rtol=1e-3,
                               atol=1e-2 * float(jnp.abs(gw(x, w, dy)).max()))
    flop = 2.0 * batch * ho * ho * k * k * ci * co
    t = dict(fwd=_time(f, (x, w), reps), grad_x=_time(gx, (x, w, dy), reps),
             grad_w=_time(gw, (x, w, dy), reps),
             grad_w_gemm=_time(gw2, (x, dy), reps))
    for name, v in t.items():
      totals[name] += count * v
    rows.append(dict(h=h, c_in=ci, c_out=co, k=k, stride=s, count=count,
                     gflop=flop / 1e9,
                     **{f"{n}_ms": 1e3 * v for n, v in t.items()},
                     **{f"{n}_gflops": flop / v / 1e9 for n, v in t.items()}))
  step = totals["fwd"] + totals["grad_x"] + totals["grad_w"]
  return dict(
      layers=rows, totals_s=totals, conv_step_s=step,
      grad_w_share=totals["grad_w"] / step,
      conv_step_s_with_gemm_grad_w=totals["fwd"] + totals["grad_x"]
      + min(totals["grad_w"], totals["grad_w_gemm"]))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--out", default="")
  args = p.parse_args()
  load0 = os.getloadavg()
  res = profile(args.batch, args.reps)
  res.update(batch=args.batch, jax=jax.__version__,
             devices=len(jax.devices()), cpus=len(os.sched_getaffinity(0)),
             load_start=load0, load_end=os.getloadavg(),
             xla_flags=os.environ.get("XLA_FLAGS", ""))
  harness.emit_json(res, args.out)


if __name__ == "__main__":
  main()
