"""Global Deep Ensemble: member k fine-tuned from pre-trained network k.

  python -m starsse_jax.main --config=global_de --workdir=runs/global_de

The five networks are the independent pre-trainings the project ships
(``starsse_jax/pretrained``, ``shipped:fashion_mnist_source``); with
``--config.pretrain.checkpoint=''`` it pre-trains five source models itself as one stacked run
(about 5x the pre-training time of one). Expect the most diverse members and the best ensemble.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "global_de"
  config.pretrain.num_checkpoints = config.num_members
  return config
