"""Pre-trained weights from outside: torchvision/timm checkpoints in, and back out.

    variables = weights.load("resnet50-0676ba61.pth", model)   # {'params', 'batch_stats'}
    variables = weights.load("swin_tiny.pth", swin_model)      # {'params'}
    weights.export(variables, "mine.safetensors", model)       # torchvision / timm layout

Families: ResNets in torchvision's layout (``resnet_layout``); ViTs and Swins in timm's
(``timm_layout``), with Microsoft's Swin layout and OpenAI CLIP's ``visual.*`` brought to timm's
first (``families``). The layout is detected from the keys; a file of another family or size is
one message naming what the file holds.

Formats (``formats.READERS``): ``.safetensors`` and ``.npz`` with numpy alone; PyTorch
``.pth``/``.pth.tar``/``.pt`` in the zip format of PyTorch >= 1.6 and the legacy stream before it,
by a restricted unpickler that executes nothing from the file (torch is never used). Declared
sizes are checked before anything is allocated. Wrapped
checkpoints (``state_dict``, ``model_state``, ``model``, ...) are unwrapped and prefixes such as
``module.`` or ``module.encoder_q.`` stripped (``select``). Every tensor is checked against the
model before anything is trained: a file of another architecture, a missing or an unexpected key
stops with one message naming the key, both shapes and the fix.
"""
from __future__ import annotations

import glob
import os
from typing import Any

import jax
import numpy as np

from starsse_jax import models, pretrained
from starsse_jax.weights import families, formats, resnet_layout, timm_layout
from starsse_jax.weights.errors import UnreadableWeightsError, WeightsError
from starsse_jax.weights.formats import read_state_dict, write_state_dict

__all__ = ["checkpoint_files", "load", "export", "to_flax", "from_flax", "select", "read_state_dict",
           "write_state_dict", "WeightsError", "UnreadableWeightsError"]

# Prefixes that wrappers add to a ResNet's keys, preferred in this order when several fit
# (MoCo checkpoints hold the query and the key encoder; the query encoder is the one to use).
KNOWN_PREFIXES = ("", "module.", "module.encoder_q.", "encoder_q.", "module.base_encoder.",
                  "base_encoder.", "module.encoder.", "encoder.", "backbone.", "model.",
                  "module.backbone.", "online_network.encoder.")


def checkpoint_files(spec: str) -> list[str]:
  """The files ``pretrain.checkpoint`` names: comma-separated paths, each possibly a glob
  (expanded in sorted order), or ``shipped:NAME`` (``starsse_jax.pretrained``). Raises ``UnreadableWeightsError`` for a path that names nothing."""
  files = []
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    if part.startswith(pretrained.PREFIX):  # the networks shipped with the project
      try:
        files += pretrained.files(part[len(pretrained.PREFIX):])
      except FileNotFoundError as e:
        raise UnreadableWeightsError(part, str(e)) from e
      continue
    matches = sorted(glob.glob(os.path.expanduser(part))) if glob.has_magic(part) else [
        os.path.expanduser(part)]
    if not matches:
      raise UnreadableWeightsError(part, "the pattern matches no file")
    for path in matches:
      if not os.path.isfile(path):
        raise UnreadableWeightsError(path, "no such file" if not os.path.exists(path) else
                                     "it is a directory, not a weight file")
    files += matches
  return files


