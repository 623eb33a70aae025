"""One of several processes of a run that spans them (see test_multiprocess.py), or the same
training in one process: trains K = 8 (one member per device) and K = 4 (4 members x 2 data shards)
on the 8 global devices, evaluates fixed variables (predictions and recomputed BatchNorm
statistics, split across the processes) and writes all of it to OUT (process 0 only).

  python multiprocess_check.py OUT [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""
import sys

import ml_collections
import numpy as np

from conftest import synthetic_transfer, tiny_config
from starsse_jax import (data as data_lib, distributed, inference, members, methods, metrics, models,
                         sharding, train)
from starsse_jax import build


class _Counted(np.ndarray):
  """Training images that count the rows read from them (by index arrays)."""
  rows_read = 0

  def __getitem__(self, key):
    if isinstance(key, np.ndarray):
      _Counted.rows_read += key.size
    return np.asarray(super().__getitem__(key))


def main(out, *joining):
  if joining:
    distributed.initialize(ml_collections.ConfigDict(dict(
        distributed=True, coordinator_address=joining[0], num_processes=int(joining[1]),
        process_id=int(joining[2]), initialization_timeout_s=120)))
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  data = synthetic_transfer(n_train=48)
  data.target_train = data_lib.Split(data.target_train.images.view(_Counted),
                                     data.target_train.labels)
  rows_needed = 0
  config = tiny_config()
  model = models.build_model(config.model, data.num_target_classes)
  pre = members.stack([build.make_trainer(config, model, data, config.finetune)
                       .init_variables(100, data.image_shape)])
  arrays = {}
  for k in (8, 4):
    config = tiny_config("local_de", members=k)
    config.finetune.batch_size = 8
    trainer = build.make_trainer(config, model, data, config.finetune)
    budget = methods.Budget(num_members=k, steps_per_epoch=len(data.target_train) // 8,
                            epochs=1.0, lr=0.05)
    rows_needed += k * 8 * budget.steps_per_epoch  # K members x batch 8, one epoch
    states, _ = train.run_plan(trainer, methods.build_plan("local_de", budget),
                               data.target_train, 8, pretrained=pre)
    host = sharding.to_host({"params": states["params"], "batch_stats": states["batch_stats"]})
    for i, leaf in enumerate(jax.tree.leaves(host)):
      arrays[f"k{k}_{i:04d}"] = leaf
  # Evaluation of the same variables in every layout: three members that no training touched,
  # batches that do not divide the test set, an odd number of them.
  fixed = members.stack([build.make_trainer(config, model, data, config.finetune)
                         .init_variables(200 + i, data.image_shape) for i in range(3)])
  test = data.target_test
  probs = inference.predict(inference.Network(model, data.mean, data.std), fixed, test.images,
                            batch_size=9)
  arrays["eval_probs"] = probs
  arrays["eval_metrics"] = np.asarray([metrics.accuracy(probs.mean(0), test.labels),
                                       metrics.nll(probs.mean(0), test.labels)])
  stats = inference.recompute_batch_stats(inference.Network(model, data.mean, data.std),
                                          fixed["params"], fixed["batch_stats"],
                                          data.target_train.images, batch_size=5)
  for i, leaf in enumerate(jax.tree.leaves(stats)):
    arrays[f"eval_stats_{i:04d}"] = np.asarray(leaf)
  if distributed.is_writer():
    np.savez(out, **arrays)
  print(f"process {jax.process_index()} of {jax.process_count()} read {_Counted.rows_read} of "
        f"{rows_needed} training rows", flush=True)
  print(f"process {jax.process_index()} of {jax.process_count()} done", flush=True)


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
