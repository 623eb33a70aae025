"""Where the time of one train step goes: a trace summarised by kernel family.

  python experiments/profile_step.py --model=resnet50 --size=32 --image-size=224 \
      --dtype=bfloat16 --members=1 --batch=128 --out=/tmp/profile
  python experiments/profile_step.py --out=/tmp/profile  # the default model on the CPU

Traces ``--steps`` steps of the shared train step with ``jax.profiler`` (the raw trace stays in
``--out`` for TensorBoard or Perfetto) and prints the time per kernel family (convolutions,
matrix products, XLA fusions, copies), the busy fraction of the wall time, and the slowest
kernels. On a GPU the kernels are the device's; on the CPU they are XLA's ops as its runtime
runs them (``--xla_cpu_enable_xprof_traceme``), classified by the optimised HLO: a convolution
whose output does not lead with the batch is a kernel gradient. ``--kernel-grad`` picks the
convolutions' kernel-gradient formulation (``starsse_jax.conv``).
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time

# Before JAX starts its CPU backend: name XLA:CPU's ops in the trace.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_throughput import setup, synthetic_inputs  # noqa: E402
from starsse_jax import conv  # noqa: E402

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
  span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
  busy = sum(e["dur"] for e in kernels)
  head = (f"{len(kernels)} kernels over {steps} steps; device busy {busy / 1e3:.1f} ms of "
          f"{span / 1e3:.1f} ms span ({100 * busy / span:.0f}%; streams may overlap)")
  return _tables(head, kernels, family, steps, top, "kernel")


def _tables(head: str, events, family_of, steps: int, top: int, what: str) -> str:
  """Time per family of ``events`` and the slowest ones, as markdown under ``head``."""
  by_family, by_name = collections.Counter(), collections.Counter()
  for e in events:
    by_family[family_of(e["name"])] += e["dur"]
    by_name[e["name"]] += e["dur"]
  busy = sum(by_family.values())
  lines = [head, "", f"| {what} family | ms per step | share |", "|---|---|---|"]
  for fam, dur in by_family.most_common():
    lines.append(f"| {fam} | {dur / 1e3 / steps:.2f} | {100 * dur / busy:.0f}% |")
  lines += ["", f"| slowest {what}s (total over the trace) | family | ms | calls |",
            "|---|---|---|---|"]
  counts = collections.Counter(e["name"] for e in events)
  for name, dur in by_name.most_common(top):
    lines.append(f"| {name[:70]} | {family_of(name)} | {dur / 1e3:.1f} | {counts[name]} |")
  return "\n".join(lines)


def cpu_families(hlo_text: str, batch: int) -> dict[str, str]:
  """Family of each instruction of an optimised XLA:CPU module, by what it (or the computation
  it calls) contains."""
  bodies, current = {}, None
  for line in hlo_text.splitlines():
    head = re.match(r"\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if head and "=" not in line.split("{")[0]:
      current = head.group(1)
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  families = {}
  for lines in bodies.values():
    for line in lines:
      m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\]\S*\s+([\w\-]+)\(", line)
      if not m:
        continue
      name, _, dims, opcode = m.groups()
      called = re.search(r"calls=%?([\w.\-]+)", line)
      text = line + "\n".join(bodies.get(called.group(1), [])) if called else line
      lead = int(dims.split(",")[0]) if dims else 0
      if " convolution(" in text:
        families[name] = ("convolution (forward, input gradient)" if lead == batch else
                          "convolution (kernel gradient)")
      elif " dot(" in text:
        families[name] = "matrix product"
      elif opcode in ("copy", "transpose") or "transpose" in name or "copy" in name:
        families[name] = "copy / transpose"
      elif " reduce(" in text:
        families[name] = "reduction fusion"
      elif opcode == "fusion":
        families[name] = "other XLA fusion"
      elif opcode == "while":
        families[name] = "loop (its ops counted apart)"
  return families


def summarise_cpu(trace_path: str, hlo_text: str, steps: int, batch: int, top: int = 12) -> str:
  """Time per op family of XLA:CPU's ops in a host trace."""
  with gzip.open(trace_path, "rb") as f:
    events = json.load(f)["traceEvents"]
  families = cpu_families(hlo_text, batch)
  ops = [e for e in events if e.get("ph") == "X" and e.get("name") in families
         and not families[e["name"]].startswith("loop")]
  if not ops:
    return "no XLA:CPU ops in the trace (was XLA_FLAGS overridden?)"
  busy = sum(e["dur"] for e in ops)
  cores = threads_busy(ops)
  head = (f"{len(ops)} ops over {steps} steps; {busy / 1e3 / steps:.1f} ms of op time per step "
          "(ops on different threads may overlap); of the ops' span, ms per step with "
          + ", ".join(f"{n} thread(s) busy: {t / 1e3 / steps:.1f}" for n, t in sorted(cores.items())))
  return _tables(head, ops, families.get, steps, top, "op")


def threads_busy(ops) -> collections.Counter:
  """{n: microseconds during which exactly n threads ran an op}, over the ops' whole span."""
  edges = sorted([(e["ts"], 1, e["tid"]) for e in ops] + [(e["ts"] + e["dur"], -1, e["tid"])
                                                          for e in ops])
  running, time_with = collections.Counter(), collections.Counter()
  last = edges[0][0]
  for t, change, tid in edges:
    time_with[sum(1 for v in running.values() if v > 0)] += t - last
    running[tid] += change
    last = t
  return time_with


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
  parser.add_argument("--kernel-grad", default="auto", choices=conv.KERNEL_GRADS)
  parser.add_argument("--out", required=True, help="directory for the raw trace")
  args = parser.parse_args()
  trainer, states, channels = setup(args.model, args.members, args.strategy, args.size,
                                    args.dtype, args.image_size, kernel_grad=args.kernel_grad)
  images, labels, idx, lrs, seeds = synthetic_inputs(args.members, args.batch, args.size, channels)
  step, _ = trainer.step_for(args.members, args.batch)
  arguments = (seeds, images, labels, idx, lrs)
  compiled = step.lower(states, *arguments, 0, 0.0).compile()
  for t in range(3):
    states, _ = compiled(states, *arguments, t, 0.0)
  jax.block_until_ready(states)
  start = time.perf_counter()
  with jax.profiler.trace(args.out):
    for t in range(args.steps):
      states, _ = compiled(states, *arguments, t, 0.0)
    jax.block_until_ready(states)
  wall = time.perf_counter() - start
  print(f"{args.model} K={args.members} {args.strategy} {args.dtype} batch {args.batch} "
        f"kernel_grad={args.kernel_grad} on {jax.devices()[0].device_kind}: "
        f"{wall / args.steps * 1e3:.1f} ms per traced step (wall, profiler on)")
  traces = sorted(glob.glob(os.path.join(args.out, "**/*.trace.json.gz"), recursive=True),
                  key=os.path.getmtime)
  if not traces:
    print(f"no trace written under {args.out}")
  elif jax.default_backend() == "cpu":
    print(summarise_cpu(traces[-1], compiled.as_text(), args.steps, args.batch))
  else:
    print(summarise(traces[-1], args.steps))


if __name__ == "__main__":
  main()
