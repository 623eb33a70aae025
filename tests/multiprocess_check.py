"""One of several processes of a run that spans them (see test_multiprocess.py), or the same
training in one process: trains K = 8 (one member per device) and K = 4 (4 members x 2 data shards)
on the 8 global devices and writes the final variables to OUT (process 0 only).

  python multiprocess_check.py OUT [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""
import sys

import ml_collections
import numpy as np

from conftest import synthetic_transfer, tiny_config
from starsse_jax import api, distributed, members, methods, models, sharding, train


def main(out, *joining):
  if joining:
    distributed.initialize(ml_collections.ConfigDict(dict(
        distributed=True, coordinator_address=joining[0], num_processes=int(joining[1]),
        process_id=int(joining[2]), initialization_timeout_s=120)))
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8, jax.devices()
  data = synthetic_transfer(n_train=48)
  config = tiny_config()
  model = models.build_model(config.model, data.num_target_classes)
  pre = members.stack([api._trainer(config, model, data, config.finetune)  # pylint: disable=protected-access
                       .init_variables(100, data.image_shape)])
  arrays = {}
  for k in (8, 4):
    config = tiny_config("local_de", members=k)
    config.finetune.batch_size = 8
    trainer = api._trainer(config, model, data, config.finetune)  # pylint: disable=protected-access
    budget = methods.Budget(num_members=k, steps_per_epoch=len(data.target_train) // 8,
                            epochs=1.0, lr=0.05)
    states, _ = train.run_plan(trainer, methods.build_plan("local_de", budget),
                               data.target_train, 8, pretrained=pre)
    host = sharding.to_host({"params": states["params"], "batch_stats": states["batch_stats"]})
    for i, leaf in enumerate(jax.tree.leaves(host)):
      arrays[f"k{k}_{i:04d}"] = leaf
  if distributed.is_writer():
    np.savez(out, **arrays)
  print(f"process {jax.process_index()} of {jax.process_count()} done", flush=True)


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
