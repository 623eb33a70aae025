"""Pre-training only settings: the default source task, one checkpoint.

  python -m starsse_jax.main --config=pretrain --workdir=runs/starsse

Runs the default pipeline; its pre-training step writes WORKDIR/pretrained, which every method config
given the same workdir then reuses (set pretrain.num_checkpoints=5 here to prepare Global DE too).
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.num_members = 1
  config.method = "local_de"
  config.eval.soups = False
  return config
