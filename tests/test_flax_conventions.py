"""A module written as Flax's own examples write it, a user's imbalanced arrays, and the memory
check: the paths a new user meets first.

The module: ``Conv -> nn.BatchNorm(use_running_average=not train) -> relu -> mean ->
nn.Dropout(deterministic=not train) -> nn.Dense(name='out')``, given with its pre-trained
variables to ``api.run``. Every method runs it end to end; the statistics that soups and SWA
recompute equal an independent computation (BatchNorm in train mode, dropout off); MC-dropout
turns its ``nn.Dropout`` on; an evaluation that fails keeps the training.
"""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, synthetic_transfer, tiny_config
from starsse_jax import api, build, evaluation, inputs, data as data_lib, inference, memory, members, models, report


class FlaxNet(nn.Module):
  """As Flax's examples write a network: BatchNorm and Dropout driven by ``train``."""
  num_classes: int
  dropout_first: bool = False  # Dropout before BatchNorm: then it changes the statistics

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), strides=2)(x)
    if self.dropout_first:
      x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    x = nn.Dropout(0.1, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="out")(x)


class Training(nn.Module):
  """Mode argument ``training``; dropout given at call time."""
  num_classes: int

  @nn.compact
  def __call__(self, x, training: bool = False):
    x = nn.Dense(6)(x.reshape(x.shape[0], -1))
    x = nn.Dropout(0.3)(x, deterministic=not training)
    return nn.Dense(self.num_classes, name="out")(x)


class Deterministic(nn.Module):
  """Mode argument ``deterministic`` (true in evaluation), as ``nn.Dropout`` names it."""
  num_classes: int

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    x = nn.Dense(6)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=deterministic)(x)
    x = nn.Dropout(0.3, deterministic=deterministic)(x)
    return nn.Dense(self.num_classes, name="out")(x)


class NoMode(nn.Module):
  """No mode argument at all."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm()(nn.Dense(6)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes, name="out")(x)


class ReadsConstants(nn.Module):
  """Reads a collection the library does not carry."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    scale = self.variable("constants", "scale", lambda: jnp.ones(()))
    return nn.Dense(self.num_classes, name="out")(x.reshape(x.shape[0], -1) * scale.value)


def _variables(module, data, seed=3):
  return module.clone(num_classes=7).init(jax.random.key(seed),
                                          np.zeros((1,) + data.image_shape, np.float32))


def _config(method, members_=3):
  config = tiny_config(method, members=members_)
  config.model.head = "out"
  return config


METHODS = ["starsse", "sse", "local_de", "global_de", "fge", "swa", "mc_dropout"]


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow)
                                    if m not in ("starsse", "swa") else m for m in METHODS])
def test_a_flax_examples_module_runs_every_method_with_its_soups(method, tmp_path):
  data = synthetic_transfer()
  config = _config(method)
  config.eval.learned_soup = True
  config.eval.learned_soup_epochs = 1
  if method == "mc_dropout":
    config.eval.mc_samples = 2
  if method == "starsse":
    config.eval.low_precision_bits = (6,)
    config.eval.low_precision_samples = 2
    config.eval.basin = True
    config.eval.basin_points = 3
  module = FlaxNet(num_classes=1)
  variables = [_variables(module, data, s) for s in range(3)] if method == "global_de" else (
      _variables(module, data))
  results = api.run(config, str(tmp_path), data=data, model=module, variables=variables)
  assert np.isfinite(results["test"]["ensemble"]["nll"])
  assert {"uniform", "greedy", "learned"} <= set(results["soups"])
  if method == "mc_dropout":  # the nn.Dropout layers turned on: passes differ
    assert results["mc_dropout"]["passes"] == 2
    accs = [m["nll"] for m in results["test"]["members"]]
    assert len(set(accs)) > 1
  if method == "starsse":
    assert results["low_precision"]["batchnorm"]
    assert len(results["basin"]["members"]) == 3
  assert os.path.exists(tmp_path / "report.html")


def _uint8(x):
  return np.clip(x * 40 + 120, 0, 255).astype(np.uint8)


