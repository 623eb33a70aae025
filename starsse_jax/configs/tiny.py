"""A seconds-long smoke configuration (used by the tests); any method via --config.method=...

  python -m starsse_jax.main --config=tiny --workdir=/tmp/tiny
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.num_members = 3
  config.log_every_steps = 5
  config.data.target_train_per_class = 20
  config.data.target_val_per_class = 10
  config.model.stage_sizes = (1, 1)
  config.model.width = 8
  config.pretrain.epochs = 0.05
  config.pretrain.batch_size = 64
  config.finetune.epochs = 2.0
  config.finetune.batch_size = 25
  config.finetune.fge_cycle_epochs = 2
  config.eval.bn_batch_size = 50
  config.eval.learned_soup = False  # seconds count here; --config.eval.learned_soup=True adds it
  return config
