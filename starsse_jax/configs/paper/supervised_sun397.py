"""The paper's setting: supervised ImageNet ResNet-50 -> SUN-397 (lr 0.005, wd 5e-4, E = 25).

  python -m starsse_jax.main --config=paper/supervised_sun397:starsse \
      --workdir=runs/sup_sun --config.pretrain.checkpoint=resnet50-0676ba61.pth \
      --config.data.tfds_data_dir=DIR

Data: ``tfds build sun397/standard-part1-120k --file_format=array_record --data_dir=DIR`` (the
paper's SUN-397: images downsized to at most 120k pixels). Images are stored at 256 x 256 when read
(about 15 GB of host memory for the training split); they stay on the host and each step's batch is
sent to the device unless the device has room (``data.placement``). Weights and methods: as
``supervised_cifar100.py``.
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  return common.paper_config("supervised", "sun397", method)
