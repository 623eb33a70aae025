"""Shared fixtures: tiny configs and a small synthetic transfer split for fast unit tests."""
import atexit
import os
import shutil
import sys
import tempfile

# The suite compiles many identical programs: a fresh trainer per test, and whole runs of the
# command line in subprocesses. JAX's persistent compilation cache (read from the environment
# when jax is first imported, and inherited by the subprocesses) loads them instead of compiling
# them again. A fresh directory per session, so no test depends on an earlier session's files.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="starsse-jax-test-compilation-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from starsse_jax import configlib  # noqa: E402
from starsse_jax.data import Split, TransferData  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
TORCH_PYTHON = os.environ.get("STARSSE_TORCH_PYTHON", "/usr/bin/python3")
TIMM_DIR = os.environ.get("STARSSE_TIMM_DIR", os.path.join(REPO, ".timm"))
TIMM_MODELS = ("vit_tiny_patch16_224", "vit_small_patch16_224",
               "vit_base_patch32_clip_quickgelu_224", "swin_tiny_patch4_window7_224")


@pytest.fixture(scope="session")
def timm_reference(tmp_path_factory):
  """Files and logits of seeded random-init timm models (``timm_reference.py``), made once per
  session by Debian's torch with timm beside it (the test command installs timm in ``.timm``)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("timm")
  env = dict(os.environ, PYTHONPATH=TIMM_DIR, TIMM_FUSED_ATTN="0")
  proc = subprocess.run([TORCH_PYTHON, os.path.join(REPO, "tests", "timm_reference.py"),
                         str(out), *TIMM_MODELS], env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, (
      f"{TORCH_PYTHON} with timm from {TIMM_DIR} could not build the references (the test "
      "command installs timm there; or set STARSSE_TIMM_DIR):\n" + proc.stderr[-2000:])
  return out


def progress_lines(text: str) -> int:
  """How many progress lines (one per ``log_every_steps``) a run's log holds."""
  return sum(" step " in line and "ETA" in line for line in text.splitlines())


def tiny_config(method="starsse", members=3):
  """A configuration whose every phase runs in a few steps on a tiny model."""
  c = configlib.base_config()
  c.method = method
  c.num_members = members
  c.log_every_steps = 2
  c.model.stage_sizes = (1,)
  c.model.width = 4
  c.pretrain.epochs = 1.0
  c.pretrain.batch_size = 16
  c.pretrain.lr = 0.05
  c.finetune.epochs = 2.0
  c.finetune.batch_size = 8
  c.finetune.fge_cycle_epochs = 2
  c.eval.batch_size = 32
  c.eval.bn_batch_size = 8
  c.eval.learned_soup = False  # trained per evaluation; the tests of the learned soup turn it on
  return c


def synthetic_transfer(seed=0, n_source=64, n_train=24, n_val=16, n_test=40, size=10,
                       classes=3) -> TransferData:
  """Random images whose class shifts their brightness, so a model can learn something."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = rng.integers(0, 120, (n, size, size, 1)) + labels[:, None, None, None] * 60
    return Split(images.astype(np.uint8), labels)

  return TransferData(split(n_source), split(n_train), split(n_val), split(n_test), classes,
                      classes, mean=np.array([0.5], np.float32), std=np.array([0.3], np.float32))


@pytest.fixture
def tiny():
  return tiny_config()


@pytest.fixture
def synthetic():
  return synthetic_transfer()
