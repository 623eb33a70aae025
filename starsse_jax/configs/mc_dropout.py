"""MC-dropout on the embedded Fashion-MNIST transfer split.

One model is fine-tuned from the pre-trained network (20 epochs, cosine from lr 0.05) with
dropout 0.2 before the head; at test time 10 stochastic passes with dropout on are its ensemble
(BatchNorm uses its running statistics). The table lists the passes as members; the soups are
the deterministic network (dropout off).

  python -m starsse_jax.main --config=mc_dropout --workdir=runs/starsse

``--config.model.block_dropout_rate=0.1`` adds dropout inside every residual block;
``--config.num_members=K`` fine-tunes K dropout models (K x 10 passes). Pre-training never uses
dropout, so the pre-trained checkpoint in the workdir is shared with the other configs.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "mc_dropout"
  config.num_members = 1
  config.model.dropout_rate = 0.2
  config.eval.mc_samples = 10
  return config
