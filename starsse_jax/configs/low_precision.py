"""Low-precision ensembles (Ex Uno Pluria) from StarSSE on the embedded Fashion-MNIST split.

Trains configs/starsse.py's StarSSE (without its Local DE baseline), then draws members without
training by stochastic rounding of every conv/dense kernel onto a 4-, 5- and 6-bit grid (one
scale per output channel):
round-to-nearest of member 1 (baseline), an LPE of 5 draws of member 1, and +LPE (5 draws of each
of the 5 StarSSE members, 25 models), each with the float model's BatchNorm statistics and with
statistics recomputed. A second table gives memory per model beside accuracy and NLL.

  python -m starsse_jax.main --config=low_precision --workdir=runs/starsse

``--config.eval.low_precision_scale=tensor`` uses one scale per tensor; ``--config.num_members=1``
gives LPE of a single fine-tuned model.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "starsse"
  config.eval.low_precision_bits = (4, 5, 6)
  config.eval.low_precision_samples = 5
  config.eval.low_precision_scale = "channel"
  return config
