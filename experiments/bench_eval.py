"""Wall time of the evaluation's predictions split across processes, against one process.

  python experiments/bench_eval.py [--members=5] [--config=starsse] [--repeats=2]

Predicts the test, validation and OOD sets of ``--config``'s data (the embedded Fashion-MNIST
transfer split by default, at 200 training and validation images per class: the target set the
README's table was measured on) with K members of its model and recomputes their BatchNorm statistics
on the training images (what soups and SWA do), as ``api.evaluate`` does through
``starsse_jax.inference``: once as one process pinned to one core, once as two processes pinned
to a core each (joined on this machine, gloo collectives). Each timing is the median of
``--repeats`` evaluations after a first one that compiles; the two layouts are timed in one run,
and the probabilities of both are checked to agree.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(out: str, config_name: str, k: int, repeats: int, coordinator: str = "",
           num_processes: int = 1, process_id: int = 0) -> None:
  import ml_collections  # pylint: disable=g-import-not-at-top
  from starsse_jax import distributed  # pylint: disable=g-import-not-at-top
  if coordinator:
    distributed.initialize(ml_collections.ConfigDict(dict(
        distributed=True, coordinator_address=coordinator, num_processes=num_processes,
        process_id=process_id, initialization_timeout_s=120)))
  import numpy as np  # pylint: disable=g-import-not-at-top
  from starsse_jax import build, configs, data as data_lib, inference, members, models  # pylint: disable=g-import-not-at-top
  config = configs.load(config_name)
  if config_name == "starsse":  # the target set the README's table was measured on (until
    config.data.target_train_per_class = config.data.target_val_per_class = 200  # 2026-12-02)
  data = data_lib.load_transfer_data(config)
  model = models.build_model(config.model, data.num_target_classes)
  trainer = build.make_trainer(config, model, data, config.finetune)
  variables = members.stack([trainer.init_variables(s, data.image_shape) for s in range(k)])
  sets = [data.target_test.images, data.target_val.images] + (
      [data.ood.images] if data.ood is not None else [])

  def evaluate():
    probs = [build.predict_members(config, data, model, variables, images) for images in sets]
    inference.recompute_batch_stats(inference.Network(model, data.mean, data.std),
                                    variables["params"], variables["batch_stats"],
                                    data.target_train.images, batch_size=config.eval.bn_batch_size)
    return probs

  start = time.perf_counter()
  probs = evaluate()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    evaluate()
    times.append(time.perf_counter() - start)
  if distributed.is_writer():
    np.savez(out, *probs)
    with open(out + ".json", "w") as f:
      json.dump({"first_s": first, "median_s": sorted(times)[len(times) // 2],
                 "images": int(sum(len(s) for s in sets)), "train_images": len(
                     data.target_train)}, f)


def _launch(tmp: str, name: str, args, processes: int) -> dict:
  out = os.path.join(tmp, f"{name}.npz")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  port = None
  if processes > 1:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
  procs = []
  for i in range(processes):
    joining = [f"127.0.0.1:{port}", str(processes), str(i)] if processes > 1 else []
    command = ["taskset", "-c", str(i), sys.executable, __file__, "--worker", out, args.config,
               str(args.members), str(args.repeats), *joining]
    procs.append(subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=3600)
    if p.returncode:
      raise RuntimeError(f"{name}: {err[-3000:]}")
  with open(out + ".json") as f:
    return json.load(f) | {"out": out}


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    out, config_name, k, repeats, *joining = sys.argv[2:]
    joined = (joining[0], int(joining[1]), int(joining[2])) if joining else ()
    worker(out, config_name, int(k), int(repeats), *joined)
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="starsse")
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  if (os.cpu_count() or 1) < 2:
    raise SystemExit("Needs two cores: one per process.")
  import numpy as np  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    one = _launch(tmp, "one", args, 1)
    two = _launch(tmp, "two", args, 2)
    a, b = np.load(one["out"]), np.load(two["out"])
    worst = max(float(np.max(np.abs(a[f] - b[f]))) for f in a.files)
  print(f"K = {args.members} members of --config={args.config}: {one['images']} images "
        f"predicted, BatchNorm statistics over {one['train_images']} training images\n")
  print("| layout | first evaluation (compiles) s | evaluation s (median) | vs one process |\n"
        "|---|---|---|---|")
  for name, r in (("1 process x 1 core", one), ("2 processes x 1 core", two)):
    print(f"| {name} | {r['first_s']:.2f} | {r['median_s']:.2f} | "
          f"{r['median_s'] / one['median_s']:.2f}x |")
  print(f"\nLargest difference of a probability between the layouts: {worst:.1e}")


if __name__ == "__main__":
  main()
