"""What a checkpoint holds, and its transformer layouts brought to timm's.

``identify(state_dict)`` names the family, size and layout of a file ("Swin-T (window 7),
Microsoft layout"), so that a file given to the wrong model is one message saying what it is.
``to_timm(state_dict)`` maps the layouts the library reads onto timm >= 0.9's:

- Microsoft's Swin code (and timm <= 0.8): patch merging at the *end* of stages 0-2
  (``layers.{0,1,2}.downsample``), classifier ``head.weight``, buffers
  ``relative_position_index`` / ``attn_mask`` saved (dropped: the model builds them); timm >= 0.9
  merges at the *start* of stages 1-3 and names the classifier ``head.fc``. Same computation.
- OpenAI CLIP's image tower (``visual.*``): ``conv1``, ``class_embedding``,
  ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.i.{ln_1, attn.in_proj_*,
  attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_post``, ``proj`` (features -> embedding, no
  bias), renamed as timm's ``_convert_openai_clip`` does.
"""
from __future__ import annotations

import re

import numpy as np

SWIN_NAMES = {96: {(2, 2, 6, 2): "Swin-T", (2, 2, 18, 2): "Swin-S"}, 128: {(2, 2, 18, 2): "Swin-B"}}
VIT_NAMES = {192: "ViT-Ti", 384: "ViT-S", 768: "ViT-B", 1024: "ViT-L"}
_SWIN_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")


def family_of(state_dict: dict[str, np.ndarray]) -> str:
  """'resnet', 'swin', 'vit', 'clip' (OpenAI's ``visual.*``) or 'unknown'."""
  if any(_SWIN_TABLE.match(k) for k in state_dict):
    return "swin"
  if "cls_token" in state_dict and "blocks.0.attn.qkv.weight" in state_dict:
    return "vit"
  if "visual.class_embedding" in state_dict or "class_embedding" in state_dict:
    return "clip"
  if any(k.endswith("conv1.weight") for k in state_dict) and any(
      k.endswith("bn1.weight") for k in state_dict):
    return "resnet"
  return "unknown"


def swin_layout(state_dict) -> str:
  """'microsoft' (merging at the end of stages, ``head.weight``) or 'timm' (timm >= 0.9)."""
  if "head.fc.weight" in state_dict or "layers.3.downsample.reduction.weight" in state_dict:
    return "timm"
  return "microsoft"


def identify(state_dict: dict[str, np.ndarray]) -> str:
  """A short description of what the file holds, for error messages."""
  family = family_of(state_dict)
  if family == "swin":
    depths: dict[int, int] = {}
    for k in state_dict:
      m = _SWIN_TABLE.match(k)
      if m:
        depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    dims = tuple(depths[i] for i in sorted(depths))
    embed = state_dict["patch_embed.proj.weight"].shape[0] if (
        "patch_embed.proj.weight" in state_dict) else 0
    table = state_dict["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (int(round(np.sqrt(table))) + 1) // 2
    name = SWIN_NAMES.get(embed, {}).get(dims, f"Swin (dim {embed}, depths {dims})")
    layout = ("Microsoft layout" if swin_layout(state_dict) == "microsoft" else
              "timm 0.9+ layout")
    return f"{name} (window {window}), {layout}"
  if family in ("vit", "clip"):
    sd = to_timm(state_dict) if family == "clip" else state_dict
    width = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    grid = int(round(np.sqrt(sd["pos_embed"].shape[1] - 1)))
    name = VIT_NAMES.get(width, f"ViT (width {width})") + f"/{patch}"
    clip = ", CLIP image tower" if "norm_pre.weight" in sd else ""
    layout = ", OpenAI layout" if family == "clip" else ", timm layout"
    return f"{name} (depth {depth}, {grid}x{grid} patches{clip}){layout}"
  if family == "resnet":
    from starsse_jax.weights import resnet_layout
    return resnet_layout.describe(state_dict)
  return f"no known network (first keys {list(state_dict)[:4]})"


def _swin_from_microsoft(state_dict):
  out = {}
  for k, v in state_dict.items():
    if k.endswith(("relative_position_index", "attn_mask")):
      continue
    k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample",
               k)
    if k.startswith("head."):
      k = "head.fc." + k[len("head."):]
    out[k] = v
  return out


_CLIP_SWAPS = (("conv1", "patch_embed.proj"), ("positional_embedding", "pos_embed"),
               ("transformer.resblocks.", "blocks."), ("ln_pre", "norm_pre"), ("ln_post", "norm"),
               ("ln_", "norm"), ("in_proj_", "qkv."), ("out_proj", "proj"),
               ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"))


def _vit_from_openai(state_dict):
  prefix = "visual." if any(k.startswith("visual.") for k in state_dict) else ""
  out = {}
  for k, v in state_dict.items():
    if not k.startswith(prefix):
      continue  # the text tower
    k = k[len(prefix):]
    for old, new in _CLIP_SWAPS:
      k = k.replace(old, new)
    v = np.asarray(v)
    if k == "proj":  # features -> embedding: timm's head, with a zero bias
      out["head.weight"] = np.ascontiguousarray(v.T)
      out["head.bias"] = np.zeros(v.shape[1], v.dtype)
      continue
    if k == "class_embedding":
      k, v = "cls_token", v[None, None]
    elif k == "pos_embed":
      v = v[None]
    out[k] = v
  return out


def to_timm(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The state_dict in timm >= 0.9's layout (unchanged if it already is, or is no transformer)."""
  family = family_of(state_dict)
  if family == "swin" and swin_layout(state_dict) == "microsoft":
    return _swin_from_microsoft(state_dict)
  if family == "swin":
    return {k: v for k, v in state_dict.items()
            if not k.endswith(("relative_position_index", "attn_mask"))}
  if family == "clip":
    return _vit_from_openai(state_dict)
  return state_dict
