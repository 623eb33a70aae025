"""StarSSE on the embedded Fashion-MNIST transfer split (the default run), beside a Local DE of
the same training compute.

Member 0 is fine-tuned from the pre-trained model for E = 40 epochs (cosine from lr 0.05), where
ordinary fine-tuning's validation NLL levels off; members 1..4 branch from it, each with one cosine
cycle of peak 2 x lr over 0.25 x E epochs, trained together. The Local DE baseline
(eval.baseline) shares member 0 and fine-tunes one more model like it: 2 x E member-epochs, what
StarSSE's five members cost. The cycle (lr_ratio 2, cycle_ratio 0.25) was chosen on the
validation slice, where its ensemble beats every member in accuracy and NLL (README).

  python -m starsse_jax.main --config=configs/starsse.py --workdir=runs/starsse

Prints a table with member 0 (the plain fine-tuned model), the branches, the 5-member ensemble,
the Local DE baseline, and the greedy ensemble and soups: 11 min 6 s measured on a 2-core CPU
(README, "The default run"), where 10 was the target.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.method = "starsse"
  config.eval.baseline = "local_de"
  return config
