"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8 (see test_multidevice.py).

Trains the same phases on one device and on 8, and prints the largest parameter differences.
"""
import json
import sys

import jax
import numpy as np

from conftest import synthetic_transfer, tiny_config
from starsse_jax import build, members, methods, models, train


def trainer(config, data, num_devices):
  config.execution.num_devices = num_devices
  model = models.build_model(config.model, data.num_target_classes)
  return build.make_trainer(config, model, data, config.finetune)


def run(k, batch, num_devices, data, pre, method="local_de"):
  config = tiny_config(method, members=k)
  config.finetune.batch_size = batch
  budget = methods.Budget(num_members=k, steps_per_epoch=len(data.target_train) // batch,
                          epochs=1.0, lr=0.05, lr_ratio=1.0, cycle_ratio=1.0,
                          fge_cycle_epochs=2, fge_lr_1=0.05, fge_lr_2=1e-4, swa_epochs=1.0,
                          swa_lr=0.01, swa_lr_min=1e-4, swa_schedule="constant", swa_start=0.0,
                          swa_collect_every=0.5)
  plan = methods.build_plan(method, budget)
  states, _ = train.run_plan(trainer(config, data, num_devices), plan, data.target_train, batch,
                             pretrained=pre)
  return states


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  assert len(jax.devices()) == 8, jax.devices()
  data = synthetic_transfer(n_train=48)
  config = tiny_config()
  t = trainer(config, data, 1)
  pre = members.stack([t.init_variables(100, data.image_shape)])
  out = {}
  for k, batch in ((8, 8), (4, 8), (1, 8)):
    single = run(k, batch, 1, data, pre)
    multi = run(k, batch, 8, data, pre)
    out[f"k{k}"] = {"params": max_diff(single["params"], multi["params"]),
                    "batch_stats": max_diff(single["batch_stats"], multi["batch_stats"])}
  # SWA: 4 averaging members on 4 x 2 devices, then BatchNorm recomputed for the averages.
  single, multi = run(5, 8, 1, data, pre, "swa"), run(5, 8, 8, data, pre, "swa")
  out["swa_k5"] = {"params": max_diff(single["params"], multi["params"]),
                   "batch_stats": max_diff(single["batch_stats"], multi["batch_stats"])}
  try:
    run(3, 12, 8, data, pre)
    out["k3_error"] = None
  except ValueError as e:
    out["k3_error"] = str(e)
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
