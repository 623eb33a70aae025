"""The paper's setting: ResNet-50 at 224 px on CIFAR-100, bf16, for a GPU or TPU.

  python -m starsse_jax.main --config=configs/cifar100_resnet50.py --workdir=runs/c100 \
      --config.data.tfds_data_dir=DIR [--config.pretrain.checkpoint_dir=CKPT]

Needs CIFAR-100 prepared as array_record in DIR (`tfds build cifar100 --file_format=array_record
--data_dir=DIR` on a machine with internet access). 32 px images are random-resized-cropped to
224 px on the device (evaluation: centre 87.5% resized to 224). Fine-tuning follows the paper's
supervised-init protocol (lr 0.005, wd 5e-4, E = 25, batch 256). The paper starts from an ImageNet
ResNet-50; point pretrain.checkpoint_dir at one stored in this library's layout, otherwise the
run pre-trains on CIFAR-100 classes 0-49 and fine-tunes on 50-99 (a within-dataset transfer).
Not run by this project yet: no accelerator was available when it was written.
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
