"""Metrics: JSON lines in the workdir, TensorBoard if installed, a progress
line with steps/s and ETA, and a NaN/Inf guard."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Mapping

import numpy as np


class NonFiniteError(FloatingPointError):
  """A loss or metric became NaN/Inf; the message names the step."""


def strict_json(value):
  """``value`` with NaN/Inf floats replaced by ``None``: metrics.jsonl is
  strict JSON that jq, JavaScript and pandas all parse."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, Mapping):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def to_python(metrics: Mapping) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = v.item() if v.size == 1 else v.tolist()
  return out


def check_finite(step: int, metrics: Mapping, last_good_step: int | None,
                 checkpoint_dir: str | None = None):
  bad = {k: v for k, v in metrics.items()
         if isinstance(v, float) and not math.isfinite(v)}
  if bad:
    where = (f"the last good checkpoint (step {last_good_step}) is kept in "
             f"{checkpoint_dir}" if last_good_step is not None else
             "no checkpoint had been written yet")
    raise NonFiniteError(
        f"non-finite metrics at step {step}: {bad}. Training stopped; "
        f"{where}. Lower optim.lr, check the input data for NaN/Inf, or set "
        "optim.clip_norm.")


class _TensorBoard:
  _count = 0

  def __init__(self, logdir: str):
    self._w = None
    # Event file names carry the time in seconds: writers opened in the same
    # second (the loop's and the evaluators') need their own suffix, or they
    # write into one file and corrupt it.
    _TensorBoard._count += 1
    suffix = f".{os.getpid()}.{_TensorBoard._count}"
    try:
      from tensorboardX import SummaryWriter  # type: ignore
      self._w = SummaryWriter(logdir, filename_suffix=suffix)
    except Exception:
      try:
        from torch.utils.tensorboard import SummaryWriter  # type: ignore
        self._w = SummaryWriter(logdir, filename_suffix=suffix)
      except Exception:
        self._w = None

  def scalars(self, step: int, metrics: Mapping):
    if self._w is None:
      return
    for k, v in metrics.items():  # undefined values (NaN rate) are skipped
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._w.add_scalar(k, v, step)
    self._w.flush()

  def close(self):
    if self._w is not None:
      self._w.close()


class MetricWriter:
  """Appends ``{"step": s, "stage": ..., **metrics}`` lines to
  ``<workdir>/metrics.jsonl``; only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True,
               tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = _TensorBoard(os.path.join(workdir, "tb")) if (
        enabled and tensorboard) else None
    if enabled:
      os.makedirs(workdir, exist_ok=True)

  def write(self, step: int, metrics: Mapping, stage: str = "train"):
    if not self.enabled:
      return
    rec = {"step": int(step), "stage": stage, "time": round(time.time(), 3)}
    rec.update(metrics)
    with open(self.path, "a") as f:
      f.write(json.dumps(strict_json(rec), allow_nan=False) + "\n")
    if self._tb is not None:
      self._tb.scalars(step, {f"{stage}/{k}": v for k, v in metrics.items()})

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Progress line: ``[stage] step 120/1000 loss 0.8123 | 41.2 steps/s |
  ETA 0:21``. Step rate excludes the first (compiling) step."""

  def __init__(self, total_steps: int, start_step: int = 0,
               stage: str = "train", enabled: bool = True, stream=None):
    self.total, self.stage, self.enabled = total_steps, stage, enabled
    self.stream = stream or sys.stdout
    self._t0 = None
    self._s0 = start_step

  def mark_compiled(self, step: int):
    self._t0, self._s0 = time.perf_counter(), step

  def rate(self, step: int) -> float:
    if self._t0 is None or step <= self._s0:
      return float("nan")
    return (step - self._s0) / (time.perf_counter() - self._t0)

  def line(self, step: int, metrics: Mapping) -> str:
    r = self.rate(step)
    eta = (self.total - step) / r if r == r and r > 0 else float("nan")
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                     if isinstance(v, float) and k in ("loss", "lr",
                                                       "grad_norm"))
    rate = f"{r:.1f} steps/s" if r == r else "compiling"
    eta_s = f"ETA {_fmt_time(eta)}" if eta == eta else "ETA ?"
    return (f"[{self.stage}] step {step}/{self.total} {shown} | {rate} | "
            f"{eta_s}")

  def report(self, step: int, metrics: Mapping):
    if self.enabled:
      print(self.line(step, metrics), file=self.stream, flush=True)
      logging.debug("progress %s %s", step, metrics)
