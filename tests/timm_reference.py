"""Reference outputs of timm models, for the transformer tests.

Runs under a Python with torch and timm (Debian's python3-torch with timm installed beside it,
``pip install --no-deps --target DIR timm``, DIR on ``PYTHONPATH``), *not* the test environment:

    TIMM_FUSED_ATTN=0 /usr/bin/python3 tests/timm_reference.py OUT_DIR vit_tiny_patch16_224 ...

For each model: seeded random initialisation with LayerNorm parameters and the class token
randomised too (timm initialises them to 1, 0 and ~0, which would hide a converter that mixes
them up), then ``NAME.pth`` (the state_dict, zip format) and ``NAME_io.npz`` (inputs NHWC and the
eval-mode logits) in OUT_DIR. ``TIMM_FUSED_ATTN=0`` selects timm's plain attention path.

The other layouts the library reads are written from the same weights and checked here against
timm's own converters (so the test files are what those converters read):
- Swin: ``NAME_microsoft.pth``, Microsoft's layout (``{'model': ...}``, merging at the end of
  stages, ``head.weight``, the ``relative_position_index`` / ``attn_mask`` buffers saved);
  timm's ``checkpoint_filter_fn`` must turn it back into the timm state_dict.
- CLIP: ``NAME_openai.pth``, OpenAI's ``visual.*`` layout beside text-tower keys; timm's
  ``_convert_openai_clip`` must turn it back.
- ViT: ``NAME_at{S}_io.npz``, logits of the model built for S-pixel images with the 224-pixel
  weights loaded through timm's ``checkpoint_filter_fn`` (position embeddings resampled).
- Swin: ``NAME_at{S}.pth`` and ``NAME_at{S}_io.npz``, another random model built for S-pixel
  images (windows clamped to small maps, maps padded to whole windows), and the same weights in
  Microsoft's layout wrapped as the official StarSSE code saves them (``{'model_state': ...}``).
"""
import os
import re
import sys

import numpy as np
import timm
import torch
from timm.models import swin_transformer, vision_transformer

RESAMPLED_SIZES = {"vit_tiny_patch16_224": (160, 288)}
# Built for small images: windows clamped to the map, maps padded to whole windows.
SMALL_SIZES = {"swin_tiny_patch4_window7_224": 64}


def _randomise_norms(model):
  with torch.no_grad():
    for key, value in model.state_dict().items():
      if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_pre.weight")):
        value.uniform_(0.5, 1.5)
      elif key.endswith(("norm1.bias", "norm2.bias", "norm.bias", "norm_pre.bias", "cls_token")):
        value.uniform_(-0.2, 0.2)


def _io(model, size, seed):
  x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
  with torch.no_grad():
    logits = model(x)
  return {"x": x.permute(0, 2, 3, 1).numpy(), "logits": logits.numpy()}


def _same(a, b, what):
  assert set(a) == set(b), (what, sorted(set(a) ^ set(b))[:5])
  for k in a:
    assert torch.equal(a[k], b[k]), (what, k)


def microsoft_layout(model):
  """The timm model's weights as Microsoft's Swin code saves them."""
  out = {}
  for k, v in model.state_dict().items():
    k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
    out[k.replace("head.fc.", "head.")] = v
  for i, stage in enumerate(model.layers):
    for j, block in enumerate(stage.blocks):
      out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = (
          block.attn.relative_position_index.clone())
      if block.attn_mask is not None:
        out[f"layers.{i}.blocks.{j}.attn_mask"] = block.attn_mask.clone()
  return out


def openai_layout(model):
  """The timm CLIP tower's weights as OpenAI's ``visual.*`` keys (the inverse of timm's
  ``_convert_openai_clip``), beside a few text-tower keys a CLIP file also holds."""
  swaps = [("patch_embed.proj", "conv1"), ("norm_pre", "ln_pre"), ("blocks.", "transformer.resblocks."),
           ("norm1", "ln_1"), ("norm2", "ln_2"), ("qkv.", "in_proj_"), ("attn.proj", "attn.out_proj"),
           ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]
  out = {"positional_embedding": torch.randn(77, 512), "token_embedding.weight": torch.randn(8, 512),
         "ln_final.weight": torch.ones(512)}
  for k, v in model.state_dict().items():
    if k == "head.weight":
      out["visual.proj"] = v.t().contiguous()
      continue
    if k == "head.bias":
      continue
    if k == "cls_token":
      k, v = "class_embedding", v[0, 0]
    elif k == "pos_embed":
      k, v = "positional_embedding", v[0]
    elif k.startswith("norm."):
      k = k.replace("norm.", "ln_post.")
    for old, new in swaps:
      k = k.replace(old, new)
    out["visual." + k] = v
  return out


def main(out_dir, names):
  os.makedirs(out_dir, exist_ok=True)
  torch.set_num_threads(2)
  for i, name in enumerate(names):
    torch.manual_seed(i)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    _randomise_norms(model)
    if "clip" in name:  # OpenAI's projection has no bias: make the round trip exact
      with torch.no_grad():
        model.head.bias.zero_()
    state_dict = model.state_dict()
    torch.save(state_dict, os.path.join(out_dir, f"{name}.pth"))
    size = model.patch_embed.img_size[0]
    np.savez(os.path.join(out_dir, f"{name}_io.npz"), **_io(model, size, 100 + i))
    if name.startswith("swin"):
      ms = microsoft_layout(model)
      _same(swin_transformer.checkpoint_filter_fn(ms, model), state_dict, "microsoft layout")
      torch.save({"model": ms, "epoch": 3}, os.path.join(out_dir, f"{name}_microsoft.pth"))
    if "clip" in name:
      oa = openai_layout(model)
      _same(vision_transformer._convert_openai_clip(oa, model), state_dict, "openai layout")
      torch.save(oa, os.path.join(out_dir, f"{name}_openai.pth"))
    for s in RESAMPLED_SIZES.get(name, ()):
      other = timm.create_model(name, pretrained=False, num_classes=10, img_size=s).eval()
      other.load_state_dict(vision_transformer.checkpoint_filter_fn(state_dict, other))
      np.savez(os.path.join(out_dir, f"{name}_at{s}_io.npz"), **_io(other, s, 200 + i))
    if name in SMALL_SIZES:
      s = SMALL_SIZES[name]
      torch.manual_seed(50 + i)
      small = timm.create_model(name, pretrained=False, num_classes=10, img_size=s).eval()
      _randomise_norms(small)
      torch.save(small.state_dict(), os.path.join(out_dir, f"{name}_at{s}.pth"))
      torch.save({"model_state": microsoft_layout(small)},
                 os.path.join(out_dir, f"{name}_at{s}_microsoft.pth"))
      np.savez(os.path.join(out_dir, f"{name}_at{s}_io.npz"), **_io(small, s, 300 + i))
    print(name, "ok", file=sys.stderr)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
