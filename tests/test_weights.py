"""Weight import against the reference implementation: torchvision itself, in a subprocess.

Debian's python3-torch / python3-torchvision (system Python) build seeded random-init ResNets
(``torchvision_reference.py``); the converted Flax models must give the same eval-mode logits and
the same BatchNorm running statistics after one train-mode forward.
"""
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from starsse_jax import models, weights

HERE = os.path.dirname(os.path.abspath(__file__))
# A Python with torch and torchvision; Debian's python3-torchvision installs them for this one.
TORCH_PYTHON = os.environ.get("STARSSE_TORCH_PYTHON", "/usr/bin/python3")
ARCHS = ("resnet18", "resnet50")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("torchvision")
  proc = subprocess.run([TORCH_PYTHON, os.path.join(HERE, "torchvision_reference.py"), str(out),
                         *ARCHS], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (
      f"{TORCH_PYTHON} could not build the torchvision reference models (install Debian's "
      f"python3-torchvision, or set STARSSE_TORCH_PYTHON):\n{proc.stderr[-2000:]}")
  return out


def _model(name, num_classes=10, stem=""):
  return models.build_model(ml_collections.ConfigDict(
      dict(name=name, dtype="float32", bn_momentum=0.9, stem=stem)), num_classes)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_model_computes_what_torchvision_computes(reference, arch):
  model = _model(arch)
  variables = weights.load(str(reference / f"{arch}.pth"), model)  # read without torch
  io = np.load(reference / f"{arch}_io.npz")
  logits = np.asarray(model.apply(variables, jnp.asarray(io["x"]), train=False))
  assert logits.shape == io["logits"].shape
  assert np.abs(logits - io["logits"]).max() <= 1e-4
  assert np.abs(io["logits"]).max() > 0.1  # the comparison is not between near-zero outputs
  # One train-mode forward: BatchNorm running statistics move exactly as torch's do (unbiased
  # variance, momentum 0.1), in every layer.
  _, updates = model.apply(variables, jnp.asarray(io["train_x"]), train=True,
                           mutable=["batch_stats"])
  after = weights.from_flax({"params": variables["params"], "batch_stats": updates["batch_stats"]})
  stats = [k[len("stats/"):] for k in io.files if k.startswith("stats/")]
  assert len(stats) == 2 * sum(1 for k in after if k.endswith("running_mean"))
  for key in stats:
    np.testing.assert_allclose(after[key], io["stats/" + key], rtol=1e-5, atol=1e-4, err_msg=key)
    assert np.abs(after[key] - weights.from_flax(variables)[key]).max() > 1e-4  # it did move


@pytest.mark.parametrize("arch", ARCHS)
def test_every_format_and_wrapping_gives_the_same_variables(reference, arch):
  model = _model(arch)
  plain = weights.load(str(reference / f"{arch}.pth"), model)
  # numpy's copy of the state_dict, and the official StarSSE checkpoints' wrapping: a dict with
  # 'state_dict' (keys prefixed 'module.'), the epoch and an argparse.Namespace.
  _assert_trees_equal(plain, weights.load(str(reference / f"{arch}.npz"), model))
  _assert_trees_equal(plain, weights.load(str(reference / f"{arch}_wrapped.pth.tar"), model))
  _assert_trees_equal(plain, weights.load(str(reference / f"{arch}_wrapped.pth.tar"), model,
                                          prefix="module.", key="state_dict"))


def test_export_import_round_trip_is_exact(reference, tmp_path):
  model = _model("resnet18")
  original = weights.read_state_dict(str(reference / "resnet18.npz"))
  variables = weights.load(str(reference / "resnet18.npz"), model)
  for name in ("back.safetensors", "back.npz"):
    weights.export(variables, str(tmp_path / name))
    _assert_trees_equal(variables, weights.load(str(tmp_path / name), model))
    exported = weights.read_state_dict(str(tmp_path / name))
    expected = {k: v for k, v in original.items() if not k.endswith("num_batches_tracked")}
    assert list(exported) == list(expected)  # torchvision's order, too
    for key, value in expected.items():
      np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_safetensors_files_agree_with_the_reference_package(tmp_path):
  st = pytest.importorskip("safetensors.numpy", reason="test dependency from requirements-test")
  rng = np.random.default_rng(0)
  tensors = {"a.weight": rng.normal(size=(3, 4, 2, 2)).astype(np.float32),
             "b.bias": rng.normal(size=5).astype(np.float16),
             "c.num_batches_tracked": np.asarray(7, np.int64)}
  st.save_file(tensors, str(tmp_path / "theirs.safetensors"))
  ours = weights.read_state_dict(str(tmp_path / "theirs.safetensors"))
  weights.write_state_dict(str(tmp_path / "ours.safetensors"), tensors)
  theirs = st.load_file(str(tmp_path / "ours.safetensors"))
  for key, value in tensors.items():
    np.testing.assert_array_equal(ours[key], value)
    np.testing.assert_array_equal(theirs[key], value)
    assert ours[key].dtype == value.dtype and theirs[key].dtype == value.dtype


def test_another_architecture_names_the_key_both_shapes_and_the_model(reference):
  with pytest.raises(weights.WeightsError,
                     match=r"layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\) in the "
                           r"checkpoint but the model needs \(64, 64, 3, 3\): the file holds "
                           r"resnet50 \(blocks \(3, 4, 6, 3\), bottleneck\)"):
    weights.load(str(reference / "resnet50.pth"), _model("resnet18"))
  with pytest.raises(weights.WeightsError, match=r"unexpected key\(s\) \['layer3\.2\.conv1"):
    weights.load(str(reference / "resnet50.pth"), _model("resnet18").clone(
        stage_sizes=(3, 4, 2, 3), bottleneck=True))  # a shallower bottleneck net
  with pytest.raises(weights.WeightsError, match=r"the checkpoint lacks \['layer1\.2\.conv1\.weight', 'layer1\.2\.bn1\.weight'"):
    weights.load(str(reference / "resnet18.pth"), _model("resnet34"))


def test_unreadable_files_are_named_with_the_fix(reference, tmp_path):
  model = _model("resnet18")
  with pytest.raises(weights.UnreadableWeightsError, match="no such file"):
    weights.load(str(tmp_path / "absent.pth"), model)
  (tmp_path / "weights.txt").write_text("not weights")
  with pytest.raises(weights.UnreadableWeightsError, match="known suffixes"):
    weights.load(str(tmp_path / "weights.txt"), model)
  raw = (reference / "resnet18.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(raw[:len(raw) // 2])
  with pytest.raises(weights.UnreadableWeightsError, match=r"cut\.pth.*truncated"):
    weights.load(str(tmp_path / "cut.pth"), model)
  weights.export(weights.load(str(reference / "resnet18.pth"), model),
                 str(tmp_path / "whole.safetensors"))
  raw = (tmp_path / "whole.safetensors").read_bytes()
  (tmp_path / "cut.safetensors").write_bytes(raw[:-1000])
  with pytest.raises(weights.UnreadableWeightsError, match=r"cut\.safetensors.*truncated"):
    weights.load(str(tmp_path / "cut.safetensors"), model)
  raw = (reference / "resnet18.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 3])
  with pytest.raises(weights.UnreadableWeightsError, match=r"cut\.npz"):
    weights.load(str(tmp_path / "cut.npz"), model)


def test_legacy_torch_format_reads_without_torch_like_the_zip_one(reference):
  """torch's own pre-1.6 format, read by the library's restricted reader (never torch.load)."""
  assert not zipfile.is_zipfile(reference / "resnet18_legacy.pth")
  _assert_trees_equal(weights.load(str(reference / "resnet18.pth"), _model("resnet18")),
                      weights.load(str(reference / "resnet18_legacy.pth"), _model("resnet18")))


def test_prefixes_and_wrappers():
  model = models.ResNet(stage_sizes=(1,), num_classes=10, width=4, stem="cifar")
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), np.zeros((1, 8, 8, 3)),
                                                  train=False))
  sd = weights.from_flax(variables)
  # MoCo: query and key encoders, an MLP projection head under fc, a queue.
  moco = {**{"module.encoder_q." + k: v for k, v in sd.items() if not k.startswith("fc.")},
          **{"module.encoder_k." + k: v + 1 for k, v in sd.items()},
          "module.encoder_q.fc.0.weight": np.zeros((16, 32), np.float32),
          "module.encoder_q.fc.0.bias": np.zeros(16, np.float32),
          "module.queue": np.zeros((16, 4), np.float32)}
  picked = weights.select(moco)
  assert set(picked) == {k for k in sd if not k.startswith("fc.")} | {"fc.0.weight", "fc.0.bias"}
  got = weights.to_flax(picked, model)
  assert models.HEAD not in got["params"]  # an MLP head is not a classifier: left out
  np.testing.assert_array_equal(got["params"]["conv1"]["kernel"],
                                variables["params"]["conv1"]["kernel"])
  k_encoder = weights.to_flax(weights.select(moco, "module.encoder_k."), model)
  np.testing.assert_array_equal(k_encoder["params"]["conv1"]["kernel"],
                                variables["params"]["conv1"]["kernel"] + 1)
  with pytest.raises(weights.WeightsError, match="no key starts with prefix 'encoder.'"):
    weights.select(moco, "encoder.")
  with pytest.raises(weights.WeightsError, match="no ResNet stem"):
    weights.select({"blocks.0.weight": np.zeros(3)})
  nested = {"epoch": 3, "checkpoint": {"model": {"x": 1}, "ema": sd}}
  with pytest.raises(weights.WeightsError, match="found no state_dict"):
    weights.formats.unwrap(nested)
  assert set(weights.formats.unwrap(nested, "checkpoint/ema")) == set(sd)
  with pytest.raises(weights.WeightsError, match="no entry 'ema2'"):
    weights.formats.unwrap(nested, "checkpoint/ema2")


def test_checkpoint_files_expands_lists_and_globs(tmp_path):
  for i in (2, 1, 3):
    (tmp_path / f"ckpt_{i}.pth.tar").write_bytes(b"x")
  files = weights.checkpoint_files(f"{tmp_path}/ckpt_*.pth.tar")
  assert [os.path.basename(f) for f in files] == ["ckpt_1.pth.tar", "ckpt_2.pth.tar",
                                                  "ckpt_3.pth.tar"]
  assert weights.checkpoint_files(f"{files[2]}, {files[0]}") == [files[2], files[0]]
  with pytest.raises(weights.UnreadableWeightsError, match="matches no file"):
    weights.checkpoint_files(f"{tmp_path}/nothing_*.pth")
  with pytest.raises(weights.UnreadableWeightsError, match="directory"):
    weights.checkpoint_files(str(tmp_path))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
