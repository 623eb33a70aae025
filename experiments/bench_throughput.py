"""Member-img/s of the shared train step for each member-axis strategy, beside one member alone.

  python experiments/bench_throughput.py [--model=resnet_small] [--members=1,4] [--batch=128]

Synthetic uint8 images already on the device; the step includes on-device augmentation. Prints a
markdown table with the device name. A strategy is "parallel efficiency" x as fast per member as
the single-member step measured in the same run (1.0 = no loss from training members together).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import configlib, members, models, train  # noqa: E402


def bench(model_name: str, k: int, strategy: str, batch: int, size: int, steps: int) -> float:
  config = configlib.base_config()
  config.model.name = model_name
  model = models.build_model(config.model, 10)
  channels = 1 if size <= 28 else 3
  trainer = train.Trainer(model, train.make_optimizer(5e-4, 0.9), np.full(channels, 0.5, np.float32),
                          np.full(channels, 0.25, np.float32), 2, True, strategy, 0)
  states = members.stack([trainer.init_variables(s, (size, size, channels)) for s in range(k)])
  states["opt_state"] = jax.vmap(trainer.tx.init)(states["params"])
  rng = np.random.default_rng(0)
  n = max(4 * batch, 512)
  images = jax.device_put(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8))
  labels = jax.device_put(rng.integers(0, 10, n).astype(np.int32))
  idx = jax.device_put(rng.integers(0, n, (k, batch)))
  lrs, seeds = np.full(k, 0.01, np.float32), np.arange(k, dtype=np.int32)
  for t in range(3):  # compile and warm up
    states, _ = trainer.step(states, seeds, images, labels, idx, lrs, t)
  jax.block_until_ready(states)
  start = time.perf_counter()
  for t in range(steps):
    states, _ = trainer.step(states, seeds, images, labels, idx, lrs, t)
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
  args = parser.parse_args()
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  baseline = bench(args.model, 1, "unroll", args.batch, args.size, args.steps)
  rows = [("1 (baseline)", "-", baseline, 1.0)]
  for k in [int(x) for x in args.members.split(",") if int(x) > 1]:
    for strategy in args.strategies.split(","):
      rate = bench(args.model, k, strategy, args.batch, args.size, args.steps)
      rows.append((str(k), strategy, rate, rate / baseline))
  print(f"\n{args.model}@{args.size}px, batch {args.batch} per member, {device.device_kind}\n")
  print("| members | strategy | member img/s | parallel efficiency |")
  print("|---|---|---|---|")
  for k, strategy, rate, eff in rows:
    print(f"| {k} | {strategy} | {rate:,.0f} | {eff:.2f} |")


if __name__ == "__main__":
  main()
