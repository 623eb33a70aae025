"""Flax ResNets with BatchNorm: a small CIFAR-style ResNet and ResNet-50.

Every model names its classifier ``head`` so that fine-tuning can swap it for a freshly initialised
one (the transfer protocol of the paper: whole network trained, new linear head per member).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

HEAD = "head"

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ResidualBlock(nn.Module):
  """Basic (two 3x3 convs) or bottleneck (1x1-3x3-1x1, x4 expansion) residual block."""
  features: int
  strides: int
  bottleneck: bool
  norm: Any
  dtype: Any

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    if self.bottleneck:
      y = nn.relu(self.norm()(conv(self.features, (1, 1))(x)))
      y = nn.relu(self.norm()(conv(self.features, (3, 3), self.strides)(y)))
      out_features = self.features * 4
      y = conv(out_features, (1, 1))(y)
    else:
      y = nn.relu(self.norm()(conv(self.features, (3, 3), self.strides)(x)))
      out_features = self.features
      y = conv(out_features, (3, 3))(y)
    # Zero-init the last BN scale so each block starts as the identity (Goyal et al. 2017).
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    shortcut = x
    if x.shape[-1] != out_features or self.strides != 1:
      shortcut = self.norm()(conv(out_features, (1, 1), self.strides)(x))
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet; ``small_inputs`` selects the CIFAR stem (3x3 conv, no max-pool) for 28-32 px images."""
  stage_sizes: Sequence[int]
  num_classes: int
  width: int = 64
  bottleneck: bool = False
  small_inputs: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  # Mesh axis over which BatchNorm averages batch statistics (data parallelism inside a member).
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = True):
    # BN momentum 0.9 is PyTorch's 0.1 in Flax's convention (the reference code is PyTorch).
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                             axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    if self.small_inputs:
      x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="stem")(x)
      x = nn.relu(norm()(x))
    else:
      x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                  dtype=self.dtype, name="stem")(x)
      x = nn.relu(norm()(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = ResidualBlock(self.width * 2 ** i, 2 if (i > 0 and j == 0) else 1,
                          self.bottleneck, norm, self.dtype)(x)
    x = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
    return nn.Dense(self.num_classes, name=HEAD)(x)


MODELS = ("resnet_small", "resnet18", "resnet50")


def build_model(model_config, num_classes: int) -> ResNet:
  """The model named by ``config.model.name`` with ``num_classes`` outputs."""
  name = model_config.name
  dtype = _DTYPES[model_config.dtype]
  common = dict(num_classes=num_classes, bn_momentum=model_config.bn_momentum, dtype=dtype)
  if name == "resnet_small":
    return ResNet(stage_sizes=tuple(model_config.stage_sizes), width=model_config.width,
                  small_inputs=True, **common)
  if name == "resnet18":
    return ResNet(stage_sizes=(2, 2, 2, 2), width=64, small_inputs=True, **common)
  if name == "resnet50":
    return ResNet(stage_sizes=(3, 4, 6, 3), width=64, bottleneck=True, small_inputs=False,
                  **common)
  raise ValueError(f"Unknown model {name!r}; choose one of {MODELS}.")