def test_recomputed_statistics_of_batchnorm_and_dropout_equal_an_independent_computation():
  """Dropout before BatchNorm: the recompute (soups, SWA) must see the network as evaluated,
  dropout off, in train-mode BatchNorm: the per-batch mean/variance of the conv's outputs,
  averaged over batches. Checked for two stacked members and for their uniform soup."""
  rng = np.random.default_rng(0)
  images = _uint8(rng.normal(size=(12, 6, 6, 1)))
  module = FlaxNet(num_classes=2, dropout_first=True)
  vs = [module.init(jax.random.key(s), np.zeros((1, 6, 6, 1), np.float32)) for s in (0, 1)]
  stacked = members.stack([{"params": v["params"], "batch_stats": v["batch_stats"]} for v in vs])
  mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
  x = images.astype(np.float32) / 255.0
  conv = nn.Conv(6, (3, 3), strides=2)

  def independent(conv_params):
    means, variances = [], []
    for i in (0, 6):
      h = np.asarray(conv.apply({"params": conv_params}, jnp.asarray(x[i:i + 6])), np.float64)
      means.append(h.mean(axis=(0, 1, 2)))
      variances.append(h.var(axis=(0, 1, 2)))
    return np.mean(means, 0), np.mean(variances, 0)

  got = inference.recompute_batch_stats(inference.Network(module, mean, std), stacked["params"],
                                        stacked["batch_stats"], images, batch_size=6)
  for k, v in enumerate(vs):
    m, var = independent(v["params"]["Conv_0"])
    np.testing.assert_allclose(got["BatchNorm_0"]["mean"][k], m, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["BatchNorm_0"]["var"][k], var, rtol=1e-4, atol=1e-6)
  soup = jax.tree.map(lambda a: a.mean(0, keepdims=True), stacked["params"])
  got = inference.recompute_batch_stats(inference.Network(module, mean, std), soup,
                                        members.take(stacked["batch_stats"], [0]), images,
                                        batch_size=6)
  m, var = independent(jax.tree.map(lambda a: a[0], soup["Conv_0"]))
  np.testing.assert_allclose(got["BatchNorm_0"]["mean"][0], m, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["BatchNorm_0"]["var"][0], var, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [Training, Deterministic, NoMode])
