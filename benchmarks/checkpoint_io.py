"""Checkpoint save/restore time and size for each method's default config;
prints JSON.

    python benchmarks/checkpoint_io.py [--configs configs/sma_particle.py ...]
        [--reps 2] [--variant ""]

For each config: the train state is built exactly as the loop builds it
(:func:`maskssl.train.init_state`, shape-first init into the target
shardings on all local devices), then timed:

* ``save_s``: ``Checkpointer.save`` (async orbax, state + JSON meta) plus
  ``wait`` until the checkpoint is committed;
* ``save_blocking_s``: the part of it the train loop waits for (the call to
  ``save``, before the background write finishes);
* ``restore_s``: ``Checkpointer.restore`` of the newest step into the
  abstract state (with shardings) plus ``block_until_ready``;
* the state depends only on shapes, so when a config's full data set is
  not prepared on this machine, its embedded sample provides them (noted
  as ``data_note``);
* ``bytes``: size on disk of the step directory; ``state_bytes``: sum of the
  in-memory leaf sizes (params + optimiser state + extras).

By default every float leaf gets small noise first, so the checkpoint is as
large as a trained one (a fresh state's all-zero optimiser moments compress
well; ``--init_state`` measures it as is).
Best (min) over ``--reps`` repetitions; each in a fresh temp directory.
The machine may be shared: look at ``load_avg``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

DEFAULT_CONFIGS = ["configs/sma_particle.py", "configs/metamask_cifar10.py",
                   "configs/mscn_cifar10.py", "configs/sdmae_pcam.py"]


def _dir_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for f in files:
      total += os.path.getsize(os.path.join(root, f))
  return total


def bench_one(config_arg: str, reps: int, perturb: bool = True) -> dict:
  from maskssl import checkpoint as ckpt_lib
  from maskssl import parallel
  from maskssl import train as train_lib
  from maskssl.config_utils import load_config_file
  from maskssl.data import load_split
  from maskssl.methods import get_method

  from maskssl.data.base import DataError
  config = load_config_file(config_arg)
  method = get_method(config)
  split = config.data.get("pretrain_split", "pretrain")
  data_note = None
  try:
    dataset = load_split(config.data, split)
  except DataError as e:  # full data not prepared here: same shapes from
    data_note = f"embedded sample used for shapes ({str(e)[:120]})"
    with config.unlocked():
      config.data.source = "embedded"
    dataset = load_split(config.data, split)
  lc = train_lib.loop_config(config, max(len(dataset), config.batch_size))
  mesh = parallel.make_mesh()
  # the state depends only on shapes: a global-batch-sized example batch
  batch = dataset.batch(np.arange(lc.batch_size) % len(dataset))
  t0 = time.perf_counter()
  state, shardings = train_lib.init_state(method, batch, lc, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  if perturb:  # like a trained state: no all-zero optimiser moments
    def noisy(tree):
      leaves, treedef = jax.tree.flatten(tree)
      keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
      return jax.tree.unflatten(treedef, [
          x + 1e-3 * jax.random.normal(k, x.shape, x.dtype)
          if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x
          for x, k in zip(leaves, keys)])
    state = jax.jit(noisy, out_shardings=shardings)(state)
    jax.block_until_ready(state)
  leaves = jax.tree.leaves(state)
  param_count = sum(int(np.size(x)) for x in jax.tree.leaves(
      state["params"]))
  out = dict(config=config_arg, method=config.method, perturbed=perturb,
             batch_size=lc.batch_size, fsdp=lc.fsdp, init_s=round(init_s, 3),
             param_count=param_count, leaves=len(leaves),
             state_bytes=int(sum(x.size * x.dtype.itemsize for x in leaves)))
  if data_note:
    out["data_note"] = data_note
  target = ckpt_lib.abstract_like(state)
  saves, blocking, restores, sizes = [], [], [], []
  for _ in range(reps):
    d = tempfile.mkdtemp(prefix="maskssl_ckpt_bench_")
    try:
      ck = ckpt_lib.Checkpointer(d, max_to_keep=2, async_save=True)
      t0 = time.perf_counter()
      ck.save(1, state, dict(config=config_arg), force=True)
      t1 = time.perf_counter()
      ck.wait()
      t2 = time.perf_counter()
      ck.close()
      saves.append(t2 - t0)
      blocking.append(t1 - t0)
      sizes.append(_dir_bytes(os.path.join(d, "1")))
      ck = ckpt_lib.Checkpointer(d, max_to_keep=2, async_save=False)
      t0 = time.perf_counter()
      step, restored, _ = ck.restore(target)
      jax.block_until_ready(restored)
      restores.append(time.perf_counter() - t0)
      ck.close()
      assert step == 1
      for a, b in zip(jax.tree.leaves(restored), leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finally:
      shutil.rmtree(d, ignore_errors=True)
  out.update(save_s=round(min(saves), 3),
             save_blocking_s=round(min(blocking), 3),
             restore_s=round(min(restores), 3), bytes=int(min(sizes)),
             save_s_all=[round(x, 3) for x in saves],
             restore_s_all=[round(x, 3) for x in restores])
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
  ap.add_argument("--variant", default="",
                  help="config variant appended as ':variant' (e.g. quick)")
  ap.add_argument("--reps", type=int, default=2)
  ap.add_argument("--init_state", action="store_true",
                  help="save the freshly initialised state as is (its zero "
                       "optimiser moments compress well; default: add small "
                       "noise to every float leaf, like a trained state)")
  a = ap.parse_args()
  results = []
  for c in a.configs:
    arg = c + (f":{a.variant}" if a.variant else "")
    try:  # keep stdout for the JSON (data loaders may print)
      with contextlib.redirect_stdout(sys.stderr):
        results.append(bench_one(arg, a.reps, perturb=not a.init_state))
    except Exception as e:  # report and go on with the other configs
      results.append(dict(config=arg, error=f"{type(e).__name__}: {e}"[:500]))
  print(json.dumps(dict(
      devices=jax.device_count(), backend=jax.default_backend(),
      jax=jax.__version__, cpus=os.cpu_count(),
      load_avg=[round(x, 2) for x in os.getloadavg()], results=results),
      indent=1))


if __name__ == "__main__":
  main()
