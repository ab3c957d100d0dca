"""Worker for tests/test_multiprocess.py: the toy method through the shared
loop, optionally as one process of a jax.distributed run.

  python tests/mp_toy_worker.py WORKDIR [--coordinator_address=H:P
      --num_processes=N --process_id=I] [--total_steps=T] [--sleep=S]
      [--sigterm_at=STEP]

Process 0 writes ``WORKDIR/params.npz`` (final parameters, host numpy)."""
import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _predict(state, batch):
  return batch["x"] @ state["params"]["w"] + state["params"]["b"]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("workdir")
  ap.add_argument("--coordinator_address")
  ap.add_argument("--num_processes", type=int)
  ap.add_argument("--process_id", type=int)
  ap.add_argument("--total_steps", type=int, default=12)
  ap.add_argument("--sleep", type=float, default=0.0)
  ap.add_argument("--sigterm_at", type=int, default=0)
  a = ap.parse_args()
  if a.coordinator_address:
    from maskssl import distributed
    distributed.initialize(a.coordinator_address, a.num_processes,
                           a.process_id)
  import jax
  import numpy as np
  from maskssl import train as train_lib
  from toy import Toy, toy_dataset

  def hook(step, state):
    if a.sleep:
      time.sleep(a.sleep)
    if a.sigterm_at and step == a.sigterm_at and jax.process_index() == 0:
      os.kill(os.getpid(), signal.SIGTERM)  # only process 0 gets it

  lc = train_lib.LoopConfig(batch_size=32, total_steps=a.total_steps, seed=3,
                            log_every=1, checkpoint_every=4,
                            async_checkpoints=True, verbose=False)
  try:
    state, _ = train_lib.train_loop(Toy(), toy_dataset(), lc, a.workdir,
                                    hooks=[(1, hook)])
  except train_lib.Interrupted as e:
    print(f"process {jax.process_index()}: {e}", file=sys.stderr, flush=True)
    sys.exit(143)
  except Exception as e:
    from maskssl import distributed
    if distributed.is_peer_failure(e):
      distributed.exit_peer_failure(e)
    raise
  params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                        state["params"])
  # evaluator path: batched sharded inference over a split whose length is
  # not a multiple of the batch (padding), identical on every process
  from maskssl import parallel
  from maskssl.evaluators import common
  preds = common.apply_in_batches(_predict, state, toy_dataset(n=100, seed=1),
                                  24, parallel.make_mesh())
  if jax.process_index() == 0:
    np.savez(os.path.join(a.workdir, "params.npz"), preds=preds, **params)
  print(f"process {jax.process_index()} of {jax.process_count()} done, "
        f"{jax.device_count()} devices", flush=True)


if __name__ == "__main__":
  main()
