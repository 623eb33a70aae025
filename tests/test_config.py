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


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))))
def test_every_config_file_validates_and_documents_its_command(path):
  module = _load(path)
  config = module.get_config()
  configlib.validate(config)
  if "sweep" in config:
    sweep.validate(config)
    assert "python experiments/sweep.py --config=configs/" in module.__doc__
  else:
    assert "python -m starsse_jax.main --config=configs/" in module.__doc__


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
    ("execution.member_strategy", "pmap", "member_strategy='pmap'"),
    ("finetune.momentum", 1.0, "must lie in"),
])
def test_bad_values_are_named(field, value, message):
  config = tiny_config()
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    configlib.validate(config)


def test_global_de_needs_a_checkpoint_per_member():
  config = tiny_config("global_de", members=3)
  with pytest.raises(ValueError, match="needs pretrain.num_checkpoints >= 3"):
    configlib.validate(config)
  config.pretrain.num_checkpoints = 3
  configlib.validate(config)
