"""Any Flax module through the functional API, and the built-in transformers in runs.

A user's module (its own names, its own classifier name, LayerNorm or Flax's own BatchNorm) runs
StarSSE with its pre-trained variables; every method's machinery (soups, low-precision
ensembles, uncertainty) works on it. Models without BatchNorm skip every recompute.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_transfer, tiny_config
from starsse_jax import api, inference, models


class MyNet(nn.Module):
  """A user's network: a conv, a norm, a classifier called ``classifier``."""
  num_classes: int
  batchnorm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), strides=2, name="stem")(x)
    if self.batchnorm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.8, name="norm")(x)
    else:
      x = nn.LayerNorm(name="norm")(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(x)


def _pretrained(module, data):
  """Variables of a 'pre-trained' network: a few source-task steps are not needed to test the
  plumbing; a seeded initialisation with another number of classes is what a user brings."""
  return module.clone(num_classes=7).init(jax.random.key(3), np.zeros((1,) + data.image_shape,
                                                                     np.float32))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_users_module_runs_starsse_through_the_api(batchnorm, tmp_path):
  data = synthetic_transfer()
  config = tiny_config("starsse", members=3)
  config.model.head = "classifier"
  config.eval.low_precision_bits = (6,)
  config.eval.low_precision_samples = 2
  module = MyNet(num_classes=1, batchnorm=batchnorm)
  variables = _pretrained(module, data)
  results = api.run(config, str(tmp_path), data=data, model=module, variables=variables)
  assert results["config"]["model"]["name"] == "user:MyNet"
  assert len(results["test"]["members"]) == 3
  assert np.isfinite(results["test"]["ensemble"]["nll"])
  assert {"uniform", "greedy"} <= set(results["soups"])
  lp = results["low_precision"]
  assert lp["batchnorm"] == batchnorm
  assert ("bn_recomputed" in lp["bits"]["6"]["lpe"]) == batchnorm


def test_given_variables_are_the_members_starting_point():
  data = synthetic_transfer()
  config = api.use_model(tiny_config("local_de", members=2), MyNet(num_classes=1))
  config.model.head = "classifier"
  variables = _pretrained(MyNet(num_classes=1), data)
  stacked = api.given_pretrained(config, data, variables)
  assert "classifier" not in stacked["params"]  # the source task's head is dropped
  np.testing.assert_array_equal(stacked["params"]["stem"]["kernel"][0],
                                variables["params"]["stem"]["kernel"])


def test_users_module_errors_are_one_clear_message(tmp_path):
  data = synthetic_transfer()
  config = tiny_config("starsse", members=2)
  module = MyNet(num_classes=1)
  with pytest.raises(ValueError, match=r"no classifier named 'head' among the top-level "
                     r"parameters \['classifier', 'norm', 'stem'\]; set config.model.head"):
    api.run(config, str(tmp_path / "a"), data=data, model=module)
  config.model.head = "classifier"
  with pytest.raises(ValueError, match=r"a Flax module with a num_classes field"):
    api.run(config, str(tmp_path / "b"), data=data, model=nn.Dense(3))
  wrong = MyNet(num_classes=7).init(jax.random.key(0), np.zeros((1, 10, 10, 3), np.float32))
  with pytest.raises(ValueError, match=r"stem.*kernel.*\[3, 3, 3, 8\].*\[3, 3, 1, 8\]"):
    api.run(config, str(tmp_path / "c"), data=data, model=module, variables=wrong)
  mc = tiny_config("mc_dropout", members=2)
  mc.model.head = "classifier"
  mc.eval.mc_samples = 2
  with pytest.raises(ValueError, match=r"mc_dropout' needs a model with dropout"):
    api.run(mc, str(tmp_path / "d"), data=data, model=module)


def test_bad_transformer_inputs_stop_before_any_compute(tmp_path):
  data = synthetic_transfer()  # 10 px images
  config = tiny_config("starsse", members=2)
  config.model.name = "vit"
  config.model.patch = 4
  config.model.heads = 3
  with pytest.raises(ValueError, match=r"model.width=4 must be a multiple of model.heads=3"):
    api.run(config, str(tmp_path / "0"), data=data)
  config.model.heads = 2
  with pytest.raises(ValueError, match=r"cannot take images of shape \(10, 10, 1\).*not "
                     r"divisible by the patch size 4"):
    api.run(config, str(tmp_path / "a"), data=data)
  one_class = synthetic_transfer(classes=1)
  config.model.patch = 5
  config.finetune.mixup_alpha = 0.8
  with pytest.raises(ValueError, match=r"finetune.mixup_alpha/cutmix_alpha .* has 1 class"):
    api.run(config, str(tmp_path / "b"), data=one_class)


@pytest.mark.slow  # 30 s: the whole recipe compiled into one step
def test_a_small_vit_runs_every_method_piece_without_batchnorm(tmp_path):
  data = synthetic_transfer()
  config = tiny_config("swa", members=2)
  config.model.name = "vit"
  config.model.patch = 5
  config.model.width = 8
  config.model.depth = 1
  config.model.heads = 2
  config.model.drop_path_rate = 0.1
  config.finetune.optimizer = "adamw"
  config.finetune.lr = 1e-3
  config.finetune.swa_lr = 1e-3
  config.finetune.swa_epochs = 1.0
  config.finetune.warmup_epochs = 0.5
  config.finetune.label_smoothing = 0.1
  config.finetune.mixup_alpha = 0.4
  config.finetune.cutmix_alpha = 1.0
  config.finetune.random_erase_prob = 0.25
  config.finetune.rand_augment_ops = 2
  config.finetune.grad_clip_norm = 1.0
  config.pretrain.optimizer = "adamw"
  config.pretrain.lr = 1e-3
  config.eval.learned_soup = True
  config.eval.learned_soup_epochs = 1
  results = api.run(config, str(tmp_path), data=data)
  assert np.isfinite(results["test"]["ensemble"]["nll"])
  assert "learned" in results["soups"] and "uniform" in results["soups"]


def test_generic_batchnorm_recompute_equals_the_momentum_zero_one():
  """For a module without ``bn_momentum`` the batch statistics come from two passes (old = 0 and
  old = 1); they must equal the statistics of one pass with momentum 0."""
  x = np.random.default_rng(0).normal(size=(12, 6, 6, 1)).astype(np.float32)
  module = MyNet(num_classes=2, batchnorm=True)
  v = module.init(jax.random.key(0), x)
  params = jax.tree.map(lambda a: a[None], v["params"])
  stats = jax.tree.map(lambda a: a[None], v["batch_stats"])
  got = inference.recompute_batch_stats(inference.Network(module, np.zeros(1, np.float32),
                                                          np.ones(1, np.float32)), params, stats,
                                                          (x * 50 + 100).astype(np.uint8),
                                                          batch_size=6)
  # Independent: the statistics of the stem's output, batch by batch, averaged.
  xs = (x * 50 + 100).astype(np.uint8).astype(np.float32) / 255.0
  stem = nn.Conv(8, (3, 3), strides=2)
  means, variances = [], []
  for i in (0, 6):
    h = np.asarray(stem.apply({"params": v["params"]["stem"]}, jnp.asarray(xs[i:i + 6])))
    means.append(h.mean(axis=(0, 1, 2)))
    variances.append(h.var(axis=(0, 1, 2)))
  np.testing.assert_allclose(got["norm"]["mean"][0], np.mean(means, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["norm"]["var"][0], np.mean(variances, 0), rtol=1e-4, atol=1e-5)
  assert models.family(module) == "custom" and not models.has_dropout(module)
