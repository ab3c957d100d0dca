"""The one generic training loop shared by every method and fine-tuning.

    state = train_loop(method, dataset, loop_config, workdir)

* shape-first init (``jax.eval_shape``), then a jitted init straight into the
  target shardings (replicated, or FSDP-sharded by ``parallel.fsdp``);
* resume: the newest readable orbax checkpoint in ``<workdir>/checkpoints``
  is restored automatically (corrupt newest -> previous, with a warning);
* one ``jax.jit`` train step with the state donated; the step's rng is
  ``fold_in(rng, state["step"])`` so randomness depends only on (seed, step);
* data order is a pure function of (seed, step) (:mod:`maskssl.data.base`),
  so an interrupted and resumed run is bit-identical to an uninterrupted one;
  batches come from the grain loader (:mod:`maskssl.data.grain_source`):
  each process reads only its slice, the next batches are prepared in the
  background while the current step runs, and the time the loop waits for
  data is logged (``data_wait_s``, ``data_wait_share`` of the wall time);
* metrics stay on device between log steps (no per-step host sync); at each
  log step they are fetched, checked for NaN/Inf (naming the first bad
  step), written as JSON lines and shown as a progress line;
* checkpoints every ``checkpoint_every`` steps, at the end, and on SIGTERM /
  Ctrl-C (saved at the next step boundary, then :class:`Interrupted`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maskssl import checkpoint as ckpt_lib
from maskssl.config_utils import check_keys, from_config
from maskssl import distributed
from maskssl import metrics as metrics_lib
from maskssl import parallel
from maskssl.data import grain_source
from maskssl.data.base import ArrayDataset, DataError, batch_indices
from maskssl.data.base import steps_per_epoch


class Interrupted(Exception):
  """Training stopped by a signal after saving a checkpoint."""

  def __init__(self, signal_name: str, step: int, checkpoint_dir: str):
    super().__init__(
        f"stopped by {signal_name} at step {step}; checkpoint saved in "
        f"{checkpoint_dir}. Run the same command again to resume.")
    self.signal_name, self.step = signal_name, step


@dataclasses.dataclass
class LoopConfig:
  """What the loop needs; built from a ConfigDict by :func:`loop_config`."""
  batch_size: int
  total_steps: int
  seed: int = 0
  log_every: int = 50
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  fsdp: bool = False
  fsdp_min_size: int = 2 ** 14
  stage: str = "pretrain"
  verbose: bool = True
  stop_check_every: int = 1       # see RunConfig
  # input pipeline (config.data.threads / prefetch / workers / bad_records)
  data: grain_source.LoaderOptions = dataclasses.field(
      default_factory=grain_source.LoaderOptions)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The top-level scalar fields of a run's config (sections such as
  ``data``, ``model``, ``optim`` or ``evals`` belong to their components).
  Defaults live here only; an unknown top-level key is a ConfigError."""
  method: str = ""
  seed: int = 0
  batch_size: int = 0
  total_steps: int = 0            # > 0: the run length in steps, else
  num_epochs: float = 0.0         # epochs of the pretraining split
  log_every: int = 50
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  # multi-process only: every N steps all processes agree (one tiny
  # all-gather) whether any of them got SIGTERM, so they save together.
  stop_check_every: int = 1
  cpu_devices: str = "off"        # XLA:CPU devices (maskssl.main flag)


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
  """``config.parallel``: FSDP instead of replicated parameters."""
  fsdp: bool = False
  fsdp_min_size: int = 2 ** 14


# top-level sections read by the run, the data / evaluator registries and
# the methods (each checks its own keys)
SECTIONS = ("data", "model", "mask", "optim", "parallel", "evals", "augment",
            "loss", "mscn", "metamask", "sdmae", "finetune")


def run_config(config) -> RunConfig:
  """:class:`RunConfig` from the top-level config (unknown scalar or
  section keys are a ConfigError naming them)."""
  fields = {f.name for f in dataclasses.fields(RunConfig)}
  check_keys(config.keys(), fields | set(SECTIONS), "config (top level)")
  kw = {k: config[k] for k in fields if k in config and config[k] is not None}
  return RunConfig(**kw)


