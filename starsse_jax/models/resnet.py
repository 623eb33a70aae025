"""Flax ResNets that compute exactly what torchvision's ResNets compute.

Module names follow torchvision's state_dict (``conv1``, ``bn1``, ``layer1_0/conv2``,
``layer2_0/downsample_conv``), so that converting weights is a renaming plus a transpose
(``starsse_jax.weights``). Padding is symmetric everywhere (7x7/2 stem padded 3, 3x3/2 max-pool
padded 1, every 3x3 conv padded 1): Flax's ``SAME`` pads stride-2 layers asymmetrically, which is
not what a torchvision-trained network expects. The stride of a bottleneck sits on its 3x3 conv
("ResNet v1.5", torchvision's choice), and BatchNorm follows ``torch.nn.BatchNorm2d`` (eps 1e-5,
unbiased running variance).

Every model names its classifier ``head`` so that fine-tuning can swap it for a freshly initialised
one (the transfer protocol of the paper: whole network trained, new linear head per member).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from starsse_jax import conv as conv_lib

from starsse_jax.models.layers import DROPOUT, HEAD


class BatchNorm(nn.Module):
  """``torch.nn.BatchNorm2d`` over the last axis, in Flax's variable layout.

  Train mode normalises with the batch's biased variance and updates the running variance with
  the *unbiased* one (``n / (n - 1)``, n = values per channel), as PyTorch does; Flax's own
  ``nn.BatchNorm`` keeps the biased one, so running statistics of a converted network would drift
  from torchvision's. ``momentum`` is Flax's convention: PyTorch's 0.1 is 0.9 here. With
  ``axis_name`` the statistics are averaged over that mapped axis (synchronised BatchNorm).
  Statistics are reduced in float32 whatever the compute dtype.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  axis_name: str | None = None
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xf = x.astype(jnp.float32)
      axes = tuple(range(x.ndim - 1))
      moments = jnp.stack([jnp.mean(xf, axes), jnp.mean(xf * xf, axes)])
      count = math.prod(x.shape[:-1])
      if self.axis_name is not None and not self.is_initializing():
        moments = jax.lax.pmean(moments, self.axis_name)
        count *= jax.lax.psum(1, self.axis_name)
      mean = moments[0]
      var = jnp.maximum(moments[1] - mean * mean, 0.0)
      if not self.is_initializing():
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return ((x.astype(jnp.float32) - mean) * mul + bias).astype(self.dtype)


class ResidualBlock(nn.Module):
  """torchvision's ``BasicBlock`` (two 3x3 convs) or ``Bottleneck`` (1x1-3x3-1x1, x4)."""
  features: int
  strides: int
  bottleneck: bool
  norm: Any
  conv: Any  # the network's convolution (``nn.Conv`` with its dtype and kernel gradient)
  dropout_rate: float = 0.0  # after the block's first conv-BN-ReLU (wide ResNets' placement)

  @nn.compact
  def __call__(self, x, stochastic: bool = False):
    conv = self.conv
    pad1 = [(1, 1), (1, 1)]
    s = (self.strides, self.strides)
    drop = _dropout(self.dropout_rate, stochastic)
    if self.bottleneck:
      y = drop(nn.relu(self.norm(name="bn1")(conv(self.features, (1, 1), name="conv1")(x))))
      y = nn.relu(self.norm(name="bn2")(conv(self.features, (3, 3), s, pad1, name="conv2")(y)))
      out_features, last = self.features * 4, "3"
      y = conv(out_features, (1, 1), name="conv3")(y)
    else:
      y = conv(self.features, (3, 3), s, pad1, name="conv1")(x)
      y = drop(nn.relu(self.norm(name="bn1")(y)))
      out_features, last = self.features, "2"
      y = conv(out_features, (3, 3), padding=pad1, name="conv2")(y)
    # Zero-init the last BN scale so each block starts as the identity (Goyal et al. 2017); only
    # fresh initialisations see it, imported weights overwrite it.
    y = self.norm(scale_init=nn.initializers.zeros, name="bn" + last)(y)
    shortcut = x
    if x.shape[-1] != out_features or self.strides != 1:
      shortcut = conv(out_features, (1, 1), s, padding="VALID", name="downsample_conv")(x)
      shortcut = self.norm(name="downsample_bn")(shortcut)
    return nn.relu(y + shortcut)


