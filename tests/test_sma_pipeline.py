"""SMA through the shared loop: 8-device sharded step == 1-device step,
FSDP param sharding, and the whole pipeline (pretrain -> fine-tune ->
evaluate-only restore) on a tiny budget."""
import copy
import json
import os

import jax
import numpy as np
import pytest

from maskssl import parallel
from maskssl import run as run_lib
from maskssl import train as train_lib
from maskssl.data import load_split
from maskssl.methods import get_method
from sma_tiny import tiny_sma_particle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**kw):
  c = tiny_sma_particle(width=32, heads=4, batch_size=32, total_steps=6,
                        log_every=3, checkpoint_every=3)
  c.evals.finetune.num_labels = (64,)
  c.evals.finetune.batch_size = 32
  c.evals.finetune.total_steps = 4
  c.evals.finetune.eval_every = 2
  c.evals.finetune.verbose = False
  for k, v in kw.items():
    c[k] = v
  return c


def _one_step(config, mesh):
  method = get_method(config)
  ds = load_split(config.data, "pretrain")
  lc = train_lib.loop_config(config, len(ds), verbose=False,
                             fsdp=config.parallel.fsdp,
                             fsdp_min_size=config.parallel.fsdp_min_size)
  batch = ds.batch(np.arange(config.batch_size))
  state, shardings = train_lib.init_state(method, batch, lc, mesh)
  step = train_lib.make_step_fn(method, lc.seed, shardings, mesh)
  state, m = step(state, parallel.global_batch(batch, mesh))
  state, m = step(state, parallel.global_batch(
      ds.batch(np.arange(config.batch_size, 2 * config.batch_size)), mesh))
  return jax.device_get(state["params"]), jax.device_get(m), state


@pytest.mark.parametrize("fsdp", [False, True])
def test_sharded_step_matches_single_device(fsdp):
  assert len(jax.devices()) == 8
  c = tiny_config()
  c.parallel.fsdp = fsdp
  c.parallel.fsdp_min_size = 256
  p8, m8, state8 = _one_step(c, parallel.make_mesh())
  p1, m1, _ = _one_step(c, parallel.make_mesh(jax.devices()[:1]))
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  if fsdp:  # big kernels really are split over the 8 devices
    specs = [x.sharding.spec for x in jax.tree.leaves(state8["params"])
             if x.size >= 256]
    assert specs and all(parallel.DATA_AXIS in tuple(s) for s in specs)


def test_pipeline_pretrain_finetune_and_evaluate_only(tmp_path):
  c = tiny_config()
  wd = str(tmp_path / "run")
  summary = run_lib.train_and_evaluate(c, wd)
  assert summary["pretrain"]["final_step"] == 6
  ft = summary["evals"]["finetune"]
  for init in ("pretrained", "scratch"):
    acc = ft[f"n64/{init}/best_accuracy"]
    auc = ft[f"n64/{init}/best_auc"]
    assert 0.0 <= acc <= 1.0 and 0.0 <= auc <= 1.0
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [l["step"] for l in lines if l["stage"] == "pretrain"] == [1, 3, 6]
  assert all(np.isfinite(l["loss"]) for l in lines
             if l["stage"] == "pretrain")
  # strict JSON: the first line's undefined rate is null, not NaN
  for raw in open(os.path.join(wd, "metrics.jsonl")):
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
  tags = _tensorboard_tags(os.path.join(wd, "tb"))
  if tags is not None:  # tensorboardX installed: training and evaluation
    assert "pretrain/loss" in tags and "pretrain/grad_norm" in tags
    assert any(t.startswith("eval/finetune/") for t in tags)
  # evaluate-only restores the same checkpoint and gives the same numbers
  again = run_lib.evaluate(c, wd)
  assert again["finetune"] == pytest.approx(ft)
  method, state, step = run_lib.restore_state(c, wd, step=3)
  assert step == 3 and int(state["step"]) == 3


def _tensorboard_tags(logdir):
  """Scalar tags of every event file under ``logdir``; None without
  tensorboardX (then no event files are expected)."""
  try:
    from tensorboardX.proto import event_pb2
  except ImportError:
    return None
  import glob
  import struct
  tags = set()
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos + 12 <= len(data):  # TFRecord: len, crc, payload, crc
      n = struct.unpack("<Q", data[pos:pos + 8])[0]
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      tags |= {v.tag for v in ev.summary.value}
      pos += 12 + n + 4
  return tags


def test_resume_of_sma_run_is_bit_exact(tmp_path):
  c = tiny_config()
  c.evals.finetune.enabled = False
  ref = run_lib.train_and_evaluate(copy.deepcopy(c), str(tmp_path / "a"))
  short = copy.deepcopy(c)
  wd = str(tmp_path / "b")
  # an interrupted run: the first 3 steps, then the same command again
  method = get_method(short)
  ds = load_split(short.data, "pretrain")
  lc = train_lib.loop_config(short, len(ds), verbose=False)
  lc_short = train_lib.LoopConfig(**{**lc.__dict__, "total_steps": 3})
  train_lib.train_loop(method, ds, lc_short, wd)
  resumed = run_lib.train_and_evaluate(copy.deepcopy(c), wd)
  assert resumed["pretrain"]["start_step"] == 3
  _, sa, _ = run_lib.restore_state(c, str(tmp_path / "a"))
  _, sb, _ = run_lib.restore_state(c, wd)
  for a, b in zip(jax.tree.leaves(jax.device_get(sa)),
                  jax.tree.leaves(jax.device_get(sb))):
    np.testing.assert_array_equal(a, b)
  assert ref["pretrain"]["loss"] == resumed["pretrain"]["loss"]
