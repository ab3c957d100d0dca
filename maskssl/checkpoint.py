"""Orbax checkpoints: keep-N, async saves, restore latest/step, corrupt-
checkpoint fallback, and save-on-signal (SIGTERM / Ctrl-C).

A checkpoint holds the whole train state (params, optimiser state, step,
method extras) plus a small JSON record (config, data position, wall time).
Because the batch order is a pure function of (seed, step) (see
:mod:`maskssl.data.base`), the step is the complete data-pipeline position,
so restoring a checkpoint resumes bit-exactly.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No usable checkpoint, or one that does not match the model."""


def abstract_like(state: Any, shardings: Any = None) -> Any:
  """ShapeDtypeStructs (with target shardings) for restoring ``state``."""
  if shardings is None:
    shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), state)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for one directory."""

  def __init__(self, directory: str, max_to_keep: int = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save))

  # ---- queries ------------------------------------------------------------
  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def meta(self, step: int | None = None) -> dict:
    """The JSON metadata saved with ``step`` (default: the newest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    restored = self._mngr.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return dict(restored["meta"] or {})

  # ---- save ---------------------------------------------------------------
  def save(self, step: int, state: Any, meta: dict | None = None,
           force: bool = False) -> bool:
    return self._mngr.save(
        int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave(meta or {})), force=force)

  def wait(self):
    self._mngr.wait_until_finished()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()

  # ---- restore ------------------------------------------------------------
  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[int, Any, dict]:
    """Restore ``step`` (or the newest readable one) into the structure,
    dtypes and shardings of ``abstract_state``.

    With ``step=None`` a corrupt or half-written newest checkpoint is skipped
    with a warning naming it, and the previous one is used.
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    if step is not None:
      if step not in steps:
        raise CheckpointError(
            f"no checkpoint for step {step} in {self.directory}; "
            f"available: {steps}")
      return (step,) + self._restore_one(step, abstract_state)
    errors = []
    for s in reversed(steps):
      try:
        out = (s,) + self._restore_one(s, abstract_state)
      except CheckpointError:
        raise
      except Exception as e:  # corrupt / truncated files
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); "
                        "falling back to the previous one", s,
                        self.directory, type(e).__name__, str(e)[:300])
        errors.append((s, e))
        continue
      if errors:
        self._quarantine([bad for bad, _ in errors])
      return out
    raise CheckpointError(
        f"every checkpoint in {self.directory} is unreadable: " +
        "; ".join(f"step {s}: {type(e).__name__}: {str(e)[:200]}"
                  for s, e in errors))

  def _quarantine(self, bad_steps: list[int]):
    """Rename unreadable step directories to ``<step>.corrupt`` (kept for
    inspection, ignored by orbax) so that the resumed run can save those
    steps again."""
    if jax.process_index() == 0:
      for s in bad_steps:
        src = os.path.join(self.directory, str(s))
        dst = src + ".corrupt"
        n = 1
        while os.path.exists(dst):
          dst, n = f"{src}.corrupt{n}", n + 1
        os.rename(src, dst)
        logging.warning("moved unreadable checkpoint step %d to %s", s, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("maskssl_checkpoint_quarantine")
    self._mngr.reload()

  def _restore_one(self, step: int, abstract_state: Any):
    restored = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    state = restored["state"]
    want = jax.tree.structure(abstract_state)
    if jax.tree.structure(state) != want:
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} has a different "
          "structure than the configured model (was it written with another "
          "config?)")
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract_state)):
      if a.shape != b.shape:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory}: array shape "
            f"{a.shape} != configured {b.shape} (was it written with another "
            "config?)")
    return state, dict(restored["meta"] or {})


class StopSignal:
  """SIGTERM / SIGINT -> a flag the loop checks at each step boundary.

  The first signal asks for a clean stop (save, then exit); a second SIGINT
  raises KeyboardInterrupt at once.
  """

  def __init__(self):
    self.requested: str | None = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = name
    logging.warning("%s received: saving a checkpoint at the next step "
                    "boundary, then stopping (send SIGINT again to abort "
                    "without saving)", name)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False