STEMS = ("imagenet", "cifar")

def _dropout(rate: float, stochastic: bool):
  """Dropout of ``rate`` when ``stochastic``; with rate 0 no module is created at all, so a
  rate-0 network is the same program as one built before dropout existed."""
  if rate <= 0:
    return lambda x: x
  return nn.Dropout(rate, deterministic=not stochastic, rng_collection=DROPOUT)


class ResNet(nn.Module):
  """ResNet. ``stem='imagenet'``: torchvision's 7x7/2 conv and 3x3/2 max-pool (224 px inputs);
  ``stem='cifar'``: one 3x3 conv and no pooling (28-32 px inputs)."""
  stage_sizes: Sequence[int]
  num_classes: int
  width: int = 64
  bottleneck: bool = False
  stem: str = "cifar"
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  # Mesh axis over which BatchNorm averages batch statistics (data parallelism inside a member).
  bn_axis_name: str | None = None
  dropout_rate: float = 0.0  # before the head (MC-dropout)
  block_dropout_rate: float = 0.0  # inside every residual block
  # How convolutions' kernel gradients are computed ('auto', 'xla', 'taps'; ``starsse_jax.conv``):
  # the same function either way, a different program.
  kernel_grad: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = True, stochastic: bool | None = None):
    """``train``: BatchNorm uses (and updates) batch statistics. ``stochastic``: dropout is on
    (default: as ``train``; MC-dropout evaluation passes ``train=False, stochastic=True``).
    With dropout on, ``apply`` needs ``rngs={'dropout': key}``."""
    stochastic = train if stochastic is None else stochastic
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, dtype=self.dtype,
                             axis_name=self.bn_axis_name)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             conv_general_dilated=conv_lib.conv_function(self.kernel_grad))
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = conv(self.width, (3, 3), padding=[(1, 1), (1, 1)], name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
    else:
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
      # Max-pool pads with -inf, as torch does: padding never wins the max.
      x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = ResidualBlock(self.width * 2 ** i, 2 if (i > 0 and j == 0) else 1,
                          self.bottleneck, norm, conv, self.block_dropout_rate,
                          name=f"layer{i + 1}_{j}")(x, stochastic)
    x = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    x = _dropout(self.dropout_rate, stochastic)(x)
    return nn.Dense(self.num_classes, name=HEAD)(x)


# name -> (blocks per stage, bottleneck); the torchvision family, ImageNet stem by default.
TORCHVISION = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
    "resnet152": ((3, 8, 36, 3), True),
}
NAMES = ("resnet_small",) + tuple(TORCHVISION)


def build(model_config, num_classes: int, dtype) -> ResNet:
  """``resnet_small`` (``model.stage_sizes``, ``model.width``) or a torchvision ResNet."""
  name = model_config.name
  stem = model_config.get("stem", "") or ("cifar" if name == "resnet_small" else "imagenet")
  common = dict(num_classes=num_classes, bn_momentum=model_config.bn_momentum, dtype=dtype,
                stem=stem, dropout_rate=model_config.get("dropout_rate", 0.0),
                block_dropout_rate=model_config.get("block_dropout_rate", 0.0))
  if name == "resnet_small":
    return ResNet(stage_sizes=tuple(model_config.stage_sizes), width=model_config.width,
                  **common)
  stages, bottleneck = TORCHVISION[name]
  return ResNet(stage_sizes=stages, width=64, bottleneck=bottleneck, **common)
