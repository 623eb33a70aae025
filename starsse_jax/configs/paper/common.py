"""What every configuration of the paper shares (DESIGN of the official code, read 2026-11-23).

ResNet-50 from a pre-trained checkpoint in torchvision layout, whole network fine-tuned with a new
linear head per member; RandomResizedCrop 224 (bilinear) + flip for training, the central 224/256
of the image resized to 224 for evaluation; ImageNet mean/std; batch 256; SGD, momentum 0.9,
cosine schedule stepped per step; K = 5; optimizer state reset at every cycle; bf16 compute.
"""
from starsse_jax import configlib

METHODS = ("starsse", "sse", "local_de", "global_de")

# Peak lr, weight decay, epochs of the first fine-tuning, per pre-training (the official code).
PROTOCOLS = {
    "supervised": dict(lr=0.005, weight_decay=5e-4, epochs=25.0),
    "byol": dict(lr=0.05, weight_decay=1e-4, epochs=25.0),
}
# Where the target data comes from and how it is stored.
TARGETS = {
    # 50,000 + 10,000 images of 32 px, upsampled on the device by the random-resized crop.
    "cifar100": dict(target="tfds:cifar100", stored_size=0),
    # SUN-397 as the paper uses it (images downsized to <= 120k pixels), stored at 256 x 256
    # (shorter side, centre crop) once when read, cropped to 224 on the device.
    "sun397": dict(target="tfds:sun397/standard-part1-120k", stored_size=256),
}


def paper_config(pretraining: str, target: str, method: str):
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}: append one of {METHODS} to the config path, "
                     "e.g. --config=paper/supervised_cifar100:starsse")
  c = configlib.base_config()
  c.method = method
  c.num_members = 5
  c.model.name = "resnet50"
  c.model.dtype = "bfloat16"
  c.data.target = TARGETS[target]["target"]
  c.data.stored_size = TARGETS[target]["stored_size"]
  c.data.target_train_per_class = 0  # all training images but the validation slice
  c.data.target_val_per_class = 10  # held out for greedy soups (1% of CIFAR-100's train split)
  c.data.val_fraction = 0.0  # the per-class counts above, as the paper holds out
  c.data.image_size = 224
  c.data.crop_padding = 0
  c.pretrain.checkpoint = ""  # required: the weights file(s), on the command line
  for key, value in PROTOCOLS[pretraining].items():
    setattr(c.finetune, key, value)
  c.finetune.batch_size = 256
  c.finetune.lr_ratio = 1.0  # the middle of the paper's grid; sweep with projects/starsse_paper/sweep.py
  c.finetune.cycle_ratio = 1.0
  c.eval.batch_size = 500
  c.eval.bn_batch_size = 256
  c.checkpoint_every_steps = 500
  c.log_every_steps = 100
  return c


def swin_config(target: str, method: str):
  """Swin-T fine-tuned with the official code's recipe (commit 28e3cf2 of the official repository):
  AdamW (0.9, 0.999, eps 1e-8) at lr 1e-4, weight decay 0.25 (none on 1-D tensors, biases,
  relative-position tables), batch 256, 102 epochs of which 10 are a linear warm-up from 5e-7,
  then cosine, stepped once per epoch; gradient-norm clipping at 5; drop-path 0.1; label
  smoothing 0.1 with mixup 0.8 / CutMix 1.0 (switch probability 0.5, per batch) and soft-target
  cross-entropy; random erasing 0.25; RandomResizedCrop 224 + flip; evaluation on the central
  224/256 resized to 224; bf16 compute. Cycles (SSE, StarSSE): cosine from lr_ratio x 1e-4, no
  warm-up, AdamW state reset at every cycle.

  RandAugment ``rand-m9-mstd0.5-inc1`` (2 ops per image, magnitude 9, std 0.5); RandomResizedCrop
  and the evaluation resize are bicubic.
  """
  c = paper_config("supervised", target, method)
  c.model.name = "swin_tiny_patch4_window7_224"
  c.model.drop_path_rate = 0.1
  ft = c.finetune
  ft.optimizer = "adamw"
  ft.b1, ft.b2, ft.eps = 0.9, 0.999, 1e-8
  ft.lr = 1e-4
  ft.weight_decay = 0.25
  ft.epochs = 102.0
  ft.warmup_epochs = 10.0
  ft.warmup_lr = 5e-7
  ft.schedule_unit = "epoch"
  ft.grad_clip_norm = 5.0
  ft.label_smoothing = 0.1
  ft.mixup_alpha = 0.8
  ft.cutmix_alpha = 1.0
  ft.mix_switch_prob = 0.5
  ft.mix_prob = 1.0
  ft.random_erase_prob = 0.25
  ft.rand_augment_ops, ft.rand_augment_magnitude, ft.rand_augment_std = 2, 9.0, 0.5
  c.data.resize = "bicubic"
  return c
