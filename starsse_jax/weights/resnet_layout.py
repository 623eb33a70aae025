"""torchvision's ResNet state_dict layout <-> this library's Flax ResNet variables.

The Flax modules carry torchvision's names (``starsse_jax.models``), so a key maps to a path by renaming
``layerS.B`` <-> ``layerS_B``, ``downsample.0/1`` <-> ``downsample_conv/_bn``, ``fc`` <-> ``head``,
and a leaf by its kind: conv weight OIHW <-> kernel HWIO, linear weight [out, in] <-> kernel
[in, out], BatchNorm ``weight``/``bias`` <-> ``scale``/``bias`` (params) and ``running_mean`` /
``running_var`` <-> ``mean``/``var`` (batch_stats). ``num_batches_tracked`` has no counterpart
(PyTorch uses it only when BatchNorm momentum is None) and is dropped. timm's ``resnet*`` models
(not the ``d`` variants) use the same keys.
"""
from __future__ import annotations

import re

import numpy as np

from starsse_jax import models

_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1", models.HEAD: "fc"}
_LEAVES = {("params", "scale"): "weight", ("params", "bias"): "bias",
           ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
DROPPED = ("num_batches_tracked",)


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """The torchvision key of the Flax leaf ``variables[collection][path[0]]...[path[-1]]``."""
  *modules, leaf = path
  names = [re.sub(r"^(layer\d+)_(\d+)$", r"\1.\2", _MODULES.get(m, m)) for m in modules]
  leaf_name = "weight" if leaf == "kernel" else _LEAVES[(collection, leaf)]
  return ".".join(names + [leaf_name])


def to_torch(leaf_name: str, array: np.ndarray) -> np.ndarray:
  """A Flax leaf's value in torch's layout."""
  if leaf_name != "kernel":
    return array
  return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T


def torch_shape(leaf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape a Flax leaf of ``shape`` has in torch's layout."""
  if leaf_name != "kernel":
    return tuple(shape)
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape[::-1])


def from_torch(leaf_name: str, array: np.ndarray) -> np.ndarray:
  """A torch tensor's value in the layout of Flax leaf ``leaf_name``."""
  if leaf_name != "kernel":
    return array
  return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


_MODULE_ORDER = {"conv1": 0, "bn1": 1, "conv2": 2, "bn2": 3, "conv3": 4, "bn3": 5,
                 "downsample": 6, "fc": 99}
_LEAF_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3,
               "num_batches_tracked": 4}


def torch_order(key: str) -> tuple:
  """Sort key giving torchvision's state_dict order (stem, layer1.0, ..., fc)."""
  parts = key.split(".")
  rank = []
  for p in parts[:-1]:
    if p.isdigit():
      rank.append((int(p),))
    elif p.startswith("layer") and p[5:].isdigit():
      rank.append((50, int(p[5:])))
    else:
      rank.append((_MODULE_ORDER.get(p, 98), p))
  return tuple(rank) + ((_LEAF_ORDER.get(parts[-1], 9),),)


def flax_leaves(variables) -> list[tuple[str, tuple[str, ...], np.ndarray]]:
  """(collection, path, value) of every leaf of ``{'params', 'batch_stats'}``, model order."""
  out = []

  def walk(collection, tree, prefix):
    for name, value in tree.items():
      if isinstance(value, dict) or hasattr(value, "items"):
        walk(collection, value, prefix + (name,))
      else:
        out.append((collection, prefix + (name,), value))

  for collection in ("params", "batch_stats"):
    walk(collection, variables.get(collection, {}), ())
  return sorted(out, key=lambda leaf: torch_order(torch_key(leaf[0], leaf[1])))


def describe(state_dict: dict[str, np.ndarray]) -> str:
  """A guess at which ResNet a state_dict holds, e.g. 'resnet50 (blocks (3, 4, 6, 3), bottleneck)'."""
  blocks = []
  for s in range(1, 5):
    ids = {int(m.group(1)) for k in state_dict for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m}
    blocks.append(max(ids) + 1 if ids else 0)
  bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state_dict)
  name = next((n for n, (stages, b) in models.TORCHVISION.items()
               if tuple(blocks) == stages and b == bottleneck), None)
  kind = "bottleneck" if bottleneck else "basic blocks"
  return f"{name or 'a ResNet'} (blocks {tuple(blocks)}, {kind})"
