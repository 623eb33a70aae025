import jax
import numpy as np
import pytest

from conftest import tiny_config
from starsse_jax import build, api, inference, members, metrics, models


def _model_and_vars(config, data, seeds=(0, 1)):
  model = models.build_model(config.model, data.num_target_classes)
  trainer = build.make_trainer(config, model, data, config.finetune)
  return model, members.stack([trainer.init_variables(s, data.image_shape) for s in seeds])


def test_predict_is_batch_size_independent_and_normalised(synthetic):
  config = tiny_config()
  model, variables = _model_and_vars(config, synthetic)
  images = synthetic.target_test.images
  net = inference.Network(model, synthetic.mean, synthetic.std)
  a = inference.predict(net, variables, images, batch_size=7)
  b = inference.predict(net, variables, images, batch_size=64)
  assert a.shape == (2, len(images), synthetic.num_target_classes)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)


def test_recomputed_batch_stats_average_equal_batches(synthetic):
  """First BN layer: mean over two half batches == mean over the whole set (exact, linear)."""
  config = tiny_config()
  model, variables = _model_and_vars(config, synthetic)
  images = synthetic.target_train.images  # 24 images
  garbage = jax.tree.map(lambda s: s + 100.0, variables["batch_stats"])
  net = inference.Network(model, synthetic.mean, synthetic.std)
  halves = inference.recompute_batch_stats(net, variables["params"], garbage, images, batch_size=12)
  whole = inference.recompute_batch_stats(net, variables["params"], garbage, images, batch_size=24)
  np.testing.assert_allclose(halves["bn1"]["mean"], whole["bn1"]["mean"],
                             rtol=1e-5, atol=1e-6)
  # The garbage running statistics are gone entirely.
  assert np.all(np.abs(np.asarray(whole["bn1"]["mean"])) < 50)
  x = (images.astype(np.float32) / 255 - synthetic.mean) / synthetic.std
  stem = np.asarray(variables["params"]["conv1"]["kernel"][0])  # 3x3x1xW
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  conv = sum(padded[:, i:i + x.shape[1], j:j + x.shape[2], :1] * stem[i, j, 0]
             for i in range(3) for j in range(3))
  np.testing.assert_allclose(whole["bn1"]["mean"][0], conv.mean((0, 1, 2)), rtol=1e-4,
                             atol=1e-5)


def test_soups_on_a_trained_ensemble(synthetic):
  config = tiny_config("local_de", members=3)
  pre = members.stack([_model_and_vars(config, synthetic, seeds=(7,))[1]["params"]])
  pre = {"params": members.take(pre, 0), "batch_stats": _model_and_vars(config, synthetic, (7,))[1]["batch_stats"]}
  ens = api.finetune(config, synthetic, pre)
  soups = api.make_soups(config, synthetic, ens)
  uniform = soups["uniform"]["variables"]["params"]
  jax.tree.map(lambda s, p: np.testing.assert_allclose(s[0], np.mean(p, 0), rtol=1e-6),
               uniform, ens.variables["params"])
  greedy = soups["greedy"]
  assert 1 <= len(greedy["members"]) <= 3 and len(set(greedy["members"])) == len(greedy["members"])
  own = inference.predict(inference.Network(ens.model, synthetic.mean, synthetic.std),
                          ens.variables, synthetic.target_val.images)
  best = int(np.argmax([metrics.accuracy(p, synthetic.target_val.labels) for p in own]))
  assert greedy["members"][0] == best
  results = api.evaluate(config, synthetic, ens)
  assert set(results["soups"]) == {"uniform", "greedy"}
  assert len(results["test"]["size_curve"]) == 3


@pytest.mark.parametrize("num_batches,processes", [(5, 2), (1, 2), (8, 3), (7, 1)])
def test_process_shares_cover_every_batch_once_in_equal_steps(monkeypatch, num_batches,
                                                                processes):
  shares = []
  for rank in range(processes):
    monkeypatch.setattr(jax, "process_count", lambda: processes)
    monkeypatch.setattr(jax, "process_index", lambda rank=rank: rank)
    shares.append(inference.share(num_batches))
  assert len({len(s) for s in shares}) == 1  # every process runs the same number of steps
  joined = [b for s in shares for b in s]
  assert [b for b in joined if b >= 0] == list(range(num_batches))  # in order, each once
  assert all(b == -1 for b in joined[num_batches:])  # padding only after the last batch
