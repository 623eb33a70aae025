import glob
import os

import pytest
from ml_collections import config_flags  # noqa: F401  (config files are loaded as the CLI does)

from conftest import REPO, tiny_config
from starsse_jax import configlib, sweep


def _load(path):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                                         if not os.path.basename(p).startswith("_")))
def test_every_config_file_validates_and_documents_its_command(path, tmp_path):
  name = os.path.basename(path)[:-3]
  module = _load(path)
  config = module.get_config()
  if getattr(module, "NEEDS_WEIGHTS", False):  # refused until weights are named, then valid
    with pytest.raises(ValueError, match="set pretrain.checkpoint"):
      configlib.validate(config)
    (tmp_path / "weights.npz").write_bytes(b"x")
    config.pretrain.checkpoint = str(tmp_path / "weights.npz")
  configlib.validate(config)
  if "sweep" in config:
    sweep.validate(config)
    assert f"python projects/starsse_paper/sweep.py --config={name} " in module.__doc__
  else:
    assert f"python -m starsse_jax.main --config={name} " in module.__doc__


@pytest.mark.parametrize("field,value,message", [
    ("method", "snapshot", "method='snapshot' is unknown"),
    ("num_members", 0, "needs at least 1 member"),
    ("finetune.lr", 0.0, "finetune.lr=0.0 must be positive"),
    ("finetune.lr", -0.1, "finetune.lr=-0.1 must be positive"),
    ("finetune.lr_ratio", 0.0, "finetune.lr_ratio=0.0 must be positive"),
    ("finetune.cycle_ratio", -1.0, "finetune.cycle_ratio=-1.0 must be positive"),
    ("finetune.epochs", 0.0, "finetune.epochs=0.0 must be positive"),
    ("pretrain.batch_size", 0, "pretrain.batch_size=0 must be positive"),
    ("model.name", "vgg", "model.name='vgg' is unknown"),
    ("finetune.optimizer", "adam", "finetune.optimizer='adam'; choose one of"),
    ("pretrain.schedule_unit", "batch", "pretrain.schedule_unit='batch'; use 'step' or 'epoch'"),
    ("finetune.warmup_epochs", 50.0, "warmup_epochs=50 must be shorter than finetune.epochs="),
    ("finetune.label_smoothing", 1.0, "label_smoothing=1.0 must lie in"),
    ("finetune.mixup_alpha", -0.2, "mixup_alpha and finetune.cutmix_alpha must not be negative"),
    ("finetune.random_erase_prob", 1.5, "random_erase_prob=1.5 must lie in"),
    ("finetune.grad_clip_norm", -1.0, "grad_clip_norm=-1.0"),
    ("model.drop_path_rate", 1.0, "model.drop_path_rate=1.0 must lie in"),
    ("execution.member_strategy", "pmap", "member_strategy='pmap'"),
    ("finetune.momentum", 1.0, "must lie in"),
])
def test_bad_values_are_named(field, value, message):
  config = tiny_config()
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    configlib.validate(config)


@pytest.mark.parametrize("settings,message", [
    (dict(num_processes=2), "execution.num_processes is set but execution.distributed is False"),
    (dict(distributed=True, coordinator_address="10.0.0.1:1234"),
     "also give execution.num_processes"),
    (dict(distributed=True, coordinator_address="10.0.0.1:1234", num_processes=2, process_id=2),
     "process_id=2 but execution.num_processes=2"),
    (dict(distributed=True, initialization_timeout_s=0), "initialization_timeout_s=0"),
])
def test_bad_process_settings_are_named(settings, message):
  config = tiny_config()
  config.execution.update(settings)
  with pytest.raises(ValueError, match=message):
    configlib.validate(config)
  good = tiny_config()
  good.execution.update(distributed=True, coordinator_address="10.0.0.1:1234", num_processes=2,
                        process_id=1)
  configlib.validate(good)


def test_global_de_needs_a_checkpoint_per_member():
  config = tiny_config("global_de", members=3)
  with pytest.raises(ValueError, match="needs pretrain.num_checkpoints >= 3"):
    configlib.validate(config)
  config.pretrain.num_checkpoints = 3
  configlib.validate(config)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "paper",
                                                               "[bs]*.py"))))
def test_paper_configs_validate_for_every_method_once_given_weights(path, tmp_path):
  module = _load(path)
  assert f"python -m starsse_jax.main --config=paper/{os.path.basename(path)[:-3]}:starsse" \
      in module.__doc__
  with pytest.raises(ValueError, match="set pretrain.checkpoint"):
    configlib.validate(module.get_config())  # no weights named: refused with the fix
  for k in range(5):
    (tmp_path / f"ckpt_{k}.pth.tar").write_bytes(b"x")
  for method in ("starsse", "sse", "local_de", "global_de"):
    config = module.get_config(method)
    config.pretrain.checkpoint = str(tmp_path / "ckpt_*.pth.tar")
    configlib.validate(config)
    assert config.model.name in ("resnet50", "swin_tiny_patch4_window7_224")
    assert config.data.image_size == 224
    assert config.finetune.batch_size == 256 and config.num_members == 5
  with pytest.raises(ValueError, match="Unknown method 'fge2'"):
    module.get_config("fge2")


def test_shipped_configs_by_name():
  from starsse_jax import configs
  names = configs.names()
  assert "starsse" in names and "paper/supervised_cifar100" in names
  assert "paper/common" not in names and "__init__" not in names
  assert configs.resolve("starsse") == os.path.join(configs.DIR, "starsse.py")
  assert configs.resolve("paper/byol_sun397:sse").endswith(
      os.path.join("configs", "paper", "byol_sun397.py") + ":sse")
  existing = os.path.join(REPO, "configs", "tiny.py")  # a path is used as given
  assert configs.resolve(existing + ":x") == existing + ":x"
  assert configs.load("paper/swin_cifar100:sse").method == "sse"
  assert configs.load("tiny").num_members == 3
  with pytest.raises(ValueError, match="no shipped config of that name.*starsse"):
    configs.resolve("starse")
