"""Fast Geometric Ensembling from the fine-tuned model: triangular cycles of 4 epochs.

  python -m starsse_jax.main --config=fge --workdir=runs/starsse

lr goes linearly 0.01 -> 1e-4 -> 0.01 per cycle; a member is collected at each minimum.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "fge"
  config.finetune.fge_cycle_epochs = 4
  config.finetune.fge_lr_1 = 0.01
  config.finetune.fge_lr_2 = 1e-4
  return config
