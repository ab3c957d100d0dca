"""Input-pipeline numbers for issue 17; prints JSON and saves it to
``benchmarks/results/input_pipeline.json``.

    python benchmarks/input_pipeline.py [--only memory,decode,wait,startup]
        [--rows 10000,1000000] [--steps 40] [--out PATH]

* ``memory``: peak host RSS of a pretraining run (``configs/sma_particle.py
  :quick``, evaluators off, ``--steps`` steps) on 10k vs 1M rows of real
  HIGGS (the shipped sample + extra rows, 23,988 real rows, replicated to
  size for this measurement only), file-backed (``data.in_memory=False``)
  and, for comparison, loaded whole (``True``: what every run did before).
  ``rss_growth_ratio`` = 1M-row peak / 10k-row peak, file-backed.
* ``decode``: JPEG decode + centre crop, images/s of one worker (one
  thread) on the CIFAR-10 tar (32 px -> 28) and the PCam tar (96 px -> 84);
  and the grain loader end to end (threads, and worker processes).
* ``wait``: ``data_wait_share`` (time the loop waits for its next batch /
  wall time, after the first step) of the CIFAR-10 (``mscn_cifar10:quick``)
  and PCam (``sdmae_pcam:sample``: ViT-Ti at 96 px, batch 40) configs
  reading the shared tars, and of ``sdmae_pcam:quick`` (a toy ViT on 32 px
  whose step costs about as much CPU as decoding its 40 JPEGs: on a CPU
  the two cannot overlap, so its share is the decode's share of the CPU),
  with threads and with 2 worker processes.
* ``startup``: seconds from the start to the end of the first step on the
  50k CIFAR-10 tar (``mscn_cifar10:quick``): before = the split decoded
  into memory first (``in_memory=True``, as the folder / npz paths did),
  after = the grain loader reading the tar.

Each measurement runs in a fresh subprocess (its own peak RSS, no warm
caches of a previous one). The machine may be shared: every number comes
with ``os.getloadavg()`` at its start and end; prefer the ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
CIFAR_TAR = os.path.join(SHARED, "cifar10_full", "train.tar")
PCAM_TAR = os.path.join(SHARED, "pcam_10k", "train.tar")
HIGGS_CSV = os.path.join(SHARED, "higgs_sample.csv")
HIGGS_EXTRA = os.path.join(SHARED, "higgs_extra", "higgs_extra.csv.gz")


def _finite(x):
  """None for NaN / inf (strict JSON: a 1-step run has no rate)."""
  return x if x is None or math.isfinite(x) else None


def _load():
  return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------ children --
def _config(arg: str, overrides: dict):
  sys.path.insert(0, REPO)
  from maskssl.config_utils import load_config_file
  import ml_collections
  c = load_config_file(os.path.join(REPO, "configs", arg))
  with c.unlocked():
    for k, v in overrides.items():
      node = c
      parts = k.split(".")
      for p in parts[:-1]:
        node = node[p]
      node[parts[-1]] = v
    c.evals = ml_collections.ConfigDict()
  return c


def child_train(spec: dict) -> dict:
  """One run: load the pretraining source, train ``steps`` steps."""
  t_start = time.perf_counter()
  load0 = _load()
  from maskssl import parallel
  parallel.configure_cpu_devices(spec.get("cpu_devices", "off"))
  from maskssl import train as train_lib
  from maskssl.data import load_source
  from maskssl.methods import get_method
  config = _config(spec["config"], spec["overrides"])
  t0 = time.perf_counter()
  ds = load_source(config.data, config.data.get("pretrain_split", "pretrain"))
  t_source = time.perf_counter() - t0
  method = get_method(config)
  lc = train_lib.loop_config(config, len(ds), verbose=False)
  with tempfile.TemporaryDirectory() as wd:
    _, summary = train_lib.train_loop(method, ds, lc, wd)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return dict(
      examples=len(ds), file_backed=bool(getattr(ds, "meta", {}).get(
          "file_backed", False)), source_s=round(t_source, 3),
      init_and_first_step_s=summary["init_and_compile_s"],
      time_to_first_step_s=round(t0 - t_start + t_source
                                 + summary["init_and_compile_s"], 3),
      first_batch_s=summary["first_batch_s"],
      data_wait_share=summary["data_wait_share"],
      data_wait_s=summary["data_wait_s"],
      steps=lc.total_steps, steps_per_sec=_finite(summary.get("steps_per_sec")),
      peak_rss_mb=round(rss / 2 ** 20, 1), load_start=load0,
      load_end=_load())


def child_decode(spec: dict) -> dict:
  import numpy as np
  from maskssl.data import grain_source, records
  out = {"load_start": _load()}
  for name, path, crop in (("cifar10_tar", CIFAR_TAR, 28),
                           ("pcam_tar", PCAM_TAR, 84)):
    files = records.ImageFiles(path)
    n = min(len(files), spec["n"])
    idx = np.random.default_rng(0).permutation(len(files))[:n]
    raw = [files.raw(int(i)) for i in idx]     # bytes in memory: decode only
    t0 = time.perf_counter()
    for i, b in zip(idx, raw):
      records.decode_image_bytes(b, files.describe(int(i)), crop=crop)
    dt = time.perf_counter() - t0
    res = dict(images=n, decode_crop_per_s=round(n / dt, 1))
    # end to end through the loader (pread + decode + stack), batch 256
    src = records.Mapped(files, records.image_label)
    for label, opts in (("threads2", grain_source.LoaderOptions(threads=2,
                                                                prefetch=4)),
                        ("workers2", grain_source.LoaderOptions(
                            threads=1, prefetch=2, workers=2))):
      steps = max(2, spec["n"] // 256)
      loader = grain_source.BatchLoader(src, 256, 0, steps + 2, options=opts)
      it = loader.iterate(0)
      next(it)   # start-up (worker spawn) not counted
      t0 = time.perf_counter()
      for _ in range(steps):
        next(it)
      dt = time.perf_counter() - t0
      it.close()
      res[f"loader_{label}_images_per_s"] = round(steps * 256 / dt, 1)
    out[name] = res
  out["load_end"] = _load()
  return out


def _run_child(kind: str, spec: dict, timeout: int = 3000) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get(
      "PYTHONPATH", ""))
  env.setdefault("JAX_PLATFORMS", "cpu")
  p = subprocess.run([sys.executable, __file__, "--_child", kind,
                      json.dumps(spec)], capture_output=True, text=True,
                     timeout=timeout, env=env, cwd=REPO)
  if p.returncode != 0:
    return dict(error=p.stderr[-2000:])
  return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------- sections --
def _higgs_rows(n: int, path: str):
  """``n`` real HIGGS rows (sample + extra, replicated) as a CSV."""
  import gzip
  with open(HIGGS_CSV) as f:
    header, *rows = f.read().splitlines()
  with gzip.open(HIGGS_EXTRA, "rt") as f:
    rows += f.read().splitlines()[1:]
  rows = [r for r in rows if r.strip()]
  with open(path, "w") as f:
    f.write(header + "\n")
    done = 0
    while done < n:
      part = rows[:n - done]
      f.write("\n".join(part) + "\n")
      done += len(part)
  return path


def memory(args, tmp) -> dict:
  out = {}
  for n in args.rows:
    path = _higgs_rows(n, os.path.join(tmp, f"higgs_{n}.csv"))
    for in_mem in (False, True):
      spec = dict(config="sma_particle.py:quick", overrides={
          "data.path": path, "data.in_memory": in_mem,
          "data.pretrain_extra": "", "total_steps": args.steps,
          "log_every": 10, "checkpoint_every": 10 ** 6,
          "data.test_size": 1500, "data.val_size": 1000})
      out[f"{n}_rows_{'in_memory' if in_mem else 'file_backed'}"] = \
          _run_child("train", spec)
      print(json.dumps({f"memory {n} in_memory={in_mem}":
                        out[f"{n}_rows_{'in_memory' if in_mem else 'file_backed'}"]}),
            file=sys.stderr, flush=True)
  lo, hi = min(args.rows), max(args.rows)
  try:
    out["rss_growth_ratio"] = round(
        out[f"{hi}_rows_file_backed"]["peak_rss_mb"]
        / out[f"{lo}_rows_file_backed"]["peak_rss_mb"], 4)
    out["rss_growth_ratio_in_memory"] = round(
        out[f"{hi}_rows_in_memory"]["peak_rss_mb"]
        / out[f"{lo}_rows_in_memory"]["peak_rss_mb"], 4)
  except (KeyError, TypeError):
    pass
  return out


def wait(args) -> dict:
  out = {}
  pcam = {"data.path": PCAM_TAR, "data.source": "path"}
  for name, cfg, over in (
      ("cifar10", "mscn_cifar10.py:quick", {"data.path": CIFAR_TAR,
                                            "data.source": "tar"}),
      ("pcam", "sdmae_pcam.py:sample", pcam),
      # the smoke config: a 2-block 64-d ViT on 32 px, so decoding the 96
      # px JPEGs costs as much CPU as the step; threads, then 2 processes
      ("pcam_quick", "sdmae_pcam.py:quick", pcam),
      ("pcam_quick_workers2", "sdmae_pcam.py:quick",
       dict(pcam, **{"data.workers": 2, "data.prefetch": 4}))):
    spec = dict(config=cfg, overrides=dict(
        over, total_steps=args.steps, log_every=5,
        checkpoint_every=10 ** 6))
    out[name] = _run_child("train", spec)
    print(json.dumps({f"wait {name}": out[name]}), file=sys.stderr,
          flush=True)
  return out


def startup(args) -> dict:
  out = {}
  for label, in_mem in (("before_in_memory", True), ("after_grain", False)):
    spec = dict(config="mscn_cifar10.py:quick", overrides={
        "data.path": CIFAR_TAR, "data.source": "tar",
        "data.in_memory": in_mem, "total_steps": 1,
        "checkpoint_every": 10 ** 6})
    out[label] = _run_child("train", spec)
    print(json.dumps({f"startup {label}": out[label]}), file=sys.stderr,
          flush=True)
  try:
    out["speedup"] = round(out["before_in_memory"]["time_to_first_step_s"]
                           / out["after_grain"]["time_to_first_step_s"], 2)
  except (KeyError, TypeError, ZeroDivisionError):
    pass
  return out


def main():
  if len(sys.argv) > 2 and sys.argv[1] == "--_child":
    spec = json.loads(sys.argv[3])
    res = child_train(spec) if sys.argv[2] == "train" else child_decode(spec)
    print(json.dumps(res))
    return
  ap = argparse.ArgumentParser()
  ap.add_argument("--only", default="memory,decode,wait,startup")
  ap.add_argument("--rows", default="10000,1000000")
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--decode_n", type=int, default=2048)
  ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                "input_pipeline.json"))
  args = ap.parse_args()
  args.rows = [int(r) for r in args.rows.split(",")]
  only = set(args.only.split(","))
  res = dict(machine=dict(cpus=os.cpu_count(), load_start=_load()))
  if os.path.exists(args.out):   # keep sections not rerun
    with open(args.out) as f:
      res = dict(json.load(f), machine=res["machine"])
  with tempfile.TemporaryDirectory() as tmp:
    if "memory" in only:
      res["memory"] = memory(args, tmp)
      res["rss_growth_ratio"] = res["memory"].get("rss_growth_ratio")
    if "decode" in only:
      res["decode"] = _run_child("decode", dict(n=args.decode_n))
    if "wait" in only:
      res["wait"] = wait(args)
      res["data_wait_share"] = {k: v.get("data_wait_share")
                                for k, v in res["wait"].items()}
    if "startup" in only:
      res["startup"] = startup(args)
  res["machine"]["load_end"] = _load()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=2)
  print(json.dumps(res, indent=2))


if __name__ == "__main__":
  main()
