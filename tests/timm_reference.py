"""Reference outputs of timm models, for the transformer tests.

Runs under a Python with torch and timm (Debian's python3-torch with timm installed beside it,
``pip install --no-deps --target DIR timm``, DIR on ``PYTHONPATH``), *not* the test environment:

    TIMM_FUSED_ATTN=0 /usr/bin/python3 tests/timm_reference.py OUT_DIR vit_tiny_patch16_224 ...

For each model: seeded random initialisation with LayerNorm parameters and the class token
randomised too (timm initialises them to 1, 0 and ~0, which would hide a converter that mixes
them up), then ``NAME.pth`` (the state_dict, zip format) and ``NAME_io.npz`` (inputs NHWC and the
eval-mode logits) in OUT_DIR. ``TIMM_FUSED_ATTN=0`` selects timm's plain attention path.
"""
import os
import sys

import numpy as np
import timm
import torch


def main(out_dir, names):
  os.makedirs(out_dir, exist_ok=True)
  torch.set_num_threads(2)
  for i, name in enumerate(names):
    torch.manual_seed(i)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    with torch.no_grad():
      for key, value in model.state_dict().items():
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_pre.weight")):
          value.uniform_(0.5, 1.5)
        elif key.endswith(("norm1.bias", "norm2.bias", "norm.bias", "norm_pre.bias",
                           "cls_token")):
          value.uniform_(-0.2, 0.2)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{name}.pth"))
    size = model.patch_embed.img_size[0]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(100 + i))
    with torch.no_grad():
      logits = model(x)
    np.savez(os.path.join(out_dir, f"{name}_io.npz"), x=x.permute(0, 2, 3, 1).numpy(),
             logits=logits.numpy())
    print(name, "ok", file=sys.stderr)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
