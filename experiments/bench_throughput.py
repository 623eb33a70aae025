"""Member-img/s of the shared train step for each member-axis strategy, beside one member alone.

  python experiments/bench_throughput.py [--model=resnet_small] [--members=1,4] [--batch=128]

Synthetic uint8 images already on the device; the step includes on-device augmentation. Prints a
markdown table with the device name. "vs one member" is member-img/s over the single-member
step measured in the same run (1.0 = no loss from training members together). The last row runs
the real phase runner over one epoch of host-resident data (batch order drawn on the host, images
gathered and augmented on the device) with the auto strategy, to compare with the step alone.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import configlib, data as data_lib, members, models, train  # noqa: E402


def _setup(model_name: str, k: int, strategy: str, size: int, dtype: str):
  config = configlib.base_config()
  config.model.name, config.model.dtype = model_name, dtype
  model = models.build_model(config.model, 10)
  channels = 1 if size <= 28 else 3
  trainer = train.Trainer(model, train.make_optimizer(5e-4, 0.9), np.full(channels, 0.5, np.float32),
                          np.full(channels, 0.25, np.float32), 2, True, strategy, 0)
  states = members.stack([trainer.init_variables(s, (size, size, channels)) for s in range(k)])
  states["opt_state"] = jax.vmap(trainer.tx.init)(states["params"])
  return trainer, states, channels


def bench_epoch(model_name: str, k: int, strategy: str, batch: int, size: int, steps: int,
                dtype: str) -> float:
  """member-img/s of the real phase runner over an epoch of host data (input pipeline included)."""
  trainer, states, channels = _setup(model_name, k, strategy, size, dtype)
  rng = np.random.default_rng(0)
  n = batch * steps
  split = data_lib.Split(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
                         rng.integers(0, 10, n).astype(np.int32))
  table = np.full((steps, k), 0.01, np.float32)
  seeds = np.arange(k)
  warm = train.run_phase(trainer, states, seeds, split, table[:3], batch, "warmup", log_every=10**9)
  start = time.perf_counter()
  result = train.run_phase(trainer, warm.states, seeds, split, table, batch, "epoch",
                           log_every=10**9)
  jax.block_until_ready(result.states)
  return k * batch * steps / (time.perf_counter() - start)


def bench(model_name: str, k: int, strategy: str, batch: int, size: int, steps: int,
          dtype: str = "float32") -> float:
  """member-img/s of the jitted step on synthetic data already on the device."""
  trainer, states, channels = _setup(model_name, k, strategy, size, dtype)
  rng = np.random.default_rng(0)
  n = max(4 * batch, 512)
  images = jax.device_put(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, n).astype(np.int32))
  idx = jax.device_put(rng.integers(0, n, (k, batch)))
  lrs, seeds = np.full(k, 0.01, np.float32), np.arange(k, dtype=np.int32)
  step, _ = trainer.step_for(k, batch)
  for t in range(3):  # compile and warm up
    states, _ = step(states, seeds, images, labels, idx, lrs, t)
  jax.block_until_ready(states)
  start = time.perf_counter()
  for t in range(steps):
    states, _ = step(states, seeds, images, labels, idx, lrs, t)
  jax.block_until_ready(states)
  return k * batch * steps / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet_small")
  parser.add_argument("--size", type=int, default=28)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--members", default="1,4")
  parser.add_argument("--strategies", default="unroll,map,vmap")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  baseline = bench(args.model, 1, "unroll", args.batch, args.size, args.steps, args.dtype)
  rows = [("1 (baseline)", "-", "step", baseline, 1.0)]
  ks = [int(x) for x in args.members.split(",")]
  for k in [k for k in ks if k > 1]:
    for strategy in args.strategies.split(","):
      rate = bench(args.model, k, strategy, args.batch, args.size, args.steps, args.dtype)
      rows.append((str(k), strategy, "step", rate, rate / baseline))
  k = max(ks)
  rate = bench_epoch(args.model, k, "auto", args.batch, args.size, args.steps, args.dtype)
  rows.append((str(k), "auto", "epoch (host data)", rate, rate / baseline))
  print(f"\n{args.model}@{args.size}px {args.dtype}, batch {args.batch} per member, "
        f"{device.device_kind}\n")
  print("| members | strategy | measured | member img/s | vs one member |")
  print("|---|---|---|---|---|")
  for k, strategy, what, rate, eff in rows:
    print(f"| {k} | {strategy} | {what} | {rate:,.0f} | {eff:.2f} |")


if __name__ == "__main__":
  main()
