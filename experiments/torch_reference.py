"""torchvision ResNet-50 trained the way the official PyTorch code does, for comparison.

Used by ``bench_throughput.py --torch``. Synthetic data on the GPU; SGD with momentum and weight
decay; one forward, backward and update per step. Two settings: fp32 with PyTorch's defaults (the
official code), and AMP bf16 autocast with channels_last memory format.

``CpuRunner`` (``bench_throughput.py --torch-cpu``): the project's model on the CPU, in the
benchmark's process when it can import torch, else served by this script under another Python.
"""
from __future__ import annotations

import os
import statistics
import time


def torch_resnet50_rates(batch: int, steps: int, size: int = 224, repeats: int = 3,
                         num_classes: int = 100) -> list[tuple[str, float]]:
  """[(setting, img/s)] for torchvision's ResNet-50 on the first CUDA device."""
  import torch  # pylint: disable=g-import-not-at-top
  if not torch.cuda.is_available():
    raise RuntimeError("--torch needs a CUDA GPU visible to PyTorch.")
  rates = []
  for name, amp in (("torch fp32", False), ("torch AMP bf16 + channels_last", True)):
    rates.append((name, _rate(amp, batch, steps, size, repeats, num_classes)))
    torch.cuda.empty_cache()
  return rates


def _rate(amp: bool, batch: int, steps: int, size: int, repeats: int, num_classes: int) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torchvision.models.resnet50(num_classes=num_classes).cuda()
  x = torch.rand(batch, 3, size, size, device="cuda")
  y = torch.randint(0, num_classes, (batch,), device="cuda")
  if amp:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
      loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()

  for _ in range(5):
    step()
  torch.cuda.synchronize()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
  return batch * steps / statistics.median(times)


def torch_timm_rate(name: str, batch: int, steps: int, size: int = 224, repeats: int = 3,
                    num_classes: int = 10) -> float:
  """img/s of timm's ``name`` trained on the first CUDA device under AMP bf16 autocast (SGD with
  momentum and weight decay, as the JAX benchmark's step), eager mode."""
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = timm.create_model(name, pretrained=False, num_classes=num_classes).cuda().train()
  x = torch.rand(batch, 3, size, size, device="cuda")
  y = torch.randint(0, num_classes, (batch,), device="cuda")
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

  def run(n):
    for _ in range(n):
      with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    torch.cuda.synchronize()

  run(3)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run(steps)
    times.append(time.perf_counter() - start)
  del model, opt
  torch.cuda.empty_cache()
  return batch * steps / statistics.median(times)


# ------------------------------------------------------------------------------- CPU


class CpuRunner:
  """The project's model trained by PyTorch on the CPU: ``runner(steps)`` runs that many SGD
  steps and returns img/s (0 steps: nothing). uint8 images cropped (padding 2) and flipped on the
  batch and normalised, as the JAX step does; NCHW (PyTorch's default) or channels_last."""

  def __init__(self, model_name: str, width: int, stages, batch: int, size: int, channels: int,
               channels_last: bool = False, threads: int = 0, num_classes: int = 10,
               vit: dict | None = None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads or os.cpu_count())
    torch.manual_seed(0)
    if model_name == "resnet_small":
      model = _small_resnet(width, stages, channels, num_classes)
    elif model_name == "vit":  # timm's VisionTransformer of the same size (``configs/vit_tiny.py``)
      from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top
      model = VisionTransformer(img_size=size, patch_size=vit["patch"], in_chans=channels,
                                num_classes=num_classes, embed_dim=width, depth=vit["depth"],
                                num_heads=vit["heads"])
    else:
      import torchvision  # pylint: disable=g-import-not-at-top
      model = getattr(torchvision.models, model_name)(num_classes=num_classes)
    self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = model.to(memory_format=self.memory_format)
    self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    self.g = torch.Generator().manual_seed(0)
    self.n = max(4 * batch, 512)
    self.images = torch.randint(0, 256, (self.n, channels, size, size), dtype=torch.uint8,
                                generator=self.g)
    self.labels = torch.randint(0, num_classes, (self.n,), generator=self.g)
    self.batch, self.size, self.channels = batch, size, channels
    self.label = (f"torch {torch.__version__} CPU "
                  f"{'channels_last' if channels_last else 'NCHW'}")
    for _ in range(5):
      self._step()

  def _step(self, pad: int = 2):
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    b, size, g = self.batch, self.size, self.g
    idx = torch.randint(0, self.n, (b,), generator=g)
    x = F.pad(self.images[idx].float() / 255.0, (pad,) * 4)
    dy, dx = (torch.randint(0, 2 * pad + 1, (b,), generator=g) for _ in range(2))
    flip = torch.rand(b, generator=g) < 0.5
    rows = torch.arange(size)
    cols = torch.where(flip[:, None], size - 1 - rows, rows) + dx[:, None]  # [B, W]
    x = x[torch.arange(b)[:, None, None, None], torch.arange(self.channels)[None, :, None, None],
          (rows + dy[:, None])[:, None, :, None], cols[:, None, None, :]]
    x = ((x - 0.5) / 0.25).contiguous(memory_format=self.memory_format)
    loss = F.cross_entropy(self.model(x), self.labels[idx])
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()

  def __call__(self, steps: int) -> float:
    if steps <= 0:
      return 0.0
    start = time.perf_counter()
    for _ in range(steps):
      self._step()
    return self.batch * steps / (time.perf_counter() - start)


def _small_resnet(width: int, stages, channels: int, num_classes: int):
  """``models.ResNet`` with the CIFAR stem and basic blocks (``resnet_small``), in PyTorch."""
  import torch.nn as tnn  # pylint: disable=g-import-not-at-top

  def conv_bn(cin, cout, k, stride, zero=False):
    bn = tnn.BatchNorm2d(cout)
    if zero:
      tnn.init.zeros_(bn.weight)
    return [tnn.Conv2d(cin, cout, k, stride, k // 2, bias=False), bn]

  class Block(tnn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = tnn.Sequential(*conv_bn(cin, cout, 3, stride), tnn.ReLU(),
                                 *conv_bn(cout, cout, 3, 1, zero=True))
      self.short = (tnn.Sequential(*conv_bn(cin, cout, 1, stride))
                    if cin != cout or stride != 1 else tnn.Identity())

    def forward(self, x):
      return (self.body(x) + self.short(x)).relu()

  layers, cin = [*conv_bn(channels, width, 3, 1), tnn.ReLU()], width
  for i, blocks in enumerate(stages):
    for j in range(blocks):
      layers.append(Block(cin, width * 2 ** i, 2 if (i > 0 and j == 0) else 1))
      cin = width * 2 ** i
  layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(cin, num_classes)]
  return tnn.Sequential(*layers)


if __name__ == "__main__":
  # For a Python other than the benchmark's: ``CpuRunner(**json argv[1])``, then one line of
  # img/s per line "STEPS" read from stdin, until "0".
  import json
  import sys
  runner = CpuRunner(**json.loads(sys.argv[1]))
  print("ready", runner.label, flush=True)
  for line in sys.stdin:
    if int(line) <= 0:
      break
    print(runner(int(line)), flush=True)