def test_every_accepted_mode_argument_is_driven(cls):
  x = np.random.default_rng(1).normal(size=(16, 4, 4, 1)).astype(np.float32)
  module = cls(num_classes=3)
  v = models.init(module, jax.random.key(0), x[:1])
  v = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
  evaluation = lambda: models.apply(module, v, x, train=False)
  np.testing.assert_array_equal(evaluation(), evaluation())  # evaluation is deterministic
  train = lambda key: models.apply(module, v, x, train=True, key=key, mutable=["batch_stats"])[0]
  if cls is NoMode:
    assert models.calling.mode_argument(module) is None
    np.testing.assert_array_equal(train(jax.random.key(1)), evaluation())
    return
  # Training draws dropout masks from the key it is given; evaluation with dropout forced on
  # (MC-dropout) draws too, and with dropout forced off in train mode it draws nothing.
  assert not np.array_equal(train(jax.random.key(1)), train(jax.random.key(2)))
  mc = lambda key: models.apply(module, v, x, train=False, stochastic=True, key=key)
  assert not np.array_equal(mc(jax.random.key(1)), mc(jax.random.key(2)))
  assert models.has_dropout(module, x.shape[1:])
  off = lambda key: models.apply(module, v, x, train=True, stochastic=False, key=key,
                                 mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(off(jax.random.key(1)), off(jax.random.key(2)))


def test_a_flax_dropout_module_predicts_as_itself_and_mc_dropout_passes_differ():
  data = synthetic_transfer()
  module = FlaxNet(num_classes=3)
  v = module.init(jax.random.key(0), np.zeros((1,) + data.image_shape, np.float32))
  stacked = members.stack([{"params": v["params"], "batch_stats": v["batch_stats"]}])
  images = data.target_test.images
  plain = inference.predict(inference.Network(module, data.mean, data.std), stacked, images)
  x = (jnp.asarray(images, jnp.float32) / 255.0 - data.mean) / data.std
  direct = jax.nn.softmax(module.apply(v, x, train=False))
  np.testing.assert_allclose(plain[0], direct, rtol=1e-5, atol=1e-6)
  mc = inference.predict(inference.Network(module, data.mean, data.std), stacked, images, passes=2,
                         seed=4)
  assert mc.shape == (2,) + plain.shape[1:]
  assert not np.allclose(mc[0], mc[1])


def test_a_module_reading_another_collection_is_refused_before_training(tmp_path):
  data = synthetic_transfer()
  with pytest.raises(ValueError, match=r"reads the variable collection\(s\) \['constants'\]"):
    api.run(_config("local_de", 2), str(tmp_path), data=data, model=ReadsConstants(num_classes=1))


@pytest.mark.parametrize("cls", [Training, Deterministic, NoMode])
def test_modules_with_each_mode_argument_run_through_the_api(cls, tmp_path):
  data = synthetic_transfer()
  config = _config("local_de", 2)
  results = api.run(config, str(tmp_path), data=data, model=cls(num_classes=1),
                    variables=_variables(cls(num_classes=1), data))
  assert np.isfinite(results["test"]["ensemble"]["nll"]) and "greedy" in results["soups"]


def test_a_failed_evaluation_keeps_the_training_and_the_rerun_evaluates_only(tmp_path,
                                                                              monkeypatch):
  data = synthetic_transfer()
  module = FlaxNet(num_classes=1)
  variables = _variables(module, data)
  reference = api.run(_config("starsse"), str(tmp_path / "ref"), data=data, model=module,
                      variables=variables)

  def broken(*args, **kwargs):
    raise RuntimeError("injected evaluation failure")

  original = evaluation.make_soups
  monkeypatch.setattr(evaluation, "make_soups", broken)
  with pytest.raises(RuntimeError, match="injected"):
    api.run(_config("starsse"), str(tmp_path / "w"), data=data, model=module, variables=variables)
  assert not os.path.exists(tmp_path / "w" / "results.json")
  monkeypatch.setattr(evaluation, "make_soups", original)
  trained = []
  real_phase = api.train.run_phase
  monkeypatch.setattr(api.train, "run_phase",
                      lambda *a, **k: trained.append(k.get("name", a[6])) or real_phase(*a, **k))
  rerun = api.run(_config("starsse"), str(tmp_path / "w"), data=data, model=module,
                  variables=variables)
  assert trained == []  # no step trained: every phase came from the saved members
  assert rerun["timing"]["phases"] == []
  strip = lambda r: json.dumps({k: v for k, v in r.items() if k != "timing"}, sort_keys=True,
                               default=lambda o: np.asarray(o).tolist())
  assert strip(rerun) == strip(reference)


def _imbalanced(counts, size=8, seed=0):
  rng = np.random.default_rng(seed)
  y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
  x = (rng.integers(0, 60, (len(y), size, size, 1)) + y[:, None, None, None] * 40).astype(
      np.uint8)
  return x, y


def test_imbalanced_arrays_use_every_image_with_a_stratified_validation_fraction():
  config = tiny_config()
  x, y = _imbalanced([105, 87, 113, 95])
  xt, yt = _imbalanced([5, 5, 5, 5], seed=1)
  d = data_lib.from_arrays(config, x, y, xt, yt)
  counts = data_lib.class_counts(d)
  assert counts["val"] == [10, 9, 11, 10]  # round(0.1 n)
  assert [a + b for a, b in zip(counts["train"], counts["val"])] == [105, 87, 113, 95]
  train_rows = {r.tobytes() for r in d.target_train.images}
  assert not train_rows & {r.tobytes() for r in d.target_val.images}
  assert "train 78-102 (ratio 1.31)" in data_lib.imbalance_line(counts)
  config.data.val_min_per_class = 12  # the floor, never all of a class
  assert data_lib.class_counts(data_lib.from_arrays(config, x, y, xt, yt))["val"] == [12] * 4
  few = _imbalanced([1, 30, 30])
  with pytest.raises(data_lib.DatasetError, match=r"Class 0 has 1 training image\(s\): it "
                     r"cannot give one validation image"):
    data_lib.from_arrays(config, *few, *_imbalanced([2, 2, 2]))
  config.data.val_fraction = 0.0  # the per-class counts, when asked for
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 3
  assert data_lib.class_counts(data_lib.from_arrays(config, x, y, xt, yt))["val"] == [3] * 4


def test_a_run_reports_images_per_class(tmp_path):
  config = _config("local_de", 2)
  x, y = _imbalanced([30, 22, 41])
  xt, yt = _imbalanced([6, 6, 6], seed=1)
  module = FlaxNet(num_classes=1)
  results = api.run(config, str(tmp_path), data=(x, y, xt, yt), model=module,
                    variables=module.clone(num_classes=7).init(jax.random.key(0),
                                                               np.zeros((1, 8, 8, 1), np.float32)))
  assert results["images_per_class"]["val"] == [3, 2, 4]
  page = (tmp_path / "report.html").read_text()
  assert "Images per class" in page and "largest / smallest" in page
  assert "| 2 | 37 | 4 | 6 |" in report.class_table(results["images_per_class"])


def test_a_phase_above_the_memory_limit_stops_before_compiling(tmp_path):
  data = synthetic_transfer()
  config = tiny_config("local_de", members=4)
  trainer = build.make_trainer(config, models.build_model(config.model, 3), data, config.finetune)
  one = memory.estimate(trainer, 1, 8, data.image_shape)
  four = memory.estimate(trainer, 4, 8, data.image_shape)
  assert four.state == 4 * one.state and four.step == 4 * one.step > 0
  config.execution.memory_limit_mb = four.total / 2**20 / 2
  given = trainer.init_variables(0, data.image_shape)  # nothing to pre-train
  with pytest.raises(memory.DoesNotFitError, match=r"num_members=4\) .*needs an estimated .* "
                     r"per device .* above the .* of execution.memory_limit_mb. Lower "
                     r"num_members"):
    api.run(config, str(tmp_path), data=data, variables=given)
  assert not os.path.exists(tmp_path / "checkpoints")  # nothing trained


def test_a_phase_that_fits_logs_its_estimate(caplog):
  data = synthetic_transfer()
  config = tiny_config("local_de", members=4)
  config.execution.memory_limit_mb = 10_000.0
  with caplog.at_level("INFO"):
    inputs.check_memory(config, data, pretraining=True)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Memory of")]
  assert len(lines) == 2 and "4 member(s) there" in lines[1] and "9.8 GB of execution.memory_limit_mb" in lines[1]


def test_an_impossible_ensemble_exits_2_with_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "starsse_jax.main", "--config=tiny", f"--workdir={tmp_path}",
       "--config.num_members=100000", "--config.execution.memory_limit_mb=2000"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "num_members=100000" in errors[0], proc.stderr[-2000:]
