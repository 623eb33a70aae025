"""ViT-B/16 and Swin-T at 224 px in bf16 on a GPU: member-img/s of the shared train step with
K = 1 and 4 members, beside timm's model trained by PyTorch under AMP bf16 on the same GPU.

  python experiments/bench_transformers_gpu.py [--batch=128] [--members=1,4] [--steps=10]

Synthetic 224 px uint8 images on the device, SGD with momentum (the step of
``bench_throughput.py``, its augmentation included); PyTorch: ``torch_reference.torch_timm_rate``
(eager, autocast bf16, the same batch per model). PyTorch trains one model at a time, so its
member-img/s is the same for any K. Each rate is the median of ``--repeats`` windows of
``--steps`` steps after a warm-up. Prints one markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODELS = ("vit_base_patch16_224", "swin_tiny_patch4_window7_224")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128, help="images per member per step")
  parser.add_argument("--members", default="1,4")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-torch", action="store_true")
  args = parser.parse_args()
  peers = {}
  if not args.no_torch:  # first: JAX's allocator has not taken the memory yet
    from torch_reference import torch_timm_rate  # pylint: disable=g-import-not-at-top
    for name in MODELS:
      peers[name] = torch_timm_rate(name, args.batch, args.steps, 224, args.repeats)
      print(f"torch {name}: {peers[name]:,.0f} img/s", flush=True)
  import jax  # pylint: disable=g-import-not-at-top
  from bench_throughput import bench  # pylint: disable=g-import-not-at-top
  rows = []
  for name in MODELS:
    for k in (int(x) for x in args.members.split(",")):
      r = bench(name, k, "auto", args.batch, 224, args.steps, "bfloat16", repeats=args.repeats)
      rows.append((name, k, r["rate"], r["compile_s"], r["flops_per_image"]))
      print(rows[-1], flush=True)
  device = jax.devices()[0]
  print(f"\n{device.device_kind}, jax {jax.__version__}, bf16, 224 px, batch {args.batch} per "
        f"member, median of {args.repeats} windows of {args.steps} steps\n")
  print("| model | members | JAX member-img/s | PyTorch AMP img/s | JAX / PyTorch | TFLOP/s | "
        "compile s |\n|---|---|---|---|---|---|---|")
  for name, k, rate, compile_s, flops in rows:
    peer = peers.get(name)
    print(f"| {name} | {k} | {rate:,.0f} | {'-' if peer is None else f'{peer:,.0f}'} | "
          f"{'-' if peer is None else f'{rate / peer:.2f}x'} | "
          f"{rate * flops / 1e12:.0f} | {compile_s:.0f} |")


if __name__ == "__main__":
  main()
