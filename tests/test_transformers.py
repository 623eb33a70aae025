"""ViTs and Swins against the reference implementation: timm itself, in a subprocess.

Debian's python3-torch with timm installed beside it (the test command installs timm with
``--no-deps`` into ``.timm``) builds seeded random-init models (``timm_reference.py``), and writes
the same weights in Microsoft's Swin layout and OpenAI's CLIP layout (checked there against timm's
own converters); the converted Flax models must give the same eval-mode logits.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TIMM_MODELS
from starsse_jax import weights
from starsse_jax.models import swin, vit
from starsse_jax.weights import families, formats, timm_layout
from starsse_jax.weights.errors import WeightsError

SWIN_T = "swin_tiny_patch4_window7_224"
CLIP = "vit_base_patch32_clip_quickgelu_224"
NAMES = TIMM_MODELS


@pytest.fixture
def reference(timm_reference):
  return timm_reference


def _build(name):
  return swin.build_swin(name, 10) if name.startswith("swin") else vit.build_vit(name, 10)


def _logits(model, variables, x):
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, jnp.asarray(x)))


CASES = [(n, "") for n in NAMES] + [(SWIN_T, "_microsoft"), (CLIP, "_openai")]


@pytest.mark.parametrize("name,layout", CASES)
def test_converted_model_computes_what_timm_computes(reference, name, layout):
  model = _build(name)
  variables = weights.load(str(reference / f"{name}{layout}.pth"), model)
  io = np.load(reference / f"{name}_io.npz")
  logits = _logits(model, variables, io["x"])
  assert logits.shape == io["logits"].shape == (2, 10)
  assert np.abs(logits - io["logits"]).max() <= 1e-4
  assert np.abs(io["logits"]).max() > 0.1  # not a comparison of near-zero outputs


@pytest.mark.parametrize("name", NAMES)
def test_export_then_import_is_exact(reference, name, tmp_path):
  model = _build(name)
  state_dict = formats.read_state_dict(str(reference / f"{name}.pth"))
  variables = weights.load(str(reference / f"{name}.pth"), model)
  family = "swin" if name.startswith("swin") else "vit"
  exported = timm_layout.from_flax(variables, family)
  assert set(exported) == set(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  weights.export(variables, str(tmp_path / "again.safetensors"), model)
  again = weights.load(str(tmp_path / "again.safetensors"), model)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


@pytest.mark.parametrize("size", [160, 288])
def test_vit_position_embedding_is_resampled_as_timm_does(reference, size):
  model = _build("vit_tiny_patch16_224")
  variables = weights.load(str(reference / "vit_tiny_patch16_224.pth"), model, image_size=size)
  assert variables["params"]["pos_embed"].shape == (1, 1 + (size // 16) ** 2, 192)
  io = np.load(reference / f"vit_tiny_patch16_224_at{size}_io.npz")
  assert np.abs(_logits(model, variables, io["x"]) - io["logits"]).max() <= 1e-4


def test_swin_on_small_images_pads_and_clamps_windows_as_timm(reference):
  model = _build(SWIN_T)  # 64 px: maps 16, 8, 4, 2; windows 7 (padded to 21), 7, 4, 2
  variables = weights.load(str(reference / f"{SWIN_T}_at64.pth"), model, image_size=64)
  io = np.load(reference / f"{SWIN_T}_at64_io.npz")
  assert np.abs(_logits(model, variables, io["x"]) - io["logits"]).max() <= 1e-4


def test_layouts_are_identified(reference):
  read = lambda f: formats.read_state_dict(str(reference / f))
  assert families.identify(read(f"{SWIN_T}.pth")) == "Swin-T (window 7), timm 0.9+ layout"
  assert families.identify(read(f"{SWIN_T}_microsoft.pth")) == (
      "Swin-T (window 7), Microsoft layout")
  assert families.identify(read("vit_small_patch16_224.pth")) == (
      "ViT-S/16 (depth 12, 14x14 patches), timm layout")
  assert families.identify(read(f"{CLIP}_openai.pth")) == (
      "ViT-B/32 (depth 12, 7x7 patches, CLIP image tower), OpenAI layout")


def test_a_file_of_another_family_or_size_is_one_clear_error(reference):
  with pytest.raises(WeightsError, match=r"vit_small_patch16_224\.pth: cls_token has shape "
                     r"\(1, 1, 384\).*needs \(1, 1, 192\).*ViT-S/16"):
    weights.load(str(reference / "vit_small_patch16_224.pth"), _build("vit_tiny_patch16_224"))
  with pytest.raises(WeightsError, match=r"holds ViT-Ti/16 .*timm layout, but the model is a "
                     r"Swin .*config\.model\.name"):
    weights.load(str(reference / "vit_tiny_patch16_224.pth"), _build(SWIN_T))
  with pytest.raises(WeightsError, match=r"holds Swin-T \(window 7\), Microsoft layout, but the "
                     r"model is a ResNet"):
    from starsse_jax.models import ResNet
    weights.load(str(reference / f"{SWIN_T}_microsoft.pth"), ResNet((1, 1), 10))
  with pytest.raises(WeightsError, match=r"relative_position_bias_table has shape \(169, 12\).*"
                     r"needs \(49, 12\).*another window size.*image_size"):
    weights.load(str(reference / f"{SWIN_T}.pth"), _build(SWIN_T), image_size=64)


def test_swin_constants_are_built_not_read():
  index = swin.relative_position_index(2, 2)  # offsets (dh, dw) in {-1, 0, 1}^2 -> 0..8
  np.testing.assert_array_equal(index, [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
  mask = swin.attention_mask(4, 4, (2, 2), (1, 1))  # the last window holds four regions
  assert mask.shape == (4, 4, 4)
  assert (mask[0] == 0).all() and (mask[3] != 0).sum() == 12
  assert set(np.unique(mask)) == {0.0, -100.0}


def test_image_size_must_be_a_multiple_of_the_patch():
  model = vit.build_vit("vit_tiny_patch16_224", 10)
  with pytest.raises(ValueError, match=r"not divisible by the patch size 16"):
    model.init(jax.random.key(0), np.zeros((1, 40, 40, 3), np.float32))
  with pytest.raises(ValueError, match=r"not divisible by the patch size 4"):
    _build(SWIN_T).init(jax.random.key(0), np.zeros((1, 30, 30, 3), np.float32))
  with pytest.raises(ValueError, match="Unknown ViT 'vit_huge'"):
    vit.build_vit("vit_huge", 10)


def test_drop_path_is_random_in_training_only():
  model = vit.ViT(patch=4, width=16, depth=2, heads=2, num_classes=3, drop_path_rate=0.5)
  x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  evals = [model.apply(variables, x, train=False) for _ in range(2)]
  np.testing.assert_array_equal(evals[0], evals[1])
  train = lambda k: model.apply(variables, x, train=True, rngs={"drop_path": jax.random.key(k)})
  assert not np.allclose(train(1), evals[0])
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), train(2))


def test_bf16_compute_keeps_float32_master_weights(reference):
  model = swin.build_swin(SWIN_T, 10, dtype=jnp.bfloat16)
  variables = weights.load(str(reference / f"{SWIN_T}.pth"), model)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
  io = np.load(reference / f"{SWIN_T}_io.npz")
  logits = _logits(model, variables, io["x"])
  assert logits.dtype == np.float32
  assert np.abs(logits - io["logits"]).max() < 0.1  # bf16 activations: close, not exact