def parallel_config(config) -> ParallelConfig:
  return from_config(ParallelConfig, config.get("parallel", None) or {},
                     "config.parallel")


def loop_config(config, dataset_size: int, stage: str = "pretrain",
                **overrides) -> LoopConfig:
  """LoopConfig from the top-level config (``total_steps`` or
  ``num_epochs`` define the length)."""
  rc, par = run_config(config), parallel_config(config)
  bs = int(rc.batch_size)
  total = int(rc.total_steps or 0)
  if total <= 0:
    epochs = float(rc.num_epochs or 0)
    if epochs <= 0:
      raise ValueError("set config.total_steps or config.num_epochs > 0")
    total = max(1, int(round(epochs * steps_per_epoch(dataset_size, bs))))
  kw = dict(batch_size=bs, total_steps=total, seed=int(rc.seed),
            log_every=int(rc.log_every),
            checkpoint_every=int(rc.checkpoint_every),
            keep_checkpoints=int(rc.keep_checkpoints),
            async_checkpoints=bool(rc.async_checkpoints),
            fsdp=bool(par.fsdp), fsdp_min_size=int(par.fsdp_min_size),
            stop_check_every=int(rc.stop_check_every or 1),
            data=grain_source.loader_options(config.get("data", None)),
            stage=stage)
  kw.update(overrides)
  return LoopConfig(**kw)


def example_batch(dataset, lc: LoopConfig) -> dict:
  """The whole (global) step-0 batch, identical on every process, used for
  init shapes: so the initial state does not depend on the process count.
  ``dataset``: an ArrayDataset or a grain source."""
  idx = batch_indices(len(dataset), lc.batch_size, 0, lc.seed)
  if isinstance(dataset, ArrayDataset):
    return dataset.batch(idx)
  batch = grain_source.read_records(dataset, idx, lc.data.bad_records)
  batch.pop(grain_source.BAD_KEY, None)
  return batch


def batch_spec(batch: dict) -> dict:
  """``{key: [shape, dtype]}`` of a batch (saved with checkpoints, so
  evaluate-only builds the state's shapes without loading the data)."""
  return {k: [list(np.shape(v)), str(np.asarray(v).dtype)]
          for k, v in batch.items()}


def spec_batch(spec: dict) -> dict:
  """A zero batch of :func:`batch_spec`'s shapes."""
  return {k: np.zeros(tuple(shape), np.dtype(dtype))
          for k, (shape, dtype) in spec.items()}


def init_state(method, batch: dict, lc: LoopConfig, mesh) -> tuple[Any, Any]:
  """Shape-first init into the target shardings; returns (state, shardings).

  ``batch`` is the global example batch (:func:`example_batch`), the same
  on every process."""
  rng = jax.random.fold_in(jax.random.PRNGKey(lc.seed), 0)
  abstract = jax.eval_shape(method.init_state, rng, batch)
  shardings = parallel.state_shardings(abstract, mesh, lc.fsdp,
                                       lc.fsdp_min_size)
  state = jax.jit(method.init_state, out_shardings=shardings)(rng, batch)
  return state, shardings


def abstract_state(method, batch: dict, lc: LoopConfig, mesh) -> Any:
  """ShapeDtypeStructs with shardings, for restoring without initialising."""
  rng = jax.random.fold_in(jax.random.PRNGKey(lc.seed), 0)
  abstract = jax.eval_shape(method.init_state, rng, batch)
  shardings = parallel.state_shardings(abstract, mesh, lc.fsdp,
                                       lc.fsdp_min_size)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, shardings)


def make_step_fn(method, seed: int, shardings, mesh, train_step=None):
  """The jitted, donated train step: ``(state, batch) -> (state, metrics)``.

  ``train_step(state, batch, rng)`` defaults to ``method.train_step``."""
  base_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  data = parallel.batch_sharding(mesh)
  train_step = train_step or method.train_step

  def step(state, batch):
    rng = jax.random.fold_in(base_rng, state["step"])
    new_state, metrics = train_step(state, batch, rng)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    return new_state, metrics

  return jax.jit(step, donate_argnums=0,
                 in_shardings=(shardings, data),
                 out_shardings=(shardings, parallel.replicated(mesh)))


