"""Test setup: 8 virtual CPU devices, shared-data lookup that skips cleanly."""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir() -> pathlib.Path:
  """``../shared/data`` beside the checkout (or $MASKSSL_SHARED_DATA)."""
  env = os.environ.get("MASKSSL_SHARED_DATA")
  return pathlib.Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """Path to the shared data sets; skips the test when they are absent."""
  d = shared_data_dir()
  if not d.is_dir():
    pytest.skip(f"shared data not found at {d}")
  return d
