"""Where the time of one train step goes: a device trace summarised by kernel family.

  python experiments/profile_step.py --model=resnet50 --size=32 --image-size=224 \
      --dtype=bfloat16 --members=1 --batch=128 --out=/tmp/profile

Traces ``--steps`` steps of the shared train step with ``jax.profiler`` (the raw trace stays in
``--out`` for TensorBoard or Perfetto) and prints the device time per kernel family
(convolutions, matrix products, XLA fusions, copies), the busy fraction of the wall time, and the
slowest kernels.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_throughput import setup, synthetic_inputs  # noqa: E402

FAMILIES = (  # first match wins; names as cuDNN, cuBLAS and XLA's GPU emitters print them
    ("convolution", ("conv", "cudnn", "xmma", "implicit", "wgrad", "dgrad", "fprop")),
    ("matrix product", ("gemm", "cublas", "nvjet", "cutlass", "triton")),
    ("copy / memset", ("memcpy", "memset", "copy")),
    ("reduction fusion", ("reduce", "row_reduction", "column_reduction")),
    ("other XLA fusion", ("fusion", "loop_", "input_", "wrapped_", "scatter", "gather")),
)


def family(name: str) -> str:
  low = name.lower()
  for fam, keys in FAMILIES:
    if any(k in low for k in keys):
      return fam
  return "other"


def summarise(trace_path: str, steps: int, top: int = 12) -> str:
  with gzip.open(trace_path, "rb") as f:
    events = json.load(f)["traceEvents"]
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  device_pids = {pid for pid, n in names.items() if "/device:" in n and "CPU" not in n}
  kernels = [e for e in events if e.get("ph") == "X" and e.get("pid") in device_pids]
  if not kernels:
    return f"no device kernels in the trace (processes: {sorted(set(names.values()))})"
  by_family, by_name = collections.Counter(), collections.Counter()
  for e in kernels:
    by_family[family(e["name"])] += e["dur"]
    by_name[e["name"]] += e["dur"]
  span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
  busy = sum(by_family.values())
  lines = [f"{len(kernels)} kernels over {steps} steps; device busy {busy / 1e3:.1f} ms of "
           f"{span / 1e3:.1f} ms span ({100 * busy / span:.0f}%; streams may overlap)",
           "", "| kernel family | ms per step | share |", "|---|---|---|"]
  for fam, dur in by_family.most_common():
    lines.append(f"| {fam} | {dur / 1e3 / steps:.2f} | {100 * dur / busy:.0f}% |")
  lines += ["", "| slowest kernels (total over the trace) | ms | calls |", "|---|---|---|"]
  counts = collections.Counter(e["name"] for e in kernels)
  for name, dur in by_name.most_common(top):
    lines.append(f"| {name[:90]} | {dur / 1e3:.1f} | {counts[name]} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet_small")
  parser.add_argument("--size", type=int, default=28)
  parser.add_argument("--image-size", type=int, default=0)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--members", type=int, default=1)
  parser.add_argument("--strategy", default="auto")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--out", required=True, help="directory for the raw trace")
  args = parser.parse_args()
  trainer, states, channels = setup(args.model, args.members, args.strategy, args.size,
                                    args.dtype, args.image_size)
  images, labels, idx, lrs, seeds = synthetic_inputs(args.members, args.batch, args.size, channels)
  step, _ = trainer.step_for(args.members, args.batch)
  for t in range(3):
    states, _ = step(states, seeds, images, labels, idx, lrs, t)
  jax.block_until_ready(states)
  start = time.perf_counter()
  with jax.profiler.trace(args.out):
    for t in range(args.steps):
      states, _ = step(states, seeds, images, labels, idx, lrs, t)
    jax.block_until_ready(states)
  wall = time.perf_counter() - start
  print(f"{args.model} K={args.members} {args.strategy} {args.dtype} batch {args.batch}: "
        f"{wall / args.steps * 1e3:.1f} ms per traced step (wall, profiler on)")
  traces = sorted(glob.glob(os.path.join(args.out, "plugins/profile/*/*.trace.json.gz")),
                  key=os.path.getmtime)
  print(summarise(traces[-1], args.steps) if traces else f"no trace written under {args.out}")


if __name__ == "__main__":
  main()