def select(state_dict: dict[str, np.ndarray], prefix: str = "auto",
           path: str = "") -> dict[str, np.ndarray]:
  """The keys under ``prefix`` with the prefix removed.

  ``'auto'`` picks the prefix ``p`` for which ``p + 'conv1.weight'`` and ``p + 'bn1.weight'``
  exist, preferring ``KNOWN_PREFIXES`` in order; keys outside it (a MoCo key encoder, a projection
  head, a queue) are left out.
  """
  if prefix == "auto":
    found = [k[:-len("conv1.weight")] for k in state_dict
             if k.endswith("conv1.weight") and k[:-len("conv1.weight")] + "bn1.weight" in state_dict]
    if not found:
      raise WeightsError(
          f"{path}: no ResNet stem (a key ending in 'conv1.weight' beside 'bn1.weight') in the "
          f"checkpoint; its first keys are {list(state_dict)[:5]}. Is it a ResNet in torchvision "
          "layout? If its keys carry an unusual prefix, set pretrain.checkpoint_prefix.")
    known = [p for p in KNOWN_PREFIXES if p in found]
    prefix = known[0] if known else found[0]
    if not known and len(found) > 1:
      raise WeightsError(f"{path}: several ResNets in the checkpoint, under prefixes {found}; "
                         "choose one with pretrain.checkpoint_prefix.")
  out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
  if not out:
    raise WeightsError(f"{path}: no key starts with prefix {prefix!r}; the first keys are "
                       f"{list(state_dict)[:5]}. Fix pretrain.checkpoint_prefix.")
  return out


def _template(model, image_channels: int, num_classes: int | None):
  if num_classes is not None:
    model = model.clone(num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             np.zeros((1, 32, 32, image_channels), np.float32),
                                             train=False))
  return {"params": shapes["params"], "batch_stats": shapes["batch_stats"]}


def to_flax(state_dict: dict[str, np.ndarray], model, path: str = "",
            image_channels: int = 3) -> dict[str, Any]:
  """Flax variables of ``model`` from a torchvision-layout state_dict, validated leaf by leaf.

  The classifier ``fc`` is imported with however many classes it has (fine-tuning replaces it);
  an ``fc`` that is not one linear layer (an MLP projection head) is left out. Raises
  ``WeightsError`` for a tensor of another shape (naming the key, both shapes and which ResNet
  the file holds), for a key the model has no place for, and for a key the model needs.
  """
  fc = state_dict.get("fc.weight")
  linear_fc = fc is not None and fc.ndim == 2 and "fc.bias" in state_dict
  sd = {k: v for k, v in state_dict.items()
        if k.rsplit(".", 1)[-1] not in resnet_layout.DROPPED and (linear_fc or not k.startswith("fc."))}
  template = _template(model, image_channels, fc.shape[0] if linear_fc else None)
  leaves = resnet_layout.flax_leaves(template)
  expected = {resnet_layout.torch_key(c, p): (c, p, leaf) for c, p, leaf in leaves}
  holds = resnet_layout.describe(state_dict)
  fix = ("Set config.model.name to the architecture of the checkpoint (and model.stem if it is "
         "not torchvision's ImageNet stem), or point pretrain.checkpoint at the intended file.")
  for key, value in sd.items():  # file order: the first mismatch a reader would see
    if key not in expected:
      continue
    c, p, leaf = expected[key]
    want = resnet_layout.torch_shape(p[-1], leaf.shape)
    if tuple(value.shape) != want:
      raise WeightsError(f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint but the "
                         f"model needs {tuple(want)}: the file holds {holds}, the model is "
                         f"{_model_name(model)}. {fix}")
  unexpected = [k for k in sd if k not in expected]
  if unexpected:
    raise WeightsError(f"{path}: unexpected key(s) {unexpected[:5]}"
                       f"{' and %d more' % (len(unexpected) - 5) if len(unexpected) > 5 else ''} "
                       f"that {_model_name(model)} has no place for (the file holds {holds}). {fix}")
  missing = [k for k in expected if k not in sd and not (k.startswith("fc.") and not linear_fc)]
  if missing:
    raise WeightsError(f"{path}: the checkpoint lacks {missing[:5]}"
                       f"{' and %d more' % (len(missing) - 5) if len(missing) > 5 else ''}, which "
                       f"{_model_name(model)} needs (the file holds {holds}). {fix}")
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, (c, p, leaf) in expected.items():
    if key not in sd:  # a head-less checkpoint: fine-tuning adds the head
      continue
    node = variables[c]
    for name in p[:-1]:
      node = node.setdefault(name, {})
    node[p[-1]] = np.ascontiguousarray(
        resnet_layout.from_torch(p[-1], np.asarray(sd[key]))).astype(leaf.dtype)
  return variables


