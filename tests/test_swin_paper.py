"""The paper's Swin-T configuration end to end on data shaped like CIFAR-100, from a converted
random-init Swin-T (timm's, in timm's and in Microsoft's layout), a few steps at 64 px on a CPU."""
import os

import numpy as np
import pytest

from starsse_jax.configs.paper import swin_cifar100
from experiments.paper_mock import write_mock_cifar100
from starsse_jax import api

SWIN_T = "swin_tiny_patch4_window7_224"


def _config(tmp_path, method, checkpoint):
  npz = tmp_path / "cifar100_mock.npz"
  if not npz.exists():
    write_mock_cifar100(str(npz), n_train=1700, n_test=100)
  config = swin_cifar100.get_config(method)
  config.pretrain.checkpoint = checkpoint
  config.data.target = f"npz:{npz}"
  config.data.image_size = 64  # the converted network was built for 64 px
  config.num_members = 2
  config.data.target_val_per_class = 2  # 200 validation images: the evaluation stays short
  config.finetune.batch_size = 16
  config.finetune.epochs = 0.075  # 1,500 training images, 93 steps per epoch: 7 steps
  config.finetune.warmup_epochs = 0.02  # of which 2 warm up
  config.finetune.schedule_unit = "step"  # a fraction of an epoch: per-epoch stepping is flat
  config.log_every_steps = 2
  config.eval.batch_size = 50
  config.eval.bn_batch_size = 50
  config.eval.learned_soup = False
  return config


def test_global_de_takes_several_swin_files_in_either_layout(timm_reference, tmp_path):
  files = [timm_reference / f"{SWIN_T}_at64.pth", timm_reference / f"{SWIN_T}_at64_microsoft.pth"]
  config = _config(tmp_path, "global_de", ",".join(map(str, files)))
  data = api.load_transfer_data(config)
  stacked = api.import_checkpoints(config, data)
  kernel = stacked["params"]["layers_1"]["downsample"]["reduction"]["kernel"]
  assert kernel.shape == (2, 384, 192)  # both files' merging weights, none lost to the layout
  np.testing.assert_array_equal(kernel[0], kernel[1])
  assert stacked["params"]["layers_3"]["blocks_1"]["attn"]["relative_position_bias_table"].shape \
      == (2, 9, 24)  # the last stage's 2 x 2 map is its own window at 64 px


@pytest.mark.slow
def test_swin_paper_config_runs_end_to_end(timm_reference, tmp_path):
  config = _config(tmp_path, "starsse", str(timm_reference / f"{SWIN_T}_at64.pth"))
  results = api.run(config, str(tmp_path / "run"))
  assert results["config"]["model"]["name"] == SWIN_T
  assert [p["name"] for p in results["phases"]] == ["finetune", "star_branches"]
  assert results["phases"][0]["steps"] == 7
  test = results["test"]
  assert len(test["members"]) == 2
  assert np.isfinite(test["ensemble"]["nll"]) and 0 <= test["ensemble"]["accuracy"] <= 1
  assert "uniform" in results["soups"]
  # The recipe reached the step: a warm-up from 5e-7 to 1e-4, then cosine; the cycle without.
  history = results["phases"][0]["history"]
  assert history and all(np.isfinite(v) for row in history for k, v in row.items()
                         if k.startswith("loss/"))
  for path in ("results.json", "ensemble_size.png"):
    assert os.path.exists(tmp_path / "run" / path)
