"""A small ViT on the embedded Fashion-MNIST transfer split: pre-trained on the source classes,
fine-tuned with StarSSE on the target classes, with the transformer recipe (AdamW with its
weight-decay mask, warm-up then cosine, gradient clipping, label smoothing). A LayerNorm network:
soups and low-precision ensembles need no BatchNorm recompute.

  python -m starsse_jax.main --config=vit_tiny --workdir=runs/vit_tiny

Prints the members, the StarSSE ensemble, the Local DE of equal compute, the soups and the
low-precision ensembles (docs/transformers.md).
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.method = "starsse"
  config.eval.baseline = "local_de"
  config.model.name = "vit"  # patch 4 on 28 px: 7 x 7 tokens and a class token
  config.model.width = 64
  config.model.depth = 4
  config.model.heads = 4
  config.model.patch = 4
  config.data.crop_padding = 2
  for section in (config.pretrain, config.finetune):
    section.optimizer = "adamw"
    section.weight_decay = 0.05
    section.grad_clip_norm = 1.0
    section.label_smoothing = 0.1
  config.pretrain.lr = 1e-3
  config.pretrain.epochs = 3.0
  config.pretrain.warmup_epochs = 0.3
  config.pretrain.batch_size = 128
  config.finetune.lr = 3e-4
  config.finetune.epochs = 20.0
  config.finetune.warmup_epochs = 1.0
  config.finetune.batch_size = 50
  config.finetune.lr_ratio = 1.0
  config.finetune.cycle_ratio = 0.25
  config.data.target_test_per_class = 500  # 2,500 test images: evaluation stays ~1 minute
  config.eval.low_precision_bits = (6,)
  config.eval.low_precision_samples = 3
  config.eval.learned_soup = False
  return config
