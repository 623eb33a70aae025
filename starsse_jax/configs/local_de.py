"""Local Deep Ensemble: 5 members fine-tuned from the same pre-trained checkpoint, together.

  python -m starsse_jax.main --config=local_de --workdir=runs/local_de

Members differ only by head initialisation, data order and augmentation; expect a smaller gain
over one member than Global DE and than StarSSE at a moderate lr_ratio.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "local_de"
  return config
