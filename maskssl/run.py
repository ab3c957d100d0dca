"""Pretrain -> evaluate, and evaluate-only from a checkpoint.

The command-line front end is :mod:`maskssl.main`; this module is the
programmatic one (tests and notebooks call it directly)::

    from maskssl import run
    summary = run.train_and_evaluate(config, "runs/x")

(``maskssl.pipeline`` is a deprecated alias of this module.)
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
from maskssl.data import check_data_config, data_schema, load_source
from maskssl.data.base import DataError, steps_per_epoch
from maskssl.data.grain_source import InputWorkerError
from maskssl.evaluators import check_eval_config, make_evaluator
from maskssl.methods import _REGISTRY as METHODS
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
  """Cheap checks that fail before any compute (no method is built yet:
  that needs the run length, see :func:`_build`)."""
  for key in ("method", "seed", "batch_size", "data"):
    if key not in config:
      raise ConfigError(f"config has no field {key!r}")
  if config.method not in METHODS:
    raise ConfigError(f"Unknown method {config.method!r}; known: "
                      f"{sorted(METHODS)}")
  train_lib.run_config(config)   # unknown top-level keys
  train_lib.parallel_config(config)
  _enabled_evals(config)
  check_data_config(config)   # unknown data keys, evaluators' overrides too
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(config.batch_size), mesh)
  if int(config.batch_size) % jax.process_count():
    raise ConfigError(f"config.batch_size={config.batch_size} is not "
                      f"divisible by {jax.process_count()} processes")
  return mesh


def _build(config):
  """The method (``config.total_steps`` resolved) and its evaluators."""
  try:
    method = get_method(config)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  return method, _evaluators(config, method)


def _evaluators(config, method) -> dict:
  fns = method.predict_fns()
  return {name: make_evaluator(name, ecfg, config, fns)
          for name, ecfg in _enabled_evals(config)}


def _pretrains(config) -> bool:
  return _total(config) > 0 or train_lib.run_config(config).num_epochs > 0


def _resolve_length(config, dataset):
  """(config with total_steps resolved from num_epochs, LoopConfig)."""
  lc = train_lib.loop_config(config, len(dataset))
  if _total(config) != lc.total_steps:
    config = _with_total_steps(config, lc.total_steps)
  return config, lc


def _enabled_evals(config):
  out = []
  for name, ecfg in (config.get("evals", None) or {}).items():
    check_eval_config(name, ecfg)
    if ecfg.get("enabled", True):
      out.append((name, ecfg))
  return out


def _with_total_steps(config, total: int):
  import copy
  config = copy.deepcopy(config)
  with config.unlocked():
    config.total_steps = int(total)
  return config


def _run_eval(name, evaluator, state, workdir, writer, step, spe=None,
              summarize=None) -> dict:
  """One evaluator on ``state``; it writes under
  ``<workdir>/eval/step<step>/<name>/`` so results of different checkpoints
  never mix (finished sub-runs there are reused on restart). ``spe``
  (pretraining steps per epoch) adds ``epoch`` to the logged line;
  ``summarize(out) -> out`` adds the best-over-the-run keys before logging."""
  t0 = time.perf_counter()
  out = evaluator.run(state, os.path.join(workdir, "eval", f"step{step}",
                                          name))
  out = {k: float(v) for k, v in out.items()}
  if summarize is not None:
    out = summarize(out)
  line = dict(out, epoch=step / spe) if spe else dict(out)
  writer.write(step, dict(line, seconds=time.perf_counter() - t0),
               stage=f"eval/{name}")
  return out


def _period(ecfg, spe) -> int:
  """Steps between online runs of an evaluator: ``every`` (steps) or
  ``every_epochs`` x steps per epoch of the pretraining split (0: none)."""
  epochs = float(ecfg.get("every_epochs", 0) or 0)
  if epochs > 0 and spe:
    return max(1, int(round(epochs * spe)))
  return int(ecfg.get("every", 0) or 0)


def _online_hooks(config, evaluators, workdir, writer, history, spe=None):
  """``(every, fn)`` train-loop hooks for ``config.evals.<name>.every > 0``
  (or ``every_epochs``, with ``spe`` steps per epoch): the evaluator also
  runs during pretraining (the final step is left to the evaluation after
  training). Results land in ``history[name]``."""
  hooks = []
  for name, ecfg in _enabled_evals(config):
    every = _period(ecfg, spe)
    if every <= 0:
      continue

    def fn(step, state, name=name):
      if step >= _total(config):
        return {}
      out = _run_eval(name, evaluators[name], state, workdir, writer, step,
                      spe)
      history.setdefault(name, []).append((step, out))
      return {}
    hooks.append((every, fn))
  return hooks


_LINE_KEYS = ("step", "stage", "time", "seconds", "epoch")


def _logged_evals(workdir) -> dict:
  """``{name: {step: out}}`` from the ``eval/<name>`` lines already in
  ``<workdir>/metrics.jsonl`` (a resumed run appends to it)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  out: dict = {}
  with open(path) as f:
    for raw in f:
      try:     # a killed attempt may have left a torn last line
        line = json.loads(raw)
      except ValueError:
        continue
      stage = str(line.get("stage", "")) if isinstance(line, dict) else ""
      if not stage.startswith("eval/") or "step" not in line:
        continue
      out.setdefault(stage[5:], {})[int(line["step"])] = {
          k: v for k, v in line.items() if k not in _LINE_KEYS}
  return out


