"""What the reproduction scripts share: resumable runs, the agreed result
statistics (mean, std, n, values per arm) and 95 % intervals."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_run_flags(p):
  """The flags both reproduction scripts take: extra maskssl.main flags and
  where the result files go."""
  p.add_argument("--extra_flags", default="",
                 help="more flags for every maskssl.main run (smoke tests)")
  p.add_argument("--results", default=os.path.join(REPO, "benchmarks",
                                                   "results"))


def tuple_flag(values) -> str:
  """``(0,1,2)`` / ``(0,)``: a tuple as an ml_collections flag value."""
  return "(" + ",".join(map(str, values)) + ("," if len(values) == 1 else
                                             "") + ")"


def read_json(path, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def run_commands(cmds, wd: str, done: str, label: str):
  """Run ``cmds`` in order (output appended to ``wd/stdout.log``) unless
  ``done`` exists; the wall time of every attempt is appended to
  ``wd/wall.json``. A failing command stops the script, naming the log."""
  if os.path.exists(done):
    return read_json(done)
  os.makedirs(wd, exist_ok=True)
  t0 = time.time()
  with open(os.path.join(wd, "stdout.log"), "a") as log:
    for cmd in cmds:
      print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
      rc = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
      if rc:
        sys.exit(f"{label} failed (exit {rc}); see {wd}/stdout.log")
  walls = read_json(os.path.join(wd, "wall.json"), [])
  walls.append(time.time() - t0)
  with open(os.path.join(wd, "wall.json"), "w") as f:
    json.dump(walls, f)
  return read_json(done)


def pretraining_stats(wd: str, batch_size: int) -> dict | None:
  """Throughput and the last monitors of a finished pretraining run in
  ``wd``: examples/s (median over log windows of steps/s x batch), the
  share of wall time spent waiting for input, and the final loss /
  collapse monitors (``emb_std``, ``emb_rank``) where the method logs
  them. None without a metrics file."""
  path = os.path.join(wd, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  lines = []
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("stage") == "pretrain":
        lines.append(rec)
  rates = [r["steps_per_sec"] for r in lines
           if isinstance(r.get("steps_per_sec"), (int, float))]
  waits = [r["data_wait_share"] for r in lines
           if isinstance(r.get("data_wait_share"), (int, float))]
  if not rates:
    return None
  out = dict(examples_per_s=float(np.median(rates)) * batch_size,
             data_wait_share=float(np.median(waits)) if waits else None)
  for k in ("loss", "emb_std", "emb_rank"):
    if k in lines[-1]:
      out[f"final_{k}"] = float(lines[-1][k])
  return out


def arms_stats(values: dict) -> dict:
  """arm -> {seed: value} as the agreed {mean, std, n, values, seeds}."""
  out = {}
  for k, by_seed in values.items():
    seeds = sorted(by_seed)
    v = [float(by_seed[s]) for s in seeds]
    out[k] = dict(mean=float(np.mean(v)),
                  std=float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                  n=len(v), values=v, seeds=seeds)
  return out


def difference(a: dict, b: dict) -> dict:
  """a - b ({seed: value} each) with a 95 % t interval: paired over the
  common seeds when there are >= 2; else unpaired, the variance estimated
  from the arm that has >= 2 seeds (equal-variance assumption; a 1-seed
  ablation has no spread of its own); none for 1 seed vs 1 seed."""
  from scipy import stats
  common = sorted(set(a) & set(b))
  if len(common) >= 2:
    d = np.array([a[s] - b[s] for s in common], float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return dict(mean=float(d.mean()), ci95=[float(d.mean() - half),
                                            float(d.mean() + half)],
                n=len(d), values=d.tolist(), method="paired by seed")
  va, vb = np.array(list(a.values()), float), np.array(list(b.values()),
                                                      float)
  out = dict(mean=float(va.mean() - vb.mean()), n=[len(va), len(vb)])
  spread = [v for v in (va, vb) if len(v) >= 2]
  if spread:
    s = max(spread, key=len)
    half = stats.t.ppf(0.975, len(s) - 1) * s.std(ddof=1) * np.sqrt(
        1 / len(va) + 1 / len(vb))
    out.update(ci95=[out["mean"] - half, out["mean"] + half],
               method="unpaired; variance of the multi-seed arm")
  else:
    out["method"] = "one seed each: no interval"
  return out


def write_results(results, results_dir: str, suffix: str = ""):
  """One ``reproduce_<task><suffix>.json`` per result, and a summary line."""
  os.makedirs(results_dir, exist_ok=True)
  for res in results:
    path = os.path.join(results_dir, f"reproduce_{res['task']}{suffix}.json")
    with open(path, "w") as f:
      json.dump(res, f, indent=2)
    print(f"{res['task']} ({res['metric']}): " + "  ".join(
        f"{k} {a['mean']:.4f} ± {a['std']:.4f} (n={a['n']})"
        for k, a in res["arms"].items()), flush=True)
