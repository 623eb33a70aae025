"""What reading the training images from disk costs: loading, each step's gather, a phase.

  python experiments/bench_streaming.py [--config=pretrain] [--members=5] [--steps=100]

Loads ``--config``'s data (the embedded Fashion-MNIST transfer split by default, whose source
task's 30,000 training images are read) in memory and with
``data.host_memory_mb=1`` (every split then stays on disk, memory-mapped ``.npy`` files in a fresh
cache directory: the first load decompresses into it, the second reads the cache); times the
gather of one step's rows (``--members`` x the fine-tuning batch, the members' own seeded orders)
from the source task's training images either way; and trains a fine-tuning phase of ``--steps``
steps both ways with the batches sent from the host (``data.placement='host'``), checking that
the two phases end with identical parameters. One process, one run: the ratios compare like
with like on the same machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import build, api, configs, data as data_lib, members, train  # noqa: E402


def timed(fn, repeats: int = 1):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return out, float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="pretrain")
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()
  cache = tempfile.mkdtemp(prefix="bench-streaming-")
  loaded, load_s = {}, {}
  # The first load pays the imports' first use; the in-memory load comes second.
  for name, cap in (("disk, first load", 1), ("memory", 0), ("disk", 1)):
    config = configs.load(args.config)
    config.data.host_memory_mb, config.data.cache_dir = cap, cache
    config.data.placement = "host"
    loaded[name], load_s[name] = timed(lambda c=config: data_lib.load_transfer_data(c))
  config.data.host_memory_mb = 0
  k, b = args.members, config.finetune.batch_size
  rows = []
  for name in ("memory", "disk"):
    images = loaded[name].source_train.images
    orders = [train.data_order(s, len(images), b, 0) for s in range(k)]
    gather = lambda t, images=images: images[np.stack([o[t] for o in orders]).reshape(-1)]
    _, per_step = timed(lambda: [gather(t) for t in range(args.steps)], 3)
    rows.append((name, per_step / args.steps))
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}")
  print("\n| data | load s | gather of one step's rows (K x B images) ms |\n|---|---|---|")
  print(f"| in memory | {load_s['memory']:.2f} | {rows[0][1] * 1e3:.3f} |")
  print(f"| on disk, first load (decompressed into the cache) | {load_s['disk, first load']:.2f} "
        "| |")
  print(f"| on disk | {load_s['disk']:.2f} | {rows[1][1] * 1e3:.3f} |")

  params, speed = {}, {}
  for name in ("memory", "disk"):
    d = loaded[name]
    model = api.models.build_model(config.model, d.num_target_classes)
    trainer = build.make_trainer(config, model, d, config.finetune)
    start = members.stack([trainer.init_variables(s, d.image_shape) for s in range(k)])
    start["opt_state"] = jax.vmap(trainer.tx.init)(start["params"])
    lrs = np.full((args.steps, k), config.finetune.lr, np.float32)
    result = train.run_phase(trainer, start, np.arange(k), d.source_train, lrs, b, name,
                             train.PhaseLoop(actions=train.Actions(log_every=args.steps)))
    params[name] = result.states["params"]
    speed[name] = (args.steps - 1) / (result.seconds - result.first_step_seconds)
  same = all(jax.tree.leaves(jax.tree.map(lambda a, c: bool((a == c).all()), params["memory"],
                                          params["disk"])))
  print(f"\n| data | phase of {args.steps} steps, K = {k}, B = {b}: steps/s after the first |"
        "\n|---|---|")
  for name in ("memory", "disk"):
    print(f"| {'in memory' if name == 'memory' else 'on disk'} | {speed[name]:.2f} |")
  print(f"\nParameters after the phase identical: {same}")


if __name__ == "__main__":
  main()
