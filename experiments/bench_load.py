"""How long loading target data takes, per source, for a CIFAR-shaped dataset.

  python experiments/bench_load.py [--n=50000] [--folder-n=5000]

- TFDS: ``tfds:cifar100`` under ``tfds.testing.mock_data`` (50,000 train + 10,000 test examples,
  32 x 32 x 3; the mock generates examples instead of reading array_record files, so this times
  the library's chunked read and stacking, not disk).
- npz: the same shapes written with numpy.savez and read back.
- image folder: ``--folder-n`` PNG files decoded (threads) and cached; the second read is the cache.
Prints seconds per source (wall time, one run each).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import sources  # noqa: E402


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=50_000)
  parser.add_argument("--folder-n", type=int, default=5_000)
  args = parser.parse_args()
  rows = []
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=args.n):
    seconds, splits = timed(lambda: sources.read("tfds:cifar100"))
  rows.append((f"tfds:cifar100 (mock, {args.n:,} per split)", seconds, splits["train"].images.shape))
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "c.npz")
    np.savez(path, train_images=rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8),
             train_labels=rng.integers(0, 100, args.n),
             test_images=rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8),
             test_labels=rng.integers(0, 100, 10_000))
    seconds, splits = timed(lambda: sources.read(f"npz:{path}"))
    rows.append((f"npz ({args.n:,} + 10,000)", seconds, splits["train"].images.shape))
    from PIL import Image  # pylint: disable=g-import-not-at-top
    root = os.path.join(tmp, "folder")
    for split, n in (("train", args.folder_n), ("test", args.folder_n // 5)):
      for i in range(n):
        d = os.path.join(root, split, f"class_{i % 10}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            os.path.join(d, f"{i}.png"))
    cache = os.path.join(tmp, "cache")
    seconds, splits = timed(lambda: sources.read(f"folder:{root}", cache_dir=cache))
    rows.append((f"image folder ({args.folder_n:,} + {args.folder_n // 5:,} PNGs), decoding",
                 seconds, splits["train"].images.shape))
    seconds, splits = timed(lambda: sources.read(f"folder:{root}", cache_dir=cache))
    rows.append(("image folder, again (cache)", seconds, splits["train"].images.shape))
  print("| source | seconds | train images |\n|---|---|---|")
  for name, seconds, shape in rows:
    print(f"| {name} | {seconds:.1f} | {shape} |")


if __name__ == "__main__":
  main()
