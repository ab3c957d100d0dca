"""The shared loop: resume bit-exactness (SIGTERM and kill -9), NaN guard,
corrupt-checkpoint fallback, deterministic data order."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from maskssl import checkpoint as ckpt_lib
from maskssl import metrics as metrics_lib
from maskssl import train as train_lib
from maskssl.data.base import batch_indices
from toy import Toy, toy_dataset

HERE = pathlib.Path(__file__).parent


def _lc(**kw):
  base = dict(batch_size=32, total_steps=24, seed=3, log_every=4,
              checkpoint_every=6, keep_checkpoints=3, async_checkpoints=True,
              verbose=False)
  base.update(kw)
  return train_lib.LoopConfig(**base)


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state["params"]))


def test_batch_order_is_a_function_of_seed_and_step():
  a = [batch_indices(100, 32, s, 7) for s in range(7)]
  b = [batch_indices(100, 32, s, 7) for s in range(7)]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # one epoch (3 full batches) covers distinct examples
  assert len(set(np.concatenate(a[:3]).tolist())) == 96
  assert not np.array_equal(a[0], batch_indices(100, 32, 0, 8))


def test_sigterm_saves_and_resume_is_bit_exact(tmp_path):
  ds = toy_dataset()
  ref, _ = train_lib.train_loop(Toy(), ds, _lc(), str(tmp_path / "ref"))

  def kill_at_7(step, state):
    if step == 7:
      os.kill(os.getpid(), signal.SIGTERM)

  wd = str(tmp_path / "run")
  with pytest.raises(train_lib.Interrupted) as e:
    train_lib.train_loop(Toy(), ds, _lc(), wd, hooks=[(1, kill_at_7)])
  assert e.value.step == 7  # saved at the step boundary after the signal
  assert 7 in ckpt_lib.Checkpointer(os.path.join(wd, "checkpoints")
                                    ).all_steps()
  resumed, summary = train_lib.train_loop(Toy(), ds, _lc(), wd)
  assert summary["start_step"] == 7
  for a, b in zip(jax.tree.leaves(_params(ref)),
                  jax.tree.leaves(_params(resumed))):
    np.testing.assert_array_equal(a, b)


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  ds = toy_dataset(nan_row=5)
  # find the first step whose batch holds row 5
  bad = next(s for s in range(100)
             if 5 in batch_indices(len(ds), 32, s, 3)) + 1
  wd = str(tmp_path / "nan")
  with pytest.raises(metrics_lib.NonFiniteError, match=f"step {bad}"):
    train_lib.train_loop(Toy(), ds, _lc(total_steps=100, checkpoint_every=1),
                         wd)
  steps = ckpt_lib.Checkpointer(os.path.join(wd, "checkpoints")).all_steps()
  assert steps and max(steps) == bad - 1
  state = train_lib.init_state(Toy(), ds.batch(np.arange(32)), _lc(),
                               train_lib.parallel.make_mesh())[0]
  target = ckpt_lib.abstract_like(state)
  _, restored, _ = ckpt_lib.Checkpointer(
      os.path.join(wd, "checkpoints")).restore(target)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(
      _params(restored)))


def test_corrupt_newest_checkpoint_falls_back(tmp_path, caplog):
  ds = toy_dataset()
  wd = str(tmp_path / "c")
  state, _ = train_lib.train_loop(Toy(), ds, _lc(total_steps=12), wd)
  cdir = pathlib.Path(wd) / "checkpoints"
  ck = ckpt_lib.Checkpointer(str(cdir))
  assert ck.all_steps() == [6, 12]
  # garble every file of the newest checkpoint
  for f in (cdir / "12").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage" * 3)
  target = ckpt_lib.abstract_like(state)
  step, _, _ = ck.restore(target)
  assert step == 6
  assert "step 12" in caplog.text


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    from maskssl import train as train_lib
    from toy import Toy, toy_dataset
    slow = len(sys.argv) > 2
    def hook(step, state):
        if slow:
            time.sleep(0.25)
    lc = train_lib.LoopConfig(batch_size=32, total_steps=40, seed=3,
        log_every=100, checkpoint_every=5, async_checkpoints=False,
        verbose=False)
    state, _ = train_lib.train_loop(Toy(), toy_dataset(), lc, sys.argv[1],
                                    hooks=[(1, hook)])
    import numpy as np, jax
    np.save(sys.argv[1] + "/w.npy", np.asarray(jax.device_get(
        state["params"]["w"])))
""")


def test_kill_9_then_resume_matches_uninterrupted(tmp_path):
  script = tmp_path / "run.py"
  script.write_text(KILL_SCRIPT.format(here=str(HERE)))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  ref = tmp_path / "ref"
  subprocess.run([sys.executable, str(script), str(ref)], check=True,
                 env=env, timeout=300)
  wd = tmp_path / "killed"
  p = subprocess.Popen([sys.executable, str(script), str(wd), "slow"],
                       env=env)
  cdir = wd / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    done = [d for d in cdir.glob("*") if d.name.isdigit()] if (
        cdir.exists()) else []
    if any(int(d.name) >= 10 for d in done):
      break
    time.sleep(0.2)
  p.kill()  # SIGKILL: no chance to save
  p.wait()
  assert not (wd / "w.npy").exists()
  subprocess.run([sys.executable, str(script), str(wd)], check=True, env=env,
                 timeout=300)
  np.testing.assert_array_equal(np.load(ref / "w.npy"), np.load(wd / "w.npy"))
