"""ViTs against the reference implementation: timm itself, in a subprocess.

Debian's python3-torch with timm installed beside it (the test command installs timm with
``--no-deps`` into ``.timm``) builds seeded random-init ViTs (``timm_reference.py``); the
converted Flax models must give the same eval-mode logits.
"""
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from starsse_jax.models import vit
from starsse_jax.weights import formats, vit_layout
from starsse_jax.weights.errors import WeightsError

TORCH_PYTHON = os.environ.get("STARSSE_TORCH_PYTHON", "/usr/bin/python3")
TIMM_DIR = os.environ.get("STARSSE_TIMM_DIR", os.path.join(REPO, ".timm"))
NAMES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch32_clip_quickgelu_224")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("timm")
  env = dict(os.environ, PYTHONPATH=TIMM_DIR, TIMM_FUSED_ATTN="0")
  proc = subprocess.run([TORCH_PYTHON, os.path.join(REPO, "tests", "timm_reference.py"),
                         str(out), *NAMES], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (
      f"{TORCH_PYTHON} with timm from {TIMM_DIR} could not build the references (the test "
      "command installs timm there; or set STARSSE_TIMM_DIR):\n" + proc.stderr[-2000:])
  return out


def _load(reference, name, model_name=None):
  model = vit.build_vit(model_name or name, 10)
  state_dict = formats.read_state_dict(str(reference / f"{name}.pth"))
  return model, state_dict, vit_layout.to_flax(state_dict, model, 224, path=f"{name}.pth")


@pytest.mark.parametrize("name", NAMES)
def test_converted_vit_computes_what_timm_computes(reference, name):
  model, state_dict, variables = _load(reference, name)
  io = np.load(reference / f"{name}_io.npz")
  logits = np.asarray(jax.jit(model.apply)(variables, jnp.asarray(io["x"])))
  assert logits.shape == io["logits"].shape == (2, 10)
  assert np.abs(logits - io["logits"]).max() <= 1e-4
  assert np.abs(io["logits"]).max() > 0.1  # not a comparison of near-zero outputs
  exported = vit_layout.from_flax(variables)  # export then import is exact
  assert set(exported) == set(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_a_vit_of_another_size_is_refused_naming_the_key(reference):
  with pytest.raises(WeightsError, match=r"vit_small_patch16_224\.pth: cls_token has shape "
                     r"\(1, 1, 384\).*needs \(1, 1, 192\).*another size"):
    _load(reference, "vit_small_patch16_224", "vit_tiny_patch16_224")


def test_image_size_must_be_a_multiple_of_the_patch():
  model = vit.build_vit("vit_tiny_patch16_224", 10)
  with pytest.raises(ValueError, match=r"not divisible by the patch size 16"):
    model.init(jax.random.key(0), np.zeros((1, 40, 40, 3), np.float32))
  with pytest.raises(ValueError, match="Unknown ViT 'vit_huge'"):
    vit.build_vit("vit_huge", 10)
