"""StarSSE on the embedded Fashion-MNIST transfer split (the default run).

Member 1 is fine-tuned from the pre-trained model; members 2..5 branch from it, each with one
cosine cycle of peak 0.5 x lr over 1 x E epochs, trained together.

  python -m starsse_jax.main --config=configs/starsse.py --workdir=runs/starsse

Prints a table with member 0 (the plain fine-tuned model), the branches, the 5-member ensemble,
and the uniform and greedy soups; the ensemble should beat member 0 in accuracy and NLL.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.method = "starsse"
  return config
