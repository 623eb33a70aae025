"""The paper's Swin-T setting: supervised ImageNet Swin-T -> CIFAR-100 (AdamW lr 1e-4, E = 102).

  python -m starsse_jax.main --config=paper/swin_cifar100:starsse \
      --workdir=runs/swin_c100 --config.pretrain.checkpoint=swin_1.pth \
      --config.data.tfds_data_dir=DIR

Method after the colon: starsse, sse, local_de, global_de. Global DE needs five independently
pre-trained Swin-T files: ``--config.pretrain.checkpoint='swin_*.pth'`` (a glob, or five paths
separated by commas). The recipe: ``configs/paper/common.py``, ``swin_config``.

Weights, on a machine with internet access:
- the official code's five Swin-T checkpoints (``swin_{1..5}.pth``, Microsoft layout, the Global DE
  rows of the paper), as its authors distribute them;
- Microsoft's release ``swin_tiny_patch4_window7_224.pth`` (``{'model': state_dict}``, Microsoft
  layout) or timm's ``swin_tiny_patch4_window7_224`` ``model.safetensors`` (timm >= 0.9 layout).
Accepted wrappers: ``model``, ``model_state``, ``state_dict`` (or none), with or without a
``module.`` prefix; the saved ``relative_position_index`` / ``attn_mask`` buffers are ignored
(the model builds them); the layout is detected from the keys. Formats: .pth (read without
torch), .safetensors, .npz.

Data: CIFAR-100 prepared as array_record in DIR, as ``supervised_cifar100.py``. Expected result:
not measured by this project (no copy of CIFAR-100 or of the weights, no GPU this far); the
config runs end to end on a CIFAR-100-shaped mock from a converted random-init Swin-T in the
tests (``tests/test_swin_paper.py``, a few steps at 64 px).
"""
from starsse_jax.configs.paper import common


def get_config(method="starsse"):
  return common.swin_config("cifar100", method)
