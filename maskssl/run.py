"""Pretrain -> evaluate, and evaluate-only from a checkpoint.

The command-line front end is :mod:`maskssl.main`; this module is the
programmatic one (tests and notebooks call it directly)::

    from maskssl import pipeline
    summary = pipeline.train_and_evaluate(config, "runs/x")
"""
from __future__ import annotations

import json
import os
import time

import jax

from maskssl import checkpoint as ckpt_lib
from maskssl import metrics as metrics_lib
from maskssl import parallel
from maskssl import train as train_lib
from maskssl.config_utils import ConfigError
from maskssl.data import load_source
from maskssl.data.base import DataError
from maskssl.data.grain_source import InputWorkerError
from maskssl.evaluators import get_evaluator
from maskssl.methods import get_method
from maskssl.train import Interrupted  # noqa: F401  (re-exported)

UserError = (DataError, ConfigError, ckpt_lib.CheckpointError,
             metrics_lib.NonFiniteError, InputWorkerError)


def _check_workdir(workdir: str):
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir {workdir!r} is not writable ({e}); choose "
                      "another --workdir") from e


def _validate(config):
  """Cheap checks that fail before any compute."""
  for key in ("method", "seed", "batch_size", "data"):
    if key not in config:
      raise ConfigError(f"config has no field {key!r}")
  try:
    method = get_method(config)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(config.batch_size), mesh)
  if int(config.batch_size) % jax.process_count():
    raise ConfigError(f"config.batch_size={config.batch_size} is not "
                      f"divisible by {jax.process_count()} processes")
  for name, ecfg in (config.get("evals", None) or {}).items():
    try:
      get_evaluator(ecfg.type)
    except (ValueError, AttributeError) as e:
      raise ConfigError(f"config.evals.{name}: {e}") from e
  return method, mesh


def _with_total_steps(config, total: int):
  import copy
  config = copy.deepcopy(config)
  with config.unlocked():
    config.total_steps = int(total)
  return config


def _run_evals(config, method, state, workdir, writer, step) -> dict:
  """Run every enabled evaluator; each writes under
  ``<workdir>/eval/step<step>/<name>/`` so results of different checkpoints
  never mix (finished sub-runs there are reused on restart)."""
  results = {}
  for name, ecfg in (config.get("evals", None) or {}).items():
    if not ecfg.get("enabled", True):
      continue
    t0 = time.perf_counter()
    out = get_evaluator(ecfg.type).run(config, ecfg, method, state,
                                       os.path.join(workdir, "eval", f"step{step}", name))
    out = {k: float(v) for k, v in out.items()}
    writer.write(step, dict(out, seconds=time.perf_counter() - t0),
                 stage=f"eval/{name}")
    results[name] = out
  return results


def _arm_table(res: dict) -> list[str] | None:
  """Fine-tune results (``n<N>/<init>/<metric>``) as one row per label
  budget and metric, one column per init, and pretrained - scratch."""
  cells = {}
  for k, v in res.items():
    parts = k.split("/")
    if len(parts) != 3 or k.endswith("_std") or not parts[2].startswith(
        "best_") or parts[2] == "best_step":
      continue
    cells.setdefault((parts[0], parts[2][5:]), {})[parts[1]] = (
        v, res.get(k + "_std"))
  if not cells:
    return None
  inits = sorted({i for row in cells.values() for i in row},
                 key=lambda i: (i != "pretrained", i != "random_mask", i))
  diff = "pretrained" in inits and "scratch" in inits
  head = f"   {'labels':<7s}{'metric':<10s}" + "".join(
      f"{i:>21s}" for i in inits) + (f"{'pre - scratch':>16s}" if diff else "")
  lines = [head + "   (test at best val)"]
  for (n, metric), row in sorted(cells.items(),
                                 key=lambda kv: (int(kv[0][0][1:]), kv[0][1])):
    txt = f"   {(n[1:] if n != 'n0' else 'all'):<7s}{metric:<10s}"
    for i in inits:
      m, sd = row.get(i, (float("nan"), None))
      cell = f"{m:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")
      txt += f"{cell:>21s}"
    if diff and "pretrained" in row and "scratch" in row:
      txt += f"{row['pretrained'][0] - row['scratch'][0]:>+16.4f}"
    lines.append(txt)
  return lines