def _flush(pending, writer, progress, lc, last_ckpt, ckpt_dir, lr_fn,
           data_stats=None):
  """Fetch pending per-step metrics, NaN-check each, log the newest (with
  the input pipeline's numbers since the last flush)."""
  if not pending:
    return None
  host = jax.device_get(pending)
  last = None
  for step, m in host:
    m = metrics_lib.to_python(m)
    metrics_lib.check_finite(step, m, last_ckpt, ckpt_dir)
    last = (step, m)
  step, m = last
  if lr_fn is not None:
    m["lr"] = float(lr_fn(step - 1))
  m["steps_per_sec"] = progress.rate(step)
  if data_stats is not None:
    m.update(data_stats.interval())
  writer.write(step, m, stage=lc.stage)
  progress.report(step, m)
  pending.clear()
  return m


class _DataStats:
  """Time the loop spends waiting for its next batch (reading, decoding,
  host->device), as seconds and as a share of the wall time."""

  def __init__(self):
    self.t_mark = time.perf_counter()
    self.wait = 0.0           # since the last interval()
    self.total_wait = self.total_wall = 0.0
    self.first_batch_s = None
    self.skipped = 0
    self.steady = False       # after the first (compiling) step

  def add(self, seconds: float):
    if self.first_batch_s is None:
      self.first_batch_s = seconds
    self.wait += seconds

  def start_steady(self):
    self.steady = True
    self.t_mark = time.perf_counter()
    self.wait = 0.0

  def interval(self) -> dict:
    now = time.perf_counter()
    wall = max(now - self.t_mark, 1e-9)
    out = dict(data_wait_s=round(self.wait, 6),
               data_wait_share=round(min(1.0, self.wait / wall), 6))
    if self.steady:
      self.total_wait += self.wait
      self.total_wall += wall
    if self.skipped:
      out["data_skipped"] = self.skipped
    self.t_mark, self.wait = now, 0.0
    return out

  def summary(self) -> dict:
    share = self.total_wait / self.total_wall if self.total_wall else 0.0
    return dict(data_wait_s=round(self.total_wait, 4),
                data_wait_share=round(share, 6),
                first_batch_s=round(self.first_batch_s or 0.0, 4),
                data_skipped=self.skipped)


