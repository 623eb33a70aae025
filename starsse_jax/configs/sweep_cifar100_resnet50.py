"""The paper's sweep in the paper's setting: CIFAR-100, ResNet-50 at 224 px, bf16, GPU or TPU.

  python projects/starsse_paper/sweep.py --config=sweep_cifar100_resnet50 --workdir=runs/sweep100 \
      --config.data.tfds_data_dir=DIR [--config.pretrain.checkpoint_dir=CKPT]

Data, model and fine-tuning protocol as ``configs/cifar100_resnet50.py`` (read its docstring for
preparing CIFAR-100); the grid as ``configs/sweep.py``. A StarSSE phase holds 4 x 5 = 20 members;
above 8 members the ``auto`` strategy runs them with ``lax.map``, one member's activations in
memory at a time, so the phase fits one GPU; the finished members of a seed (50, weights and
BatchNorm statistics only: about 4.7 GB for ResNet-50) stay on the device. Each finished member is
written once to the checkpoint directory; a progress save holds the members still training
(``experiments/bench_checkpoints.py`` projects about 10 GB written per seed).
CKPT must hold 5 pre-trained checkpoints (Global DE).
Not run by this project yet.
"""
import ml_collections

from starsse_jax.configs import cifar100_resnet50, sweep


def get_config():
  config = cifar100_resnet50.get_config()
  config.num_members = 5
  config.pretrain.num_checkpoints = 5
  config.checkpoint_every_steps = 500
  config.sweep = ml_collections.ConfigDict(sweep.get_config().sweep.to_dict())
  return config
