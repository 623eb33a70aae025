"""The pre-trained source networks the project ships, and the default configs that import them."""
import json
import os

import jax
import numpy as np

from starsse_jax import api, configs, data, inference, members, metrics, models, pretrained, weights

NAME = "fashion_mnist_source"
RECORD = pretrained.record(NAME)


def test_each_shipped_network_has_its_recorded_source_validation_metrics():
  """Each file, read as a user's weight file is, scores on the source task's validation slice
  (rebuilt from the record: the same classes, seed and size) what its record says, within the
  spread of the five networks (another CPU type moves the last digits)."""
  config = configs.load("pretrain")
  assert RECORD["model"] == json.loads(json.dumps(
      {k: config.model.to_dict()[k] for k in RECORD["model"]}))
  assert RECORD["source_classes"] == list(config.data.source_classes)
  source = data.load_transfer_data(config).source_train
  _, val = data.hold_out(source, RECORD["val_images_per_class"], config.seed)
  files = pretrained.files(NAME)
  assert [os.path.basename(f) for f in files] == [n["file"] for n in RECORD["networks"]]
  assert len(files) == 5 and all(os.path.getsize(f) < 400_000 for f in files)
  model = models.build_model(config.model, len(RECORD["source_classes"]))
  spread = {k: np.std([n[k] for n in RECORD["networks"]]) for k in ("val_accuracy", "val_nll")}
  assert min(spread.values()) > 0  # five independent networks, not one copied
  for path, recorded in zip(files, RECORD["networks"]):
    variables = weights.load(path, model)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))
    probs = inference.predict(inference.Network(model, RECORD["input_mean"], RECORD["input_std"]),
                              members.stack([variables]), val.images)[0]
    assert abs(metrics.accuracy(probs, val.labels) - recorded["val_accuracy"]) <= spread[
        "val_accuracy"], path
    assert abs(metrics.nll(probs, val.labels) - recorded["val_nll"]) <= spread["val_nll"], path


def _shrunk(name):
  config = configs.load(name)
  config.finetune.epochs = 1.0
  config.finetune.batch_size = 10
  config.data.target_train_per_class, config.data.target_val_per_class = 10, 4
  config.data.target_test_per_class = 10
  config.eval.soups = False
  return config


def test_the_default_configs_import_the_shipped_networks(tmp_path):
  """The default run fine-tunes from network 0 (nothing pre-trained, no source data read), with
  the statistics it was trained with; Global DE takes all five, member k from network k."""
  config = _shrunk("starsse")
  assert config.pretrain.checkpoint == f"shipped:{NAME}"
  assert list(config.pretrain.input_mean) == RECORD["input_mean"]
  d = data.load_transfer_data(config)
  assert d.source_train is None and list(d.mean) == [np.float32(m) for m in RECORD["input_mean"]]
  model = models.build_model(config.model, d.num_source_classes or 5)
  files = pretrained.files(NAME)
  expected = [weights.load(f, model) for f in files]
  for e in expected:
    e["params"].pop(config.model.head)
  imported = api.pretrain(config, d)
  assert members.num_members(imported) == 1
  jax.tree.map(np.testing.assert_array_equal, members.take(imported, 0), expected[0])
  every = api.pretrain(_shrunk("global_de"), d)
  assert members.num_members(every) == 5
  for k in range(5):
    jax.tree.map(np.testing.assert_array_equal, members.take(every, k), expected[k])
  # The default run end to end, shrunk: no pre-training directory, a full report.
  result = api.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "pretrained").exists()
  assert 0 < result["test"]["ensemble"]["accuracy"] <= 1
  with open(tmp_path / "run" / "results.json") as f:
    assert json.load(f)["config"]["pretrain"]["checkpoint"] == f"shipped:{NAME}"