def _model_name(model) -> str:
  kind = "bottleneck" if model.bottleneck else "basic blocks"
  return f"the configured ResNet (blocks {tuple(model.stage_sizes)}, {kind}, {model.stem} stem)"


def from_flax(variables: dict[str, Any]) -> dict[str, np.ndarray]:
  """A torchvision-layout state_dict (numpy, float32) of one member's Flax variables."""
  return {resnet_layout.torch_key(c, p): np.ascontiguousarray(
              resnet_layout.to_torch(p[-1], np.asarray(leaf, np.float32)))
          for c, p, leaf in resnet_layout.flax_leaves(variables)}


_TRANSFORMER_PREFIXES = ("", "module.", "model.", "state_dict.", "module.model.")


def _strip_transformer_prefix(state_dict, path):
  for prefix in _TRANSFORMER_PREFIXES:
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if out and families.family_of(out) in ("vit", "swin", "clip"):
      return out
  return state_dict


def load(path: str, model, prefix: str = "auto", key: str = "auto",
         image_size: int = 0) -> dict[str, Any]:
  """Reads, unwraps and converts one checkpoint file into ``model``'s variables.

  ResNets: the stem's input channels as the checkpoint has them. ViT/Swin: the images of
  ``image_size`` pixels (0: the size the checkpoint was made for), a ViT's position embedding
  resampled to it. Raises ``WeightsError`` naming the first mismatching key and what the file
  holds when it is not the configured architecture.
  """
  raw = read_state_dict(path, key)
  family = models.family(model)
  if family == "resnet":
    found = families.family_of(raw)
    if found in ("vit", "swin", "clip"):
      raise WeightsError(f"{path}: the file holds {families.identify(raw)}, but the model is a "
                         "ResNet. Set config.model.name to the file's architecture.")
    state_dict = select(raw, prefix, path)
    return to_flax(state_dict, model, path, int(state_dict["conv1.weight"].shape[1]))
  if family not in ("vit", "swin"):
    raise WeightsError(f"{path}: files are converted for the built-in families (ResNet, ViT, "
                       f"Swin); a {type(model).__name__} takes its variables through "
                       "api.run(..., variables=...).")
  state_dict = raw if prefix in ("auto", "") else select(raw, prefix, path)
  state_dict = _strip_transformer_prefix(state_dict, path)
  found = families.family_of(state_dict)
  holds = families.identify(state_dict)
  if {"clip": "vit"}.get(found, found) != family:
    raise WeightsError(f"{path}: the file holds {holds}, but the model is a "
                       f"{family.upper() if family == 'vit' else 'Swin'} "
                       f"({type(model).__name__}). Set config.model.name to the file's "
                       "architecture.")
  state_dict = families.to_timm(state_dict)
  channels = int(state_dict["patch_embed.proj.weight"].shape[1]) if (
      "patch_embed.proj.weight" in state_dict) else 3
  if not image_size:
    image_size = _native_image_size(state_dict, model, family)
  return timm_layout.to_flax(state_dict, model, family, image_size, channels, path, holds)


def _native_image_size(state_dict, model, family) -> int:
  if family == "vit" and "pos_embed" in state_dict:
    grid = int(round(np.sqrt(state_dict["pos_embed"].shape[1] - 1)))
    return grid * model.patch
  return 224 if family == "swin" else 32


def export(variables: dict[str, Any], path: str, model=None) -> None:
  """Writes one member's variables as a ``.safetensors`` or ``.npz`` state_dict in the family's
  reference layout (torchvision for ResNets, timm for ViT and Swin; ResNet when no model)."""
  family = "resnet" if model is None else models.family(model)
  if family == "resnet":
    write_state_dict(path, from_flax(variables))
  else:
    write_state_dict(path, timm_layout.from_flax(variables, family))
