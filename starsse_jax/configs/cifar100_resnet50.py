"""A within-dataset stand-in for the paper's setting: ResNet-50 at 224 px, CIFAR-100 split by class.

  python -m starsse_jax.main --config=cifar100_resnet50 --workdir=runs/c100 \
      --config.data.tfds_data_dir=DIR

For the paper's own setting (an ImageNet or BYOL ResNet-50 fine-tuned on all of CIFAR-100 or
SUN-397) use ``configs/paper/`` with ``pretrain.checkpoint``; this config pre-trains its own
network on CIFAR-100 classes 0-49 and fine-tunes on 50-99, for runs without downloaded weights.

Needs CIFAR-100 prepared as array_record in DIR (`tfds build cifar100 --file_format=array_record
--data_dir=DIR` on a machine with internet access). 32 px images are random-resized-cropped to
224 px on the device (evaluation: centre 87.5% resized to 224). Fine-tuning follows the paper's
supervised-init protocol (lr 0.005, wd 5e-4, E = 25, batch 256). Not run by this project.
"""
from starsse_jax import configlib


def get_config():
  config = configlib.base_config()
  config.method = "starsse"
  config.data.name = "cifar100"
  config.data.source_classes = tuple(range(50))
  config.data.target_classes = tuple(range(50, 100))
  config.data.target_train_per_class = 400
  config.data.target_val_per_class = 100
  config.data.image_size = 224
  config.model.name = "resnet50"
  config.model.dtype = "bfloat16"
  config.pretrain.epochs = 30.0
  config.pretrain.batch_size = 256
  config.finetune.lr = 0.005
  config.finetune.weight_decay = 5e-4
  config.finetune.epochs = 25.0
  config.finetune.batch_size = 256
  config.eval.batch_size = 256
  config.eval.bn_batch_size = 256
  return config
