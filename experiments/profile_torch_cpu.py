"""Where PyTorch's CPU train step spends its time, by operation family, to set beside
``profile_step.py``'s XLA:CPU profile of the same model and batch.

  V/bin/python experiments/profile_torch_cpu.py --model=resnet_small
  V/bin/python experiments/profile_torch_cpu.py --model=vit [--channels-last] [--steps=5]

V is a Python with PyPI's torch (and timm for the ViT): ``python3 -m venv V &&
V/bin/pip install -r experiments/requirements-bench.txt``. The model and the step are
``torch_reference.CpuRunner``'s (the benchmark's peer: the project's ``resnet_small`` or
``configs/vit_tiny.py``'s ViT, batch 128, crop + flip, SGD). ``torch.profiler`` records
``--steps`` steps after a warm-up; each ATen operator's own CPU time (``self_cpu_time``: time in
the operator less its children, summed over threads) is put in a family: convolutions, matrix
products, normalisation, elementwise, copies, the optimizer, other. Prints ms per step per family
and the slowest operators.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FAMILIES = (  # first match wins, on the ATen operator's name
    ("convolution", ("conv", "mkldnn_convolution")),
    ("matrix product", ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm",
                        "scaled_dot_product")),
    ("normalisation", ("batch_norm", "layer_norm", "native_batch_norm", "native_layer_norm")),
    ("optimizer", ("_foreach", "sgd")),
    ("copy / layout", ("copy_", "contiguous", "clone", "cat", "to_dense", "permute", "transpose",
                       "index", "pad", "empty_strided", "as_strided", "reshape", "view",
                       "unbind", "split", "expand", "stack")),
    ("elementwise", ("add", "mul", "div", "sub", "relu", "gelu", "threshold", "softmax", "exp",
                     "where", "fill", "zero", "sum", "mean", "max", "log", "nll", "cross",
                     "rsub", "neg", "sqrt", "pow", "lt", "ne", "eq", "rand", "bernoulli")),
)


def family(name: str) -> str:
  low = name.lower().replace("aten::", "")
  for fam, keys in FAMILIES:
    if any(k in low for k in keys):
      return fam
  return "other"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet_small", choices=("resnet_small", "vit"))
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--channels-last", action="store_true")
  parser.add_argument("--top", type=int, default=12)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=g-import-not-at-top
  from torch_reference import CpuRunner  # pylint: disable=g-import-not-at-top
  # The JAX benchmark's models (starsse_jax's base config and configs/vit_tiny.py), by value so
  # that this runs without the project's dependencies.
  if args.model == "resnet_small":
    spec = dict(width=16, stages=[1, 1, 1])
  else:
    spec = dict(width=64, stages=[], vit=dict(patch=4, depth=4, heads=4))
  runner = CpuRunner(args.model, batch=args.batch, size=28, channels=1,
                     channels_last=args.channels_last, **spec)
  runner(3)
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    rate = runner(args.steps)
  own = collections.Counter()
  ops = []
  for e in prof.key_averages():
    if not e.key.startswith("aten::"):
      continue
    own[family(e.key)] += e.self_cpu_time_total
    ops.append((e.self_cpu_time_total, e.key, e.count))
  total = sum(own.values())
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model} batch "
        f"{args.batch} {'channels_last' if args.channels_last else 'NCHW'}: {rate:,.0f} img/s "
        f"with the profiler on ({args.batch / rate * 1e3:.1f} ms per step); operators' own CPU "
        f"time {total / 1e3 / args.steps:.1f} ms per step (summed over threads)\n")
  print("| op family | ms per step | share |\n|---|---|---|")
  for fam, t in own.most_common():
    print(f"| {fam} | {t / 1e3 / args.steps:.2f} | {t / total:.0%} |")
  print("\n| slowest operators (own time, total) | family | ms | calls |\n|---|---|---|---|")
  for t, name, count in sorted(ops, reverse=True)[:args.top]:
    print(f"| {name} | {family(name)} | {t / 1e3:.1f} | {count} |")


if __name__ == "__main__":
  main()