def _resumed_history(config, history, logged, start, spe):
  """Put the online evaluations of the steps before a resume (logged by the
  earlier attempt, at most its checkpoint step ``start``) back into
  ``history``, so the best value / step covers the whole run. Only steps on
  the evaluator's period count (an evaluate-only run of another checkpoint
  writes the same stage)."""
  for name, ecfg in _enabled_evals(config):
    every = _period(ecfg, spe)
    if every <= 0 or name not in logged:
      continue
    have = {s for s, _ in history.get(name, [])}
    past = [(s, out) for s, out in sorted(logged[name].items())
            if s <= start and s < _total(config) and s % every == 0 and
            s not in have]
    if past:
      history[name] = past + history.get(name, [])


def _total(config) -> int:
  return int(train_lib.run_config(config).total_steps or 0)


def _with_best(evaluator, res: dict, history: list, spe=None) -> dict:
  """``res`` + ``best_<metric>`` and ``best_step`` over ``history`` (the
  online evaluations and the final one, last), for evaluators with a
  ``select`` metric (kNN, linear probe); with ``spe`` (steps per epoch) also
  ``best_epoch`` and ``final_epoch`` (completed epochs at those steps; the
  MetaMask reference reports the best epoch's kNN)."""
  key = getattr(evaluator, "select", None)
  if not key or key not in res:
    return res
  step, best = max(history, key=lambda sv: sv[1].get(key, float("-inf")))
  res = dict(res, **{f"best_{key}": best[key], "best_step": float(step)})
  if spe:
    res.update(best_epoch=step / spe, final_epoch=history[-1][0] / spe)
  return res


def _run_evals(evaluators, state, workdir, writer, step,
               history=None, spe=None) -> dict:
  """Every enabled evaluator on the final ``state``; its logged line holds
  the best-over-the-run keys too."""
  results = {}
  for name, evaluator in evaluators.items():
    past = (history or {}).get(name)
    summarize = None
    if past:
      summarize = lambda out, ev=evaluator, past=past: _with_best(  # noqa: E731
          ev, out, past + [(step, out)], spe)
    results[name] = _run_eval(name, evaluator, state, workdir, writer, step,
                              spe, summarize)
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
  mesh = _validate(config)
  _check_workdir(workdir)
  _print_devices(mesh)
  dataset = lc = None
  load = lambda: load_source(  # noqa: E731
      config.data, data_schema(config.data).pretrain_split)
  # file-backed (read by the grain loader) when the data module has a source
  # for it, else in memory. The run length is resolved once, before the
  # method is built (its schedules need it); with total_steps given, the
  # method (and every config error it finds) comes before the data.
  if _pretrains(config) and not _total(config):
    dataset = load()
    config, lc = _resolve_length(config, dataset)
  method, evaluators = _build(config)
  if _pretrains(config) and dataset is None:
    dataset = load()
    config, lc = _resolve_length(config, dataset)
  train_lib.save_run_config(config, workdir)
  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main,
                                    tensorboard=True)
  pre = state = spe = None
  history: dict = {}
  if lc is not None:
    t0 = time.perf_counter()
    spe = steps_per_epoch(len(dataset), lc.batch_size)
    logged = _logged_evals(workdir)   # before this attempt writes any
    state, pre = train_lib.train_loop(
        method, dataset, lc, workdir, mesh=mesh,
        run_meta=dict(method=config.method),
        hooks=_online_hooks(config, evaluators, workdir, writer, history,
                            spe))
    pre["wall_s"] = time.perf_counter() - t0
    pre.pop("hook_results", None)
    _resumed_history(config, history, logged, int(pre["start_step"]), spe)
  evals = _run_evals(evaluators, state, workdir, writer,
                     int(pre["final_step"]) if pre else 0, history, spe)
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
  ``dataset``: the pretraining split when the caller has it already. The
  run length and example-batch shapes come from the checkpoint's metadata
  (the pretraining split is only read for checkpoints written before it
  held them)."""
  mesh = _validate(config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ckpt_lib.CheckpointError(
        f"no checkpoints directory in {workdir!r}; train first, or pass the "
        "--workdir of a finished run")
  checkpointer = ckpt_lib.Checkpointer(
      ckpt_dir, train_lib.run_config(config).keep_checkpoints, False)
  try:
    steps = checkpointer.all_steps()
    meta = checkpointer.meta(step if step in steps else None) if steps else {}
    if dataset is None and "batch_spec" in meta and "total_steps" in meta:
      config = _with_total_steps(config, int(meta["total_steps"]))
      lc = train_lib.loop_config(config, 1)
      batch = train_lib.spec_batch(meta["batch_spec"])
    else:
      if dataset is None:
        dataset = load_source(config.data,
                              data_schema(config.data).pretrain_split)
      config, lc = _resolve_length(config, dataset)
      batch = train_lib.example_batch(dataset, lc)
    method = _build(config)[0]
    target = train_lib.abstract_state(method, batch, lc, mesh)
    step, state, _ = checkpointer.restore(target, step)
  finally:
    checkpointer.close()
  return method, state, step


def evaluate(config, workdir: str, step: int | None = None) -> dict:
  method, state, step = restore_state(config, workdir, step)
  print(f"restored checkpoint step {step} from {workdir}", flush=True)
  evaluators = _evaluators(config, method)
  writer = metrics_lib.MetricWriter(workdir,
                                    enabled=jax.process_index() == 0,
                                    tensorboard=True)
  evals = _run_evals(evaluators, state, workdir, writer, step)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_step{step}.json"), "w") as f:
      json.dump(evals, f, indent=2, default=float)
    print(format_table(None, evals), flush=True)
  writer.close()
  return evals