def train_loop(method, dataset, lc: LoopConfig, workdir: str,
               mesh=None, run_meta: dict | None = None, lr_fn=None,
               hooks=()):
  """Train ``method`` on ``dataset``; resumes from ``workdir`` if possible.

  ``dataset``: an in-memory :class:`ArrayDataset` or a random-access source
  (:mod:`maskssl.data.grain_source`); batches are read by the grain loader
  with the (seed, step) order either way.

  ``hooks`` is a sequence of ``(every, fn)``; ``fn(step, state) -> dict``
  runs every ``every`` steps and at the end (e.g. validation), its result is
  logged under stage ``<stage>_eval`` and collected in
  ``summary["hook_results"]``.

  Returns ``(state, summary)``; raises :class:`Interrupted` after saving when
  SIGTERM/SIGINT arrives, and :class:`maskssl.metrics.NonFiniteError` on
  NaN/Inf (keeping the last good checkpoint)."""
  mesh = mesh or parallel.make_mesh()
  parallel.check_batch_size(lc.batch_size, mesh)
  lr_fn = lr_fn or getattr(method, "schedule", None)
  source = grain_source.as_source(dataset)
  spe = steps_per_epoch(len(source), lc.batch_size)
  is_main = jax.process_index() == 0
  ckpt_dir = os.path.join(workdir, "checkpoints")
  checkpointer = ckpt_lib.Checkpointer(ckpt_dir, lc.keep_checkpoints,
                                       lc.async_checkpoints)
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  # this process's slice of each global batch, (seed, step)-ordered
  loader = grain_source.BatchLoader(
      source, lc.batch_size, lc.seed, lc.total_steps, jax.process_index(),
      jax.process_count(), lc.data)

  t_init = time.perf_counter()
  first = loader.global_batch(0)
  multi = jax.process_count() > 1
  latest = checkpointer.latest_step()
  if latest is not None:
    target = abstract_state(method, first, lc, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, target)
    start, state, meta = checkpointer.restore(target)
    if lc.verbose and is_main:
      print(f"[{lc.stage}] resuming from checkpoint step {start} in "
            f"{ckpt_dir}", flush=True)
    saved_n = (meta or {}).get("num_examples")
    if saved_n is not None and int(saved_n) != len(source):
      logging.warning(
          "[%s] the checkpoint was written with %d training examples, the "
          "data now has %d: the resumed batches differ from the "
          "uninterrupted run's", lc.stage, int(saved_n), len(source))
  else:
    state, shardings = init_state(method, first, lc, mesh)
    start = 0
  start = int(jax.device_get(state["step"]))
  step_fn = make_step_fn(method, lc.seed, shardings, mesh)
  meta = dict(run_meta or {}, stage=lc.stage, steps_per_epoch=spe,
              total_steps=lc.total_steps, batch_size=lc.batch_size,
              seed=lc.seed, num_examples=len(source),
              data_loader="grain: (seed, step) order, the step is the whole "
              "iterator state", batch_spec=batch_spec(first))
  progress = metrics_lib.Progress(lc.total_steps, start, lc.stage,
                                  enabled=lc.verbose and is_main)
  pending: list = []
  last_ckpt = latest
  last_metrics = None
  t_compile = None
  hook_results: list = []
  data_stats = _DataStats()
  batches = None
  try:
    with ckpt_lib.StopSignal() as stop:
      step = start
      batches = loader.iterate(start)
      while step < lc.total_steps:
        t0 = time.perf_counter()
        try:
          batch = parallel.global_batch(next(batches), mesh)
        except (grain_source.InputWorkerError, DataError) as e:
          raise type(e)(f"{e}. Training stopped before step {step + 1}; "
                        + (f"the last checkpoint (step {last_ckpt}) is kept "
                           f"in {ckpt_dir}" if last_ckpt is not None else
                           "no checkpoint had been written yet")) from e
        data_stats.add(time.perf_counter() - t0)
        skipped = batches.take_skipped()
        if skipped:
          data_stats.skipped += len(skipped)
          for msg in skipped:
            logging.warning("[%s] step %d: skipped bad record %s (%d so far)",
                            lc.stage, step + 1, msg, data_stats.skipped)
        state, m = step_fn(state, batch)
        step += 1
        pending.append((step, m))
        if t_compile is None:
          jax.block_until_ready(m)
          t_compile = time.perf_counter() - t_init
          progress.mark_compiled(step)
        done = step == lc.total_steps
        hook_out = {}
        for every, fn in hooks:
          if done or step % every == 0:
            hook_out.update(fn(step, state) or {})
        if hook_out:
          hook_results.append(dict(hook_out, step=step))
          writer.write(step, hook_out, stage=lc.stage + "_eval")
        requested = stop.requested
        if multi:  # every process must stop (and save) at the same step
          if step % lc.stop_check_every == 0 or done:
            if distributed.any_process(requested is not None):
              requested = requested or "SIGTERM"  # a peer got the signal
          else:
            requested = None  # decided at the next agreed check
        save = done or step % lc.checkpoint_every == 0 or bool(requested)
        if save or step % lc.log_every == 0 or step == start + 1:
          last_metrics = _flush(pending, writer, progress, lc, last_ckpt,
                                ckpt_dir, lr_fn, data_stats) or last_metrics
          if not data_stats.steady:
            data_stats.start_steady()
        if save:
          checkpointer.save(step, state, meta, force=True)
          last_ckpt = step
        if requested and not done:
          checkpointer.wait()
          raise Interrupted(requested, step, ckpt_dir)
    checkpointer.wait()
  finally:
    if batches is not None:
      batches.close()
    checkpointer.close()
    writer.close()
  summary = dict(last_metrics or {}, final_step=int(lc.total_steps),
                 start_step=start,
                 init_and_compile_s=round(t_compile or 0.0, 3),
                 hook_results=hook_results)
  summary.update(data_stats.summary())
  return state, summary


def save_run_config(config, workdir: str):
  """Write the resolved config (JSON) next to the checkpoints."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def host_numpy(tree) -> Any:
  return jax.tree.map(np.asarray, jax.device_get(tree))
