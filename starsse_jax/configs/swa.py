"""SWA from the fine-tuned model on the embedded Fashion-MNIST transfer split.

Member 1 is the ordinary fine-tuned model (20 epochs, cosine from lr 0.05). Members 2..5 are four
SWA runs branching from it (trained together in one step, like StarSSE's branches): 5 epochs (a
StarSSE branch's length) at a constant lr 0.01, weights averaged once per epoch, BatchNorm
statistics recomputed on the training images for each average. Member 2 alone is plain SWA; the
ensemble of the four is SWA applied to StarSSE-style branches.

  python -m starsse_jax.main --config=swa --workdir=runs/starsse

``--config.num_members=2`` runs SWA alone; ``--config.finetune.swa_schedule=cyclic`` uses a
sawtooth 0.01 -> 1e-4 per epoch, collected at each minimum. Same cost as configs/starsse.py.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "swa"
  config.num_members = 5
  config.finetune.swa_epochs = 5.0
  config.finetune.swa_lr = 0.01
  config.finetune.swa_schedule = "constant"
  config.finetune.swa_start = 0.0
  config.finetune.swa_collect_every = 1.0
  return config
