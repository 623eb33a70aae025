"""Member-img/s of the shared train step for each member-axis strategy, beside one member alone.

  python experiments/bench_throughput.py [--model=resnet_small] [--members=1,4] [--batch=128]
  # the paper's setting: 32 px images random-resized-cropped to 224 px on the device, bf16
  python experiments/bench_throughput.py --model=resnet50 --size=32 --image-size=224 \
      --dtype=bfloat16 --members=1,4,8 --strategies=unroll,map --torch

Synthetic uint8 images already on the device; the step includes on-device augmentation. Prints a
markdown table with the device name. "vs one member" is member-img/s over the single-member
step measured in the same run (1.0 = no loss from training members together). "TFLOP/s" counts
the FLOPs of the single-member step as XLA's cost analysis does (for the program with XLA's own
kernel gradients: the same arithmetic). The "epoch" row runs the real phase runner over one
epoch of host-resident data (batch order drawn on the host, images gathered and augmented on the
device) with the auto strategy, to compare with the step alone.

``--kernel-grad=taps,xla`` adds a one-member row per kernel-gradient formulation
(``starsse_jax.conv``; the first is the baseline). ``--torch-cpu`` adds the same model and batch
trained by PyTorch on the CPU, NCHW and channels_last, in this process if it imports torch, else
served by ``--torch-python`` (Debian's ``python3-torch`` is for the system Python):

  python experiments/bench_throughput.py --members=1 --no-epoch --kernel-grad=taps,xla \
      --torch-cpu --steps=20 --repeats=7

The one-member rows are then measured in ``--repeats`` interleaved rounds (a window of each
setting per round) and JAX's rate over PyTorch's is the median of the rounds' ratios: a shared
machine's speed drifts between minutes, windows taken side by side drift together.
``--torch`` adds torchvision's ResNet-50 trained as the official PyTorch code does (fp32) and
with AMP bf16 + channels_last, in the same process (needs torch and torchvision, and a GPU).

Each rate is the median of ``--repeats`` timed windows of ``--steps`` steps after a warm-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import (augment, configlib, data as data_lib, inference, members, models,  # noqa: E402
                         optimizers, train)
from starsse_jax.step import Trainer  # noqa: E402


def setup(model_name: str, k: int, strategy: str, size: int, dtype: str, image_size: int = 0,
          num_classes: int = 10, kernel_grad: str = "auto"):
  """(trainer, stacked states, channels) for K members of ``model_name`` on ``size`` px images."""
  config = _model_config(model_name)
  config.model.dtype = dtype
  model = models.build_model(config.model, num_classes)
  if hasattr(model, "kernel_grad"):  # ResNets: how convolution kernel gradients are computed
    model = model.clone(kernel_grad=kernel_grad)
  channels = 1 if size <= 28 else 3
  net = inference.Network(model, np.full(channels, 0.5, np.float32),
                          np.full(channels, 0.25, np.float32), image_size, strategy=strategy)
  trainer = Trainer(net, optimizers.make(optimizers.OptimizerConfig("sgd", 5e-4, 0.9)),
                    augment.Augment(crop_padding=2, flip=True, image_size=image_size))
  states = members.stack([trainer.init_variables(s, (size, size, channels)) for s in range(k)])
  states["opt_state"] = jax.vmap(trainer.tx.init)(states["params"])
  return trainer, states, channels


def _model_config(model_name: str):
  """The config whose model the benchmark trains: ``vit`` is ``configs/vit_tiny.py``'s ViT."""
  if model_name == "vit":
    from starsse_jax.configs import vit_tiny  # pylint: disable=g-import-not-at-top
    return vit_tiny.get_config()
  config = configlib.base_config()
  config.model.name = model_name
  return config


def synthetic_inputs(k: int, batch: int, size: int, channels: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  n = max(4 * batch, 512)
  images = jax.device_put(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, n).astype(np.int32))
  idx = jax.device_put(rng.integers(0, n, (k, batch)))
  lrs, seeds = np.full(k, 0.01, np.float32), np.arange(k, dtype=np.int32)
  return images, labels, idx, lrs, seeds


