"""Snapshot Ensemble in transfer: member j+1 continues from member j with one more cosine cycle.

  python -m starsse_jax.main --config=sse --workdir=runs/starsse

Shares the pre-trained checkpoint with the StarSSE run when given the same workdir. With a large
lr_ratio (e.g. --config.finetune.lr_ratio=4) members drift from the pre-train basin and lose accuracy.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.use_shipped_sources(configlib.base_config())  # no pre-training
  config.method = "sse"
  return config
