"""Model soups of CLIP ViT-B/32 fine-tunings (Wortsman et al. 2022's setting) on ImageNet.

  python -m starsse_jax.main --config=soups_clip_vit --workdir=runs/soups_clip \
      --config.pretrain.checkpoint=ViT-B-32.pt.npz --config.data.tfds_data_dir=DIR

K = 5 members fine-tuned from the one CLIP image tower (Local DE: the ingredients), then the
uniform, greedy and learned soups and the ensemble. model-soups' recipe: AdamW lr 2e-5, weight
decay 0.1, 8 epochs at batch 256, 500 warm-up steps (0.1 epoch of ImageNet) then cosine per step,
gradient clipping at 1.0, CLIP's input normalisation, 224 px. Its ingredients come from a random
search (lr 1e-6..1e-4, label smoothing, mixup, RandAugment on or off); here every ingredient has
the same recipe and its own seed (data order, augmentation, head); vary them with
``projects/starsse_paper/sweep.py`` or by hand.

Weights: OpenAI's CLIP ViT-B/32 image tower in OpenAI's layout (``visual.*`` keys, the text tower
ignored), or timm's ``vit_base_patch32_clip_quickgelu_224`` (timm layout), as ``.safetensors``,
``.npz`` or a ``.pth`` state_dict (read without torch; OpenAI's TorchScript archive ``ViT-B-32.pt``
is not a state_dict: save ``model.state_dict()`` from it first). Differences from model-soups:
the classifier is a fresh linear head on the tower's 768 features (model-soups: a zero-shot
text head on L2-normalised 512-d projections). Data: ImageNet prepared as array_record in DIR.
Expected result: not measured by this project (no copy of ImageNet or of the weights).
"""
from starsse_jax import configlib

NEEDS_WEIGHTS = True  # validated by the tests with a placeholder file


def get_config():
  c = configlib.base_config()
  c.method = "local_de"
  c.num_members = 5
  c.model.name = "vit_base_patch32_clip_quickgelu_224"
  c.model.dtype = "bfloat16"
  c.data.target = "tfds:imagenet2012"
  c.data.target_train_per_class = 0
  c.data.target_val_per_class = 2  # 2,000 held-out training images choose the greedy soup
  c.data.val_fraction = 0.0  # the per-class counts above
  c.data.image_size = 224
  c.data.crop_padding = 0
  c.pretrain.input_mean = (0.48145466, 0.4578275, 0.40821073)  # CLIP's
  c.pretrain.input_std = (0.26862954, 0.26130258, 0.27577711)
  ft = c.finetune
  ft.optimizer = "adamw"
  ft.lr = 2e-5
  ft.weight_decay = 0.1
  ft.epochs = 8.0
  ft.batch_size = 256
  ft.warmup_epochs = 0.1  # 500 steps of ImageNet's 5,000 per epoch
  ft.grad_clip_norm = 1.0
  c.eval.batch_size = 500
  c.eval.bn_batch_size = 256
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 100
  return c