def _median_rate(run_window, images_per_window: int, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_window()
    times.append(time.perf_counter() - start)
  return images_per_window / statistics.median(times)


def step_flops(step, args) -> float:
  """FLOPs of one step as XLA's cost analysis counts them in the program lowered for the CPU
  (after lowering for a GPU, convolutions are library calls that the analysis does not count)."""
  cost = step.trace(*args).lower(lowering_platforms=("cpu",)).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def prepare(model_name: str, k: int, strategy: str, batch: int, size: int, dtype: str = "float32",
            image_size: int = 0, kernel_grad: str = "auto") -> dict:
  """The compiled step, warmed up: ``window(n)`` runs n steps and returns member-img/s."""
  trainer, states, channels = setup(model_name, k, strategy, size, dtype, image_size,
                                    kernel_grad=kernel_grad)
  images, labels, idx, lrs, seeds = synthetic_inputs(k, batch, size, channels)
  step, _ = trainer.step_for(k, batch)
  start = time.perf_counter()
  compiled = step.lower(states, seeds, images, labels, idx, lrs, 0, 0.0).compile()
  compile_s = time.perf_counter() - start
  # Counted on XLA's own kernel gradients: the per-tap loop's body would be counted once.
  counted = step if kernel_grad == "xla" or not hasattr(trainer.model, "kernel_grad") else (
      dataclasses.replace(trainer, network=dataclasses.replace(
          trainer.network, model=trainer.model.clone(kernel_grad="xla"))).step_for(
          k, batch)[0])
  flops = step_flops(counted, (states, seeds, images, labels, idx, lrs, 0, 0.0))
  box = {"states": states, "t": 0}

  def window(n):
    start, s = time.perf_counter(), box["states"]
    for _ in range(n):
      s, _ = compiled(s, seeds, images, labels, idx, lrs, box["t"], 0.0)
      box["t"] += 1
    jax.block_until_ready(s)
    box["states"] = s
    return k * batch * n / (time.perf_counter() - start)

  window(3)  # warm up
  return {"window": window, "flops_per_image": flops / (k * batch), "compile_s": compile_s}


def bench(model_name: str, k: int, strategy: str, batch: int, size: int, steps: int,
          dtype: str = "float32", image_size: int = 0, repeats: int = 3,
          kernel_grad: str = "auto") -> dict:
  """member-img/s of the jitted step on synthetic data already on the device (median of
  ``repeats`` windows of ``steps`` steps)."""
  prepared = prepare(model_name, k, strategy, batch, size, dtype, image_size, kernel_grad)
  rate = statistics.median(prepared["window"](steps) for _ in range(repeats))
  return {**prepared, "rate": rate}


def bench_epoch(model_name: str, k: int, strategy: str, batch: int, size: int, steps: int,
                dtype: str, image_size: int = 0, repeats: int = 3,
                kernel_grad: str = "auto") -> float:
  """member-img/s of the real phase runner over an epoch of host data (input pipeline included)."""
  trainer, states, channels = setup(model_name, k, strategy, size, dtype, image_size,
                                    kernel_grad=kernel_grad)
  rng = np.random.default_rng(0)
  n = batch * steps
  split = data_lib.Split(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
                         rng.integers(0, 10, n).astype(np.int32))
  table = np.full((steps, k), 0.01, np.float32)
  seeds = np.arange(k)
  box = {"states": train.run_phase(trainer, states, seeds, split, table[:3], batch, "warmup",
                                   train.PhaseLoop(actions=train.Actions(log_every=10**9))).states}

  def epoch():
    result = train.run_phase(trainer, box["states"], seeds, split, table, batch, "epoch",
                             train.PhaseLoop(actions=train.Actions(log_every=10**9)))
    box["states"] = jax.block_until_ready(result.states)

  return _median_rate(epoch, k * batch * steps, repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet_small")
  parser.add_argument("--size", type=int, default=28, help="stored image size (px)")
  parser.add_argument("--image-size", type=int, default=0,
                      help="train at this size via on-device random-resized-crop (0 = --size)")
  parser.add_argument("--batch", type=int, default=128, help="batch size per member")
  parser.add_argument("--members", default="1,4")
  parser.add_argument("--strategies", default="unroll,map,vmap")
  parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
  parser.add_argument("--repeats", type=int, default=3, help="timed windows (median is kept)")
  parser.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
  parser.add_argument("--no-epoch", action="store_true", help="skip the end-to-end epoch row")
  parser.add_argument("--torch", action="store_true", help="add torchvision ResNet-50 rows")
  parser.add_argument("--torch-cpu", action="store_true",
                      help="add PyTorch CPU rows for the same model and batch")
  parser.add_argument("--torch-python", default="/usr/bin/python3",
                      help="interpreter for --torch-cpu when this one cannot import torch")
  parser.add_argument("--kernel-grad", default="auto",
                      help="convolution kernel gradients: auto, xla, taps, or a comma list "
                           "(one baseline row each; the first is the baseline)")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}",
        flush=True)
  rows = []
  if args.torch:  # first, so that JAX's allocator has not yet taken the GPU memory
    from torch_reference import torch_resnet50_rates  # pylint: disable=g-import-not-at-top
    for what, rate in torch_resnet50_rates(args.batch, args.steps, args.image_size or args.size,
                                           args.repeats):
      rows.append(("1", what, "step (PyTorch)", rate, None, None))
      print(rows[-1], flush=True)
  train_size = args.image_size or args.size
  grads = args.kernel_grad.split(",")
  prep_args = dict(batch=args.batch, size=args.size, dtype=args.dtype,
                   image_size=args.image_size)
  bench_args = dict(**prep_args, steps=args.steps, repeats=args.repeats, kernel_grad=grads[0])
  # One member with each kernel gradient (and PyTorch), measured in interleaved rounds: this
  # machine's speed may drift between minutes, a ratio of windows taken side by side does not.
  singles = {g: prepare(args.model, 1, "unroll", **{**prep_args, "kernel_grad": g}) for g in grads}
  peers = torch_cpu_runners(args, train_size) if args.torch_cpu else {}
  rounds = {name: [] for name in list(singles) + list(peers)}
  for _ in range(args.repeats):
    for g, prepared in singles.items():
      rounds[g].append(prepared["window"](args.steps))
    for name, runner in peers.items():
      rounds[name].append(runner(args.steps))
  for runner in peers.values():
    runner(0)  # ends it
  median = {name: statistics.median(rates) for name, rates in rounds.items()}
  baseline = {**singles[grads[0]], "rate": median[grads[0]]}
  flops = baseline["flops_per_image"]
  for name in peers:
    rows.append(("1", name, "step (PyTorch)", median[name], None, None))
  for g in grads:
    rows.append(("1 (baseline)" if g == grads[0] else "1", f"kernel_grad={g}", "step", median[g],
                 median[g] / baseline["rate"], singles[g]["compile_s"]))
  for row in rows:
    print(row, flush=True)
  ks = [int(x) for x in args.members.split(",")]
  for k in [k for k in ks if k > 1]:
    for strategy in args.strategies.split(","):
      result = bench(args.model, k, strategy, **bench_args)
      rows.append((str(k), strategy, "step", result["rate"], result["rate"] / baseline["rate"],
                   result["compile_s"]))
      print(rows[-1], flush=True)
  if not args.no_epoch:
    k = max(ks)
    rate = bench_epoch(args.model, k, "auto", **bench_args)
    rows.append((str(k), "auto", "epoch (host data)", rate, rate / baseline["rate"], None))
  flop_note = f"{flops / 1e9:.2f} GFLOP per image per step" if flops else "no FLOP count"
  print(f"\n{args.model}@{train_size}px (stored {args.size}px) {args.dtype}, batch {args.batch} "
        f"per member, {device.device_kind}, {flop_note}\n")
  print("| members | setting | measured | member img/s | vs one member | TFLOP/s | compile s |")
  print("|---|---|---|---|---|---|---|")
  for k, strategy, what, rate, eff, compile_s in rows:
    eff_s = "-" if eff is None else f"{eff:.2f}"
    tflops = "-" if eff is None or not flops else f"{rate * flops / 1e12:.3g}"
    comp = "-" if compile_s is None else f"{compile_s:.0f}"
    print(f"| {k} | {strategy} | {what} | {rate:,.0f} | {eff_s} | {tflops} | {comp} |")
  if peers:
    print(f"\n{args.repeats} interleaved rounds of {args.steps} steps; JAX one member over "
          "PyTorch, median of the rounds' ratios:")
  for name in peers:
    for g in grads:
      ratio = statistics.median(a / b for a, b in zip(rounds[g], rounds[name]))
      print(f"  kernel_grad={g} / {name}: {ratio:.2f}x "
            f"(rounds {min(a / b for a, b in zip(rounds[g], rounds[name])):.2f}-"
            f"{max(a / b for a, b in zip(rounds[g], rounds[name])):.2f})")


