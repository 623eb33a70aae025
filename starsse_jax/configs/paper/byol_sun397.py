"""The paper's setting: BYOL ResNet-50 -> SUN-397 (lr 0.05, wd 1e-4, E = 25).

  python -m starsse_jax.main --config=paper/byol_sun397:starsse \
      --workdir=runs/byol_sun --config.pretrain.checkpoint=byol-1000ep-1.pt \
      --config.data.tfds_data_dir=DIR

Data as ``supervised_sun397.py``, weights and methods as ``byol_cifar100.py``.
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  return common.paper_config("byol", "sun397", method)
