"""The paper's setting: supervised ImageNet ResNet-50 -> CIFAR-100 (lr 0.005, wd 5e-4, E = 25).

  python -m starsse_jax.main --config=paper/supervised_cifar100:starsse \
      --workdir=runs/sup_c100 --config.pretrain.checkpoint=resnet50-0676ba61.pth \
      --config.data.tfds_data_dir=DIR

Method after the colon: starsse, sse, local_de, global_de. Global DE needs five checkpoints:
``--config.pretrain.checkpoint='ckpts/ckpt_*.pth.tar'`` (a glob, or five paths with commas).

Weights, on a machine with internet access (any torchvision-layout ResNet-50 state_dict works):
- torchvision's ImageNet ResNet-50: https://download.pytorch.org/models/resnet50-0676ba61.pth
  (IMAGENET1K_V1, 76.1% top-1; ``resnet50-11ad3fa6.pth`` is V2, 80.9%), read without torch.
- the official code's five supervised checkpoints (Ashukha et al. 2020, ``ckpt_{1..5}.pth.tar``:
  a ``state_dict`` with a ``module.`` prefix, unwrapped and stripped automatically).
- timm's ResNet-50 recipes (``resnet50.a1_in1k``, ``resnet50.tv_in1k``, ...): their
  ``model.safetensors`` from the Hugging Face hub; several recipes make a Global DE.
Accepted files: .pth / .pth.tar / .pt (the zip format without torch; legacy files with torch),
.safetensors, .npz.

Data: CIFAR-100 prepared as array_record in DIR (``tfds build cifar100 --file_format=array_record
--data_dir=DIR``); the run reads no other data and pre-trains nothing. Expected result: not
measured by this project, which has no copy of CIFAR-100 or of the weights; a mock of CIFAR-100's
shape from a converted random-init ResNet-50 was run (docs/transfer.md).
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  return common.paper_config("supervised", "cifar100", method)
