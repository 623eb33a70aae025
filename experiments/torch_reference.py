"""torchvision ResNet-50 trained the way the official PyTorch code does, for comparison.

Used by ``bench_throughput.py --torch``. Synthetic data on the GPU; SGD with momentum and weight
decay; one forward, backward and update per step. Two settings: fp32 with PyTorch's defaults (the
official code), and AMP bf16 autocast with channels_last memory format.
"""
from __future__ import annotations

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
