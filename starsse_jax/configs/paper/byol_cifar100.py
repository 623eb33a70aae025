"""The paper's setting: BYOL ResNet-50 -> CIFAR-100 (lr 0.05, wd 1e-4, E = 25).

  python -m starsse_jax.main --config=paper/byol_cifar100:starsse \
      --workdir=runs/byol_c100 --config.pretrain.checkpoint=byol-1000ep-1.pt \
      --config.data.tfds_data_dir=DIR

Method after the colon: starsse, sse, local_de, global_de (Global DE:
``--config.pretrain.checkpoint='byol/byol-1000ep-*.pt'``, five files). StarSSE here uses the
follow-up's optimum for BYOL on CIFAR-100: cycles of 0.5 x E at 4 x lr.

Weights: the official code's BYOL ResNet-50 files (``byol-1000ep-{1..5}.pt``, already in
torchvision layout, no classifier: every member gets a fresh head anyway); any self-supervised
ResNet-50 in torchvision layout works, e.g. MoCo v2/v3 checkpoints (their ``module.encoder_q.`` or
``module.base_encoder.`` prefix is found and stripped; a projection MLP under ``fc`` is left out).
DeepMind's own BYOL release is a Haiku pickle, not this layout: convert it first. Accepted files
and data preparation: as ``supervised_cifar100.py``.
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  config = common.paper_config("byol", "cifar100", method)
  config.finetune.lr_ratio = 4.0
  config.finetune.cycle_ratio = 0.5
  return config
