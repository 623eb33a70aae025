"""Members and batches spread over 8 (forced host) devices train like one device."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # minutes: `pytest -m "not slow"` leaves it out


def test_eight_devices_match_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "multidevice_check.py")],
                       cwd=os.path.join(REPO, "tests"), env=env, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
  result = json.loads(line[len("RESULT "):])
  # K=8: one member per device. K=4: 4 members x 2 data shards (BatchNorm synchronised).
  # K=1: one member over 8 data shards. SWA: 4 averaging members on 4 x 2 devices.
  for key in ("k8", "k4", "k1", "swa_k5"):
    assert result[key]["params"] < 1e-4, result
    assert result[key]["batch_stats"] < 1e-4, result
  assert "batch size 12 is not divisible by 8" in result["k3_error"]
