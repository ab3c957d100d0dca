"""Command line: overrides, and each bad input fails fast with a clear
message (before any compute)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "sma_particle.py")


def _main(*args, tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return subprocess.run(
      [sys.executable, "-m", "maskssl.main", f"--config={CONFIG}:quick",
       f"--workdir={tmp_path / 'run'}", *args],
      capture_output=True, text=True, timeout=180, env=env, cwd=REPO)


def test_misspelled_key_is_named_with_suggestion(tmp_path):
  p = _main("--config.optim.lrr=0.1", tmp_path=tmp_path)
  assert p.returncode == 2
  assert "unknown config key 'optim.lrr'" in p.stderr
  assert "optim.lr" in p.stderr  # the suggestion
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_batch_not_divisible_by_devices(tmp_path):
  p = _main("--config.batch_size=100", tmp_path=tmp_path)
  assert p.returncode == 2
  assert "batch_size=100 is not divisible by the 8 devices" in p.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_csv_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("\n".join([",".join(["0.1"] * 29)] * 3 + ["1,2"]) + "\n")
  p = _main(f"--config.data.path={bad}", tmp_path=tmp_path)
  assert p.returncode == 2
  assert f"{bad}:4: expected 29 comma-separated columns" in p.stderr


def test_empty_csv(tmp_path):
  empty = tmp_path / "empty.csv"
  empty.write_text("")
  p = _main(f"--config.data.path={empty}", tmp_path=tmp_path)
  assert p.returncode == 2 and "no data rows" in p.stderr


def test_evaluate_without_checkpoint_is_clear(tmp_path):
  p = _main("--mode=evaluate", tmp_path=tmp_path)
  assert p.returncode == 2 and "no checkpoints directory" in p.stderr


def test_overrides_reach_the_run_config(tmp_path):
  import json
  p = _main("--config.total_steps=0", "--config.evals.finetune.enabled=False",
            "--config.mask.mask_mode=random", "--config.model.self_heads=4",
            tmp_path=tmp_path)
  assert p.returncode == 0, p.stderr
  cfg = json.loads((tmp_path / "run" / "config.json").read_text())
  assert cfg["mask"]["mask_mode"] == "random"
  assert cfg["model"]["self_heads"] == 4
  assert cfg["total_steps"] == 0


def test_cpu_device_count_rules():
  from maskssl.parallel import cpu_device_count
  assert cpu_device_count("auto", [256], cores=2) == 2
  assert cpu_device_count("auto", [256], cores=16) == 16
  assert cpu_device_count("auto", [6], cores=4) == 3      # divides the batch
  assert cpu_device_count("auto", [7], cores=2) == 1
  assert cpu_device_count("off", [256], cores=8) == 1
  assert cpu_device_count("3", [256], cores=2) == 3        # explicit wins
  with pytest.raises(ValueError):
    cpu_device_count("-1", [], cores=2)


def test_cpu_devices_auto_splits_the_host_in_a_fresh_process():
  """Without XLA_FLAGS, configure_cpu_devices('auto') gives one XLA:CPU
  device per core (capped to divide the batch) and the batch shards."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  code = (
      "import os\n"
      "from maskssl import parallel\n"
      "n = parallel.configure_cpu_devices('auto', [12])\n"
      "import jax\n"
      "cores = len(os.sched_getaffinity(0))\n"
      "want = max(d for d in range(1, min(cores, 12) + 1) if 12 % d == 0)\n"
      "assert jax.device_count() == want, (jax.device_count(), want)\n"
      "m = parallel.make_mesh()\n"
      "x = jax.device_put(jax.numpy.zeros((12, 3)), parallel.batch_sharding(m))\n"
      "assert len(x.addressable_shards) == want\n"
      "if want > 1:  # a starved device thread must not abort the run\n"
      "  assert '--xla_cpu_collective_call_terminate_timeout_seconds=3600' \\\n"
      "      in os.environ['XLA_FLAGS'], os.environ['XLA_FLAGS']\n"
      "print('OK', want)\n")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                     text=True, timeout=120, env=env, cwd=REPO)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.startswith("OK")
