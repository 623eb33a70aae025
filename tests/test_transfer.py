"""Fine-tuning from imported weights on a whole target dataset: the API, the CLI, the errors."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from starsse_jax import api, configlib, data, members, models, weights


def _arrays(seed=0, n_train=48, n_test=18, size=12, classes=3):
  rng = np.random.default_rng(seed)
  labels = np.arange(n_train) % classes
  test_labels = np.arange(n_test) % classes
  images = lambda lab: (rng.integers(0, 120, (len(lab), size, size, 3)) +
                        lab[:, None, None, None] * 60).astype(np.uint8)
  return images(labels), labels, images(test_labels), test_labels


def _export_checkpoints(config, directory, count=1, num_classes=7):
  """Random-init networks of ``config.model`` in torchvision layout, as a user's .safetensors."""
  model = models.build_model(config.model, num_classes)
  paths = []
  for k in range(count):
    variables = model.init(jax.random.key(100 + k), np.zeros((1, 12, 12, 3)), train=False)
    variables = jax.tree.map(np.asarray, dict(variables))
    # A pre-trained network's BatchNorm statistics are not the init's ones and zeros.
    variables["batch_stats"] = jax.tree.map(lambda s: s + 0.1 * (k + 1),
                                            variables["batch_stats"])
    paths.append(os.path.join(directory, f"ckpt_{k}.safetensors"))
    weights.export(variables, paths[-1])
  return paths


def _config(method, checkpoint, members=3):
  config = tiny_config(method, members)
  config.pretrain.checkpoint = checkpoint
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 4
  return config


def test_run_from_arrays_and_a_checkpoint_trains_no_source_model(tmp_path):
  config = _config("starsse", "")
  path, = _export_checkpoints(config, tmp_path)
  config.pretrain.checkpoint = path
  arrays = _arrays()
  d = data.from_arrays(config, *arrays)
  imported = api.import_checkpoints(config, d)
  body = weights.load(path, models.build_model(config.model, 3))
  np.testing.assert_array_equal(imported["params"]["conv1"]["kernel"][0],
                                body["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(imported["batch_stats"]["bn1"]["var"][0],
                                body["batch_stats"]["bn1"]["var"])
  assert models.HEAD not in imported["params"]  # every member gets a fresh head
  results = api.run(config, str(tmp_path / "run"), data=arrays)
  assert results["member_names"] == ["finetune[0]", "star_branches[0]", "star_branches[1]"]
  assert not (tmp_path / "run" / "pretrained").exists()
  assert results["timing"]["pretrain_s"] < 30  # an import, not a training run
  assert np.isfinite(results["test"]["ensemble"]["nll"])


def test_global_de_takes_one_file_per_member_in_glob_order(tmp_path):
  config = _config("global_de", "", members=3)
  paths = _export_checkpoints(config, tmp_path, count=3)
  config.pretrain.checkpoint = str(tmp_path / "ckpt_*.safetensors")
  d = data.from_arrays(config, *_arrays())
  imported = api.import_checkpoints(config, d)
  assert members.num_members(imported) == 3
  for k, path in enumerate(paths):
    np.testing.assert_array_equal(imported["batch_stats"]["bn1"]["mean"][k],
                                  weights.load(path, models.build_model(config.model, 3))
                                  ["batch_stats"]["bn1"]["mean"])
  ens = api.finetune(config, d, imported)
  assert ens.num_members == 3


def test_bad_checkpoint_settings_stop_before_any_data_or_training(tmp_path):
  config = _config("global_de", str(tmp_path / "one.safetensors"))
  config.data.target = "npz:target.npz"
  with pytest.raises(weights.UnreadableWeightsError, match="no such file"):
    configlib.validate(config)
  _export_checkpoints(config, tmp_path)
  config.pretrain.checkpoint = str(tmp_path / "ckpt_0.safetensors")
  with pytest.raises(ValueError, match="needs 3 pre-trained checkpoints; pretrain.checkpoint "
                                       "names 1"):
    configlib.validate(config)
  config = tiny_config()
  config.data.target = "npz:x.npz"
  with pytest.raises(ValueError, match="no source task .* set pretrain.checkpoint"):
    configlib.validate(config)
  config.data.target = "hub:resnet"
  with pytest.raises(ValueError, match="unknown source 'hub'"):
    configlib.validate(config)
  # Weights of another width: the first mismatching key and both shapes, before training.
  config = _config("starsse", str(tmp_path / "ckpt_0.safetensors"))
  config.model.width = 6
  with pytest.raises(weights.WeightsError, match=r"conv1\.weight has shape \(4, 3, 3, 3\) in the "
                                                 r"checkpoint but the model needs \(6, 3, 3, 3\)"):
    api.run(config, str(tmp_path / "w"), data=_arrays())
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_checkpoint_dir_with_other_files_is_not_trained_into(tmp_path, synthetic):
  config = tiny_config()
  (tmp_path / "weights").mkdir()
  (tmp_path / "weights" / "resnet50.pth").write_bytes(b"x")
  config.pretrain.checkpoint_dir = str(tmp_path / "weights")
  with pytest.raises(ValueError, match="not empty but holds no checkpoint of this library.*"
                                       "use pretrain.checkpoint"):
    api.pretrain(config, synthetic, str(tmp_path))
  assert os.listdir(tmp_path / "weights") == ["resnet50.pth"]
  config.pretrain.checkpoint_dir = str(tmp_path / "weights" / "resnet50.pth")
  with pytest.raises(ValueError, match="is a file.*set pretrain.checkpoint"):
    api.pretrain(config, synthetic, str(tmp_path))


def test_command_line_fine_tunes_an_imported_checkpoint_on_an_npz(tmp_path):
  config = tiny_config()
  config.model.width = 4
  path, = _export_checkpoints(config, tmp_path)
  np.savez(tmp_path / "target.npz", **dict(zip(
      ("train_images", "train_labels", "test_images", "test_labels"), _arrays())))
  run = subprocess.run(
      [sys.executable, "-m", "starsse_jax.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path / 'run'}", "--config.model.width=4", "--config.model.stage_sizes=(1,)",
       f"--config.pretrain.checkpoint={path}", f"--config.data.target=npz:{tmp_path}/target.npz",
       "--config.data.target_train_per_class=0", "--config.data.target_val_per_class=4"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"Imported {path}" in run.stderr and "Pre-training" not in run.stderr
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert len(results["member_names"]) == 3
  assert "| ensemble of 3 (starsse) |" in run.stdout
