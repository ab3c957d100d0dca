"""Helpers for the multi-process / fault tests (subprocesses, loopback only)."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "mp_toy_worker.py")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
  e = dict(os.environ, JAX_PLATFORMS="cpu",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  e.update({k: str(v) for k, v in extra.items()})
  return e


def toy_procs(workdir, n: int, *args, devices=None, log_dir=None, **env_kw):
  """Start ``n`` toy workers (one process when n == 1) -> list of Popen."""
  devices = devices or 8 // n
  port = free_port()
  procs = []
  for i in range(n):
    cmd = [sys.executable, WORKER, str(workdir), *args]
    if n > 1:
      cmd += [f"--coordinator_address=127.0.0.1:{port}",
              f"--num_processes={n}", f"--process_id={i}"]
    out = open(os.path.join(log_dir, f"p{i}.log"), "w") if log_dir else None
    procs.append(subprocess.Popen(cmd, env=env(devices, **env_kw), cwd=REPO,
                                  stdout=out, stderr=subprocess.STDOUT))
  return procs


def wait_all(procs, timeout=240) -> list[int]:
  rcs = []
  for p in procs:
    try:
      rcs.append(p.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return rcs


def losses(workdir, stage="train") -> dict[int, float]:
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if "loss" in r and r.get("stage", stage) in (stage, "pretrain"):
        assert r["step"] not in out, f"step {r['step']} logged twice"
        out[r["step"]] = r["loss"]
  return out


def checkpoint_arrays(workdir, step=None) -> dict:
  """The saved train state of ``<workdir>/checkpoints/<step>`` as numpy
  (no target needed; newest step by default)."""
  import orbax.checkpoint as ocp
  cdir = os.path.join(workdir, "checkpoints")
  if step is None:
    step = max(int(d) for d in os.listdir(cdir) if d.isdigit())
  path = os.path.join(cdir, str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  ra = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ckptr.restore(path, restore_args=ra)


def max_abs_diff(a, b) -> float:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(float(np.max(np.abs(np.asarray(x, np.float64) -
                                  np.asarray(y, np.float64))))
             if np.size(x) else 0.0 for x, y in zip(la, lb))
