"""timm's ViT state_dict names and layouts <-> the Flax ``ViT``'s (``starsse_jax.models.vit``).

A Flax path maps to a timm key by renaming (``blocks_3/mlp_fc1/kernel`` ->
``blocks.3.mlp.fc1.weight``, ``patch_embed/kernel`` -> ``patch_embed.proj.weight``); linear
kernels are transposed (timm stores ``[out, in]``), the patch convolution goes from ``OIHW`` to
``HWIO``. Every tensor is checked against the model before anything is converted.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from starsse_jax.weights.errors import WeightsError

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def torch_key(path: tuple[str, ...]) -> str:
  parts = []
  for name in path[:-1]:
    if name.startswith("blocks_"):
      parts.append("blocks." + name[len("blocks_"):])
    elif name == "patch_embed":
      parts.append("patch_embed.proj")
    else:
      parts.append(name.replace("mlp_", "mlp."))
  leaf = path[-1]
  return ".".join(parts + [_LEAF.get(leaf, leaf)])


# timm stores linear kernels [out, in] (Flax: [in, out]) and the patch convolution OIHW (HWIO).
_TO_FLAX = {2: (1, 0), 4: (2, 3, 1, 0)}
_TO_TORCH = {2: (1, 0), 4: (3, 2, 0, 1)}


def from_torch(leaf: str, value: np.ndarray) -> np.ndarray:
  return value.transpose(_TO_FLAX[value.ndim]) if leaf == "kernel" else value


def to_torch(leaf: str, value: np.ndarray) -> np.ndarray:
  return value.transpose(_TO_TORCH[value.ndim]) if leaf == "kernel" else value


def _leaves(params) -> list[tuple[tuple[str, ...], Any]]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [(tuple(k.key for k in path), leaf) for path, leaf in flat]


def to_flax(state_dict: dict[str, np.ndarray], model, image_size: int, channels: int = 3,
            path: str = "") -> dict[str, Any]:
  """``{'params': ...}`` of ``model`` from a timm ViT state_dict, validated leaf by leaf (the
  classifier is taken with however many classes it has)."""
  head = state_dict.get("head.weight")
  if head is not None:
    model = model.clone(num_classes=head.shape[0])
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros(
      (1, image_size, image_size, channels), np.float32)))["params"]
  expected = {torch_key(p): (p, leaf) for p, leaf in _leaves(shapes)}
  for key, value in state_dict.items():
    if key in expected:
      p, leaf = expected[key]
      got = from_torch(p[-1], np.asarray(value)).shape
      if got != tuple(leaf.shape):
        raise WeightsError(f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint, which "
                           f"is {got} here, but the model needs {tuple(leaf.shape)}: the file "
                           "holds a ViT of another size, patch or image size.")
  unexpected = [k for k in state_dict if k not in expected]
  missing = [k for k in expected if k not in state_dict and not k.startswith("head.")]
  if unexpected or missing:
    raise WeightsError(f"{path}: the checkpoint's keys do not fit the ViT: unexpected "
                       f"{unexpected[:5]}, missing {missing[:5]}.")
  params: dict[str, Any] = {}
  for key, (p, leaf) in expected.items():
    if key not in state_dict:
      continue
    node = params
    for name in p[:-1]:
      node = node.setdefault(name, {})
    node[p[-1]] = np.ascontiguousarray(from_torch(p[-1], np.asarray(state_dict[key]))).astype(
        leaf.dtype)
  return {"params": params}


def from_flax(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """A timm-layout state_dict (numpy, float32) of one ViT's variables."""
  return {torch_key(p): np.ascontiguousarray(to_torch(p[-1], np.asarray(leaf, np.float32)))
          for p, leaf in _leaves(variables["params"])}
