r"""maskssl command line: pretrain -> evaluate, resumable, from a config file.

  python -m maskssl.main --config=configs/sma_particle.py            # full
  python -m maskssl.main --config=configs/sma_particle.py:quick      # minutes
  python -m maskssl.main --config=configs/sma_particle.py \
      --config.batch_size=128 --workdir=runs/my_run                   # overrides
  python -m maskssl.main --config=... --mode=evaluate --workdir=runs/my_run \
      [--step=N]                                                      # eval only

Rerunning the same command with the same --workdir resumes from the newest
checkpoint (SIGTERM / Ctrl-C save first). Without --workdir a directory
under ./runs/ named after the config is used (and printed).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':variant' (e.g. :quick).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics.jsonl, results). "
    "Default: ./runs/<config name>[_<variant>].")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "evaluate"],
    "train: pretrain (resuming if possible) then run the evaluators; "
    "evaluate: restore a checkpoint and run the evaluators only.")
_STEP = flags.DEFINE_integer(
    "step", None, "With --mode=evaluate: checkpoint step (default latest).")
_COORD = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-host: host:port of process 0 for jax.distributed.initialize "
    "(auto-detected on Cloud TPU / SLURM when --multihost is set).")
_NPROC = flags.DEFINE_integer("num_processes", None, "Multi-host: count.")
_PID = flags.DEFINE_integer("process_id", None, "Multi-host: this process.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (auto-detect).")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", None,
    "CPU backend only: split the host into this many XLA:CPU devices, the "
    "batch data-parallel across them. 'auto' = one per core (reduced to "
    "divide config.batch_size), 'off' = one device with intra-op threads. "
    "Default: config.cpu_devices if the config has it, else 'off' (small "
    "models such as SMA run faster with 'auto'; models with many parameters "
    "pay for the replicated update and gradient all-reduce). Ignored when "
    "XLA_FLAGS sets --xla_force_host_platform_device_count.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", None, "Multi-host: seconds without heartbeats "
    "after which a process counts as dead and the others are stopped "
    "(default $MASKSSL_HEARTBEAT_TIMEOUT or 60).")


def default_workdir(config_arg: str) -> str:
  path, _, variant = (config_arg or "config").partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("runs", name + (f"_{variant}" if variant else ""))


def _parse_flags(argv):
  """absl flag parsing with a readable error for unknown config keys."""
  from maskssl.config_utils import unknown_override_message
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    # An override names a key the config does not have: load the config
    # alone to name the key and suggest close ones.
    cfg_arg = next((a.split("=", 1)[1] for a in argv
                    if a.startswith("--config=")), None)
    msg = None
    if cfg_arg:
      from maskssl.config_utils import load_config_file
      try:
        msg = unknown_override_message(load_config_file(cfg_arg), argv)
      except Exception:  # the original error is reported below
        msg = None
    print(f"error: {msg or e}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  del argv
  from absl import logging as absl_logging
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. "
                         "--config=configs/sma_particle.py:quick")
  multihost = _MULTIHOST.value or _COORD.value
  from maskssl import parallel
  from maskssl import train as train_lib
  try:
    rc = train_lib.run_config(_CONFIG.value)   # unknown top-level keys too
    cpu_devices = _CPU_DEVICES.value
    if cpu_devices is None:
      cpu_devices = rc.cpu_devices
    parallel.configure_cpu_devices(cpu_devices, [rc.batch_size])
  except ValueError as e:
    raise app.UsageError(str(e))
  if multihost:
    from maskssl import distributed
    distributed.initialize(_COORD.value, _NPROC.value, _PID.value,
                           heartbeat_timeout=_HEARTBEAT.value)
  from maskssl import run as run_lib
  config_arg = flags.FLAGS["config"].serialize().split("=", 1)[-1]
  workdir = _WORKDIR.value or default_workdir(config_arg)
  if _WORKDIR.value is None:
    print(f"no --workdir given: using {os.path.abspath(workdir)}",
          flush=True)
  try:
    if _MODE.value == "train":
      run_lib.train_and_evaluate(_CONFIG.value, workdir)
    else:
      run_lib.evaluate(_CONFIG.value, workdir, step=_STEP.value)
  except run_lib.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except run_lib.Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(130 if e.signal_name == "SIGINT" else 143)
  except Exception as e:  # a dead peer: fail fast instead of hanging
    from maskssl import distributed
    if distributed.is_peer_failure(e):
      distributed.exit_peer_failure(e)
    raise


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
