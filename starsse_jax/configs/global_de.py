"""Global Deep Ensemble: member k fine-tuned from pre-trained checkpoint k (5 pre-trainings).

  python -m starsse_jax.main --config=global_de --workdir=runs/global_de

Pre-trains 5 source models as one stacked run (about 5x the pre-training time of the other
configs), so use its own workdir. Expect the most diverse members and the best ensemble.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.method = "global_de"
  config.pretrain.num_checkpoints = config.num_members
  return config
