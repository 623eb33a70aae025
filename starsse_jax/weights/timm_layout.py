"""timm's transformer state_dicts (ViT, Swin in timm >= 0.9 layout) <-> the Flax modules'.

A Flax path maps to a timm key by renaming: ``_`` between names becomes ``.`` except inside
timm's own compound names (``blocks_3/mlp_fc1/kernel`` -> ``blocks.3.mlp.fc1.weight``,
``patch_embed_proj/kernel`` -> ``patch_embed.proj.weight``, Swin's ``head`` -> ``head.fc``).
Linear kernels are transposed (timm stores ``[out, in]``), patch convolutions go from ``OIHW`` to
``HWIO``. Every tensor is checked against the model before anything is converted; a ViT's
position embedding of another grid is resampled (class slot kept, grid part bicubic, as timm's
``resample_abs_pos_embed``).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from starsse_jax.weights.errors import WeightsError

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# timm names that contain '_' themselves.
_ATOMS = ("patch_embed", "cls_token", "pos_embed", "norm_pre", "relative_position_bias_table")
# Flax module name -> timm's, where renaming alone does not do it (per family).
_RENAMED = {"swin": {"head": "head.fc"}}


def torch_key(path: tuple[str, ...], family: str = "vit") -> str:
  parts = []
  for i, name in enumerate(path):
    if i == len(path) - 1:
      parts.append(_LEAF.get(name, name))
      continue
    renamed = _RENAMED.get(family, {}).get(name)
    if renamed is not None:
      parts.append(renamed)
      continue
    for atom in _ATOMS:
      name = name.replace(atom, atom.replace("_", "\0"))
    parts.append(name.replace("_", ".").replace("\0", "_"))
  return ".".join(parts)


# timm stores linear kernels [out, in] (Flax: [in, out]) and patch convolutions OIHW (HWIO).
_TO_FLAX = {2: (1, 0), 4: (2, 3, 1, 0)}
_TO_TORCH = {2: (1, 0), 4: (3, 2, 0, 1)}


def from_torch(leaf: str, value: np.ndarray) -> np.ndarray:
  return value.transpose(_TO_FLAX[value.ndim]) if leaf == "kernel" else value


def to_torch(leaf: str, value: np.ndarray) -> np.ndarray:
  return value.transpose(_TO_TORCH[value.ndim]) if leaf == "kernel" else value


def leaves(params) -> list[tuple[tuple[str, ...], Any]]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [(tuple(k.key for k in path), leaf) for path, leaf in flat]


def resample_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """``[1, 1 + h*w, D]`` -> ``[1, 1 + grid[0]*grid[1], D]``: the class slot kept, the square grid
  part resized bicubically with antialiasing, as timm's ``resample_abs_pos_embed`` (PyTorch's
  ``interpolate(mode='bicubic', antialias=True)``, a = -0.5, the same kernel as
  ``jax.image.resize``; checked against PyTorch by the tests)."""
  cls, rest = pos_embed[:, :1], pos_embed[:, 1:]
  old = int(round(np.sqrt(rest.shape[1])))
  if old * old != rest.shape[1]:
    raise WeightsError(f"the position embedding has {rest.shape[1]} grid slots, not a square "
                       "grid; cannot resample it.")
  d = rest.shape[-1]
  image = jnp.asarray(rest.reshape(old, old, d), jnp.float32)
  resized = jax.image.resize(image, (grid[0], grid[1], d), "bicubic", antialias=True)
  return np.concatenate([cls, np.asarray(resized).reshape(1, -1, d)], axis=1).astype(
      pos_embed.dtype)


def to_flax(state_dict: dict[str, np.ndarray], model, family: str, image_size: int,
            channels: int = 3, path: str = "", holds: str = "") -> dict[str, Any]:
  """``{'params': ...}`` of ``model`` (a ViT or Swin) from a timm-layout state_dict, validated
  leaf by leaf; the classifier is taken with however many classes it has."""
  head_key = torch_key(("head", "kernel"), family)
  head = state_dict.get(head_key)
  if head is not None:
    model = model.clone(num_classes=head.shape[0])
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros(
      (1, image_size, image_size, channels), np.float32), train=False))["params"]
  expected = {torch_key(p, family): (p, leaf) for p, leaf in leaves(shapes)}
  what = f" (the file holds {holds})" if holds else ""
  state_dict = dict(state_dict)
  for key, value in list(state_dict.items()):
    if key not in expected:
      continue
    p, leaf = expected[key]
    got = from_torch(p[-1], np.asarray(value)).shape
    if got == tuple(leaf.shape):
      continue
    if key == "pos_embed" and len(got) == 3 and got[2] == leaf.shape[2]:
      side = int(round(np.sqrt(leaf.shape[1] - 1)))
      state_dict[key] = resample_pos_embed(np.asarray(value), (side, side))
      continue
    detail = ""
    if key.endswith("relative_position_bias_table"):
      detail = (" (a Swin of another window size, or images of another size: a stage whose map "
                "is smaller than the window uses the map as its window)")
    raise WeightsError(f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint, which is "
                       f"{got} here, but the model needs {tuple(leaf.shape)}{detail}{what}: set "
                       "config.model.name to the checkpoint's architecture (and "
                       "config.data.image_size to the size it was made for).")
  unexpected = [k for k in state_dict if k not in expected]
  missing = [k for k in expected if k not in state_dict and not k.startswith("head.")]
  if unexpected or missing:
    first = (unexpected or missing)[0]
    raise WeightsError(f"{path}: the checkpoint's keys do not fit the configured {family}"
                       f"{what}: first mismatching key {first!r}; unexpected {unexpected[:5]}, "
                       f"missing {missing[:5]}. Set config.model.name to the checkpoint's "
                       "architecture.")
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


def from_flax(variables: dict[str, Any], family: str) -> dict[str, np.ndarray]:
  """A timm-layout state_dict (numpy, float32) of one model's variables."""
  return {torch_key(p, family): np.ascontiguousarray(to_torch(p[-1], np.asarray(leaf, np.float32)))
          for p, leaf in leaves(variables["params"])}
