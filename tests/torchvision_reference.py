"""Reference outputs of torchvision ResNets, for the weight-import tests.

Runs under a Python that has torch and torchvision (Debian's python3-torch / python3-torchvision
with the system Python), *not* the test environment:

    /usr/bin/python3 tests/torchvision_reference.py OUT_DIR resnet18 [resnet50 ...]

For each architecture, seeded random initialisation with randomised BatchNorm parameters and
running statistics (so that a converter that confuses them fails), then writes to OUT_DIR:
``NAME.pth`` (torch.save of the state_dict, zip format), ``NAME_wrapped.pth.tar`` (as the official
StarSSE checkpoints: {'state_dict': {'module.' + key: ...}, 'epoch', 'args'}), ``NAME_legacy.pth``
(pre-1.6 format), ``NAME.npz`` (the state_dict as numpy), ``NAME_io.npz`` (inputs NHWC, eval-mode
logits, and every BatchNorm's running statistics after one train-mode forward of ``train_x``).
"""
import argparse
import os
import sys

import numpy as np
import torch
import torchvision


def main(out_dir, names):
  os.makedirs(out_dir, exist_ok=True)
  torch.set_num_threads(2)
  for i, name in enumerate(names):
    torch.manual_seed(i)
    model = getattr(torchvision.models, name)(num_classes=10)
    with torch.no_grad():
      for module_name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          # A residual branch's last BN scaled down keeps activations O(1) through 50 layers, as
          # trained networks have them; the tolerance of the tests is absolute.
          last = module_name.endswith("bn3") or (module_name.endswith("bn2") and "Basic" in
                                                 type(model.layer1[0]).__name__)
          m.weight.uniform_(0.0, 0.3) if last else m.weight.uniform_(0.5, 1.5)
          m.bias.uniform_(-0.2, 0.2)
          m.running_mean.uniform_(-0.2, 0.2)
          m.running_var.uniform_(0.5, 1.5)
    state = model.state_dict()
    torch.save(state, os.path.join(out_dir, f"{name}.pth"))
    torch.save(state, os.path.join(out_dir, f"{name}_legacy.pth"),
               _use_new_zipfile_serialization=False)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 90,
                "args": argparse.Namespace(lr=0.1, arch=name)},
               os.path.join(out_dir, f"{name}_wrapped.pth.tar"))
    np.savez(os.path.join(out_dir, f"{name}.npz"), **{k: v.numpy() for k, v in state.items()})
    gen = torch.Generator().manual_seed(100 + i)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    train_x = torch.randn(4, 3, 64, 64, generator=gen)
    model.eval()
    with torch.no_grad():
      logits = model(x)
      model.train()
      model(train_x)
    stats = {f"stats/{k}": v.numpy() for k, v in model.state_dict().items()
             if k.endswith(("running_mean", "running_var"))}
    np.savez(os.path.join(out_dir, f"{name}_io.npz"), x=x.permute(0, 2, 3, 1).numpy(),
             train_x=train_x.permute(0, 2, 3, 1).numpy(), logits=logits.numpy(), **stats)
    print(name, "ok", file=sys.stderr)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