def format_table(pretrain: dict | None, evals: dict) -> str:
  lines = ["", "=" * 72, "summary", "=" * 72]
  if pretrain:
    keys = ("final_step", "loss", "steps_per_sec", "init_and_compile_s",
            "data_wait_share", "wall_s")
    lines.append("pretraining: " + "  ".join(
        f"{k}={pretrain[k]:.4g}" if isinstance(pretrain[k], float)
        else f"{k}={pretrain[k]}" for k in keys if k in pretrain))
  for name, res in evals.items():
    lines.append(f"-- {name}")
    arms = _arm_table(res)
    if arms:
      lines.extend(arms)
      continue
    for k in sorted(res):
      if k.endswith("_std"):
        continue
      std = res.get(k + "_std")
      val = f"{res[k]:.4f}" + (f" ± {std:.4f}" if std is not None else "")
      lines.append(f"   {k:<48s} {val}")
  lines.append("=" * 72)
  return "\n".join(lines)


def _print_devices(mesh):
  if jax.process_index() == 0:
    d = mesh.devices.flat[0]
    print(f"devices: {mesh.devices.size} x {d.platform} "
          f"({jax.process_count()} process(es)), data-parallel mesh",
          flush=True)


def train_and_evaluate(config, workdir: str) -> dict:
  method, mesh = _validate(config)
  _check_workdir(workdir)
  _print_devices(mesh)
  # file-backed (read by the grain loader) when the data module has a
  # source for it, else in memory
  dataset = load_source(config.data, config.data.get("pretrain_split",
                                                     "pretrain"))
  if not int(config.get("total_steps", 0) or 0) and float(
      config.get("num_epochs", 0) or 0) > 0:
    # Methods size their schedules from config.total_steps: resolve epochs.
    config = _with_total_steps(config, train_lib.loop_config(
        config, len(dataset)).total_steps)
    method = get_method(config)
  train_lib.save_run_config(config, workdir)
  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main,
                                    tensorboard=True)
  pre = None
  state = None
  if int(config.get("total_steps", 0) or 0) > 0 or float(
      config.get("num_epochs", 0) or 0) > 0:
    lc = train_lib.loop_config(config, len(dataset))
    t0 = time.perf_counter()
    state, pre = train_lib.train_loop(
        method, dataset, lc, workdir, mesh=mesh,
        run_meta=dict(method=config.method),
        lr_fn=getattr(method, "schedule", None))
    pre["wall_s"] = time.perf_counter() - t0
    pre.pop("hook_results", None)
  evals = _run_evals(config, method, state, workdir, writer,
                     int(pre["final_step"]) if pre else 0)
  summary = dict(pretrain=pre, evals=evals)
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=float)
    print(format_table(pre, evals), flush=True)
  writer.close()
  return summary


def restore_state(config, workdir: str, step: int | None = None,
                  dataset=None):
  """(method, state, step) restored from ``<workdir>/checkpoints``;
  ``dataset``: the pretraining split when the caller has it already."""
  method, mesh = _validate(config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ckpt_lib.CheckpointError(
        f"no checkpoints directory in {workdir!r}; train first, or pass the "
        "--workdir of a finished run")
  if dataset is None:
    dataset = load_source(config.data, config.data.get("pretrain_split",
                                                       "pretrain"))
  lc = train_lib.loop_config(config, len(dataset))
  if not int(config.get("total_steps", 0) or 0):
    config = _with_total_steps(config, lc.total_steps)
    method = get_method(config)
  batch = train_lib.example_batch(dataset, lc)
  target = train_lib.abstract_state(method, batch, lc, mesh)
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, lc.keep_checkpoints, False)
  try:
    step, state, _ = checkpointer.restore(target, step)
  finally:
    checkpointer.close()
  return method, state, step


def evaluate(config, workdir: str, step: int | None = None) -> dict:
  method, state, step = restore_state(config, workdir, step)
  print(f"restored checkpoint step {step} from {workdir}", flush=True)
  writer = metrics_lib.MetricWriter(workdir,
                                    enabled=jax.process_index() == 0,
                                    tensorboard=True)
  evals = _run_evals(config, method, state, workdir, writer, step)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_step{step}.json"), "w") as f:
      json.dump(evals, f, indent=2, default=float)
    print(format_table(None, evals), flush=True)
  writer.close()
  return evals
