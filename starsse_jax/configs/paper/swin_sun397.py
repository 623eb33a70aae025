"""The paper's Swin-T setting: supervised ImageNet Swin-T -> SUN-397 (AdamW lr 1e-4, E = 102).

  python -m starsse_jax.main --config=paper/swin_sun397:starsse \
      --workdir=runs/swin_sun --config.pretrain.checkpoint=swin_1.pth \
      --config.data.tfds_data_dir=DIR

Data as ``supervised_sun397.py`` (images stored at 256 x 256, cropped to 224 on the device);
weights, wrappers and methods as ``swin_cifar100.py``.
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  return common.swin_config("sun397", method)