def torch_cpu_runners(args, train_size: int) -> dict:
  """{setting: window(steps) -> img/s} for the benchmark's model trained by PyTorch on the CPU,
  NCHW and channels_last; in this process if it imports torch, else each in a process of
  ``--torch-python`` kept waiting between windows (``window(0)`` ends it)."""
  m = _model_config(args.model).model
  spec = dict(model_name=args.model, width=m.width, stages=list(m.stage_sizes),
              batch=args.batch, size=train_size, channels=1 if args.size <= 28 else 3)
  if args.model == "vit":
    spec["vit"] = dict(patch=m.patch, depth=m.depth, heads=m.heads)
  try:
    import torch_reference  # pylint: disable=g-import-not-at-top
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    runners = [_remote_runner(args.torch_python, {**spec, "channels_last": last})
               for last in (False, True)]
  else:
    runners = [torch_reference.CpuRunner(**spec, channels_last=last) for last in (False, True)]
  return {runner.label: runner for runner in runners}


def _remote_runner(python: str, spec: dict):
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference.py")
  try:
    # timm (the ViT's PyTorch peer) installed beside Debian's torch, as the test command does
    timm_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".timm")
    env = dict(os.environ, PYTHONPATH=timm_dir)
    proc = subprocess.Popen([python, script, json.dumps(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    ready = proc.stdout.readline()
  except OSError as e:
    ready, proc = "", e
  if not ready.startswith("ready"):
    sys.exit(f"--torch-cpu: this Python cannot import torch and {python} could not run the "
             f"PyTorch model ({proc}). Install torch here or point --torch-python at a Python "
             "that has it (Debian: apt-get install python3-torch python3-torchvision, then "
             "--torch-python=/usr/bin/python3).")

  def window(steps: int) -> float:
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    if steps == 0:
      proc.wait()
      return 0.0
    return float(proc.stdout.readline())

  window.label = ready.split(" ", 1)[1].strip()  # what the runner reports it is
  return window


if __name__ == "__main__":
  main()
