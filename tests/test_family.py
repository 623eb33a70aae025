"""SWA, MC-dropout, low-precision ensembles and the learned soup."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_transfer, tiny_config
from starsse_jax import (api, configlib, inference, low_precision, members, methods, models,
                         resume, schedules, soups, train)
from starsse_jax import build


def _trainer(config, data, classes):
  return build.make_trainer(config, models.build_model(config.model, classes), data,
                      config.finetune)


def _pretrained(config, data):
  trainer = _trainer(config, data, data.num_source_classes)
  return members.stack([trainer.init_variables(100, data.image_shape)])


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------------------- SWA


def test_swa_plan_collects_every_period_after_the_start():
  b = methods.Budget(num_members=3, steps_per_epoch=4, epochs=1.0, lr=0.1, swa_epochs=3.0,
                     swa_lr=0.05, swa_start=1.0, swa_collect_every=0.5, swa_schedule="constant")
  first, phase = methods.build_plan("swa", b)
  assert first.num_members == 1 and phase.num_members == 2
  assert phase.starts == (methods.Start("member", 0),) * 2 and phase.num_steps == 12
  # Collected after steps 4 + 2j (1-based): 6, 8, 10, 12.
  np.testing.assert_array_equal(np.flatnonzero(phase.average.table(12)) + 1, [6, 8, 10, 12])
  np.testing.assert_allclose(schedules.table(phase.schedules, 12), 0.05)


def test_cyclic_swa_collects_where_the_sawtooth_reaches_its_minimum():
  b = methods.Budget(num_members=2, steps_per_epoch=4, epochs=1.0, lr=0.1, swa_epochs=3.0,
                     swa_lr=0.05, swa_lr_min=0.001, swa_schedule="cyclic", swa_start=0.5,
                     swa_collect_every=1.0)
  phase = methods.build_plan("swa", b)[1]
  lr = schedules.table(phase.schedules, 12)[:, 0]
  collected = np.flatnonzero(phase.average.table(12))
  np.testing.assert_array_equal(collected + 1, [8, 12])  # start rounded up to a whole period
  np.testing.assert_allclose(lr[collected], 0.001, rtol=1e-6)
  np.testing.assert_allclose(lr[[0, 4, 8]], 0.05 - (0.05 - 0.001) / 4, rtol=1e-6)


def test_swa_that_collects_nothing_is_refused():
  b = methods.Budget(num_members=2, steps_per_epoch=4, epochs=1.0, lr=0.1, swa_epochs=1.0,
                     swa_start=1.0, swa_lr=0.01, swa_schedule="constant", swa_collect_every=1.0)
  with pytest.raises(ValueError, match="collects nothing"):
    methods.build_plan("swa", b)
  config = tiny_config("swa")
  config.finetune.swa_start = 30.0
  with pytest.raises(ValueError, match="nothing would be averaged"):
    configlib.validate(config)


def test_swa_member_is_the_mean_of_the_collected_weights_with_its_own_batchnorm(synthetic):
  config = tiny_config("swa", members=2)
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  split, batch = synthetic.target_train, 8  # 3 steps per epoch
  b = methods.Budget(num_members=2, steps_per_epoch=3, epochs=1.0, lr=0.05, swa_epochs=2.0,
                     swa_lr=0.03, swa_collect_every=1 / 3, swa_start=2 / 3,
                     swa_schedule="constant")
  plan = methods.build_plan("swa", b)
  ensemble, _ = train.run_plan(trainer, plan, split, batch,
                               pretrained=_pretrained(config, synthetic))
  # The same phase without averaging follows the same trajectory; its weights after the
  # collected steps, averaged by hand, are the SWA member.
  first, _ = train.run_plan(trainer, plan[:1], split, batch,
                            pretrained=_pretrained(config, synthetic))
  plain = dataclasses.replace(plan[1], average=None)
  start = train.start_states(trainer, plain, first, None, synthetic.image_shape, [1])
  lr = schedules.table(plain.schedules, plain.num_steps)
  seeds = np.asarray([trainer.seed * 1_000_003 + 1 * 1009 + 1])  # run_plan's seed of member 1
  collected = np.flatnonzero(plan[1].average.table(plain.num_steps)) + 1
  assert list(collected) == [3, 4, 5, 6]
  copy = lambda tree: jax.tree.map(jnp.array, tree)  # the step donates its input
  snapshots = [train.run_phase(trainer, copy(start), seeds, split, lr[:t], batch, "plain")
               .states["params"] for t in collected]
  expected = jax.tree.map(lambda *x: np.mean(np.stack(x), axis=0), *snapshots)
  swa = members.take(ensemble, [1])
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6),
               swa["params"], expected)
  stats = inference.recompute_batch_stats(trainer.network, swa["params"], swa["batch_stats"],
                                          split.images, batch_size=batch)
  _assert_trees_equal(swa["batch_stats"], stats)
  assert "average" not in ensemble


class _StopAfter:
  """A stop request that turns true after ``n`` checks (one per step)."""

  def __init__(self, n):
    self.n = n

  @property
  def requested(self):
    self.n -= 1
    return self.n < 0

  def announce(self):
    pass


def test_swa_resumes_mid_average_exactly(synthetic, tmp_path):
  config = tiny_config("swa", members=3)
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  b = methods.Budget(num_members=3, steps_per_epoch=3, epochs=1.0, lr=0.05, swa_epochs=2.0,
                     swa_lr=0.03, swa_collect_every=1 / 3, swa_start=0.0,
                     swa_schedule="constant")
  plan = methods.build_plan("swa", b)
  pre = _pretrained(config, synthetic)
  reference, _ = train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre)
  v = trainer.init_variables(0, synthetic.image_shape)
  ck = resume.RunCheckpointer(str(tmp_path / "ck"), {**v, "opt_state": trainer.tx.init(
      v["params"])})
  with pytest.raises(resume.Interrupted):  # 3 steps of fine-tuning, then 2 of the SWA phase
    train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre, checkpointer=ck,
                   actions=train.Actions(stop=_StopAfter(5)))
  assert ck.restore().phase == 1 and ck.restore().step == 2
  resumed, _ = train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre,
                              checkpointer=ck)
  _assert_trees_equal(resumed, reference)


# -------------------------------------------------------------------------------- MC-dropout


def test_dropout_rate_zero_is_the_model_without_dropout(synthetic):
  config = tiny_config("local_de", members=1)
  plain = _pretrained(config, synthetic)
  model = models.build_model(config.model, 3)
  assert model.dropout_rate == 0 and model.block_dropout_rate == 0
  x = jnp.asarray(synthetic.target_test.images[:8], jnp.float32)
  v = members.take(plain, 0)
  v = {"params": {**v["params"], models.HEAD: _trainer(config, synthetic, 3).init_variables(
      1, synthetic.image_shape)["params"][models.HEAD]}, "batch_stats": v["batch_stats"]}
  off = model.apply(v, x, train=False)
  on = model.apply(v, x, train=False, stochastic=True, rngs={models.DROPOUT: jax.random.key(3)})
  np.testing.assert_array_equal(off, on)
  # Fine-tuning at rate 0 is bit-for-bit the ordinary fine-tuning, whatever the method's name.
  ens = api.finetune(config, synthetic, plain)
  config.method = "mc_dropout"
  same = api.finetune(config, synthetic, plain)
  _assert_trees_equal(ens.variables, same.variables)
  config.model.dropout_rate = 0.5
  other = api.finetune(config, synthetic, plain)
  assert not np.array_equal(other.variables["params"]["head"]["kernel"],
                            ens.variables["params"]["head"]["kernel"])


def test_mc_dropout_ensemble_is_seeded_stochastic_passes(synthetic):
  config = tiny_config("mc_dropout", members=2)
  config.model.dropout_rate = 0.5
  config.model.block_dropout_rate = 0.1
  config.eval.mc_samples = 3
  config.eval.soups = False  # soups of an MC-dropout model are the deterministic network's
  configlib.validate(config, data_given=True)
  ens = api.finetune(config, synthetic, _pretrained(config, synthetic))
  images = synthetic.target_test.images
  probs = build.predict_members(config, synthetic, ens.model, ens.variables, images, passes=3)
  assert probs.shape == (6, len(images), 3)
  assert not np.allclose(probs[0], probs[1])  # passes differ
  again = build.predict_members(config, synthetic, ens.model, ens.variables, images, passes=3)
  np.testing.assert_array_equal(probs, again)  # and are reproducible
  results = api.evaluate(config, synthetic, ens)
  assert results["member_names"][:4] == ["finetune[0] pass 0", "finetune[0] pass 1",
                                         "finetune[0] pass 2", "finetune[1] pass 0"]
  assert len(results["test"]["size_curve"]) == 6 and results["mc_dropout"]["passes"] == 3
  np.testing.assert_allclose(results["test"]["ensemble"]["nll"],
                             -np.mean(np.log(probs.mean(0)[np.arange(len(images)),
                                                           synthetic.target_test.labels])),
                             rtol=1e-6)


def test_mc_dropout_without_dropout_is_refused():
  config = tiny_config("mc_dropout")
  config.eval.mc_samples = 5
  with pytest.raises(ValueError, match="needs dropout"):
    configlib.validate(config)
  config.model.dropout_rate = 0.2
  config.eval.mc_samples = 1
  with pytest.raises(ValueError, match="mc_samples >= 2"):
    configlib.validate(config)


# ------------------------------------------------------------------------------ low precision


def test_stochastic_rounding_is_unbiased_and_on_the_grid():
  w = jax.random.normal(jax.random.key(0), (3, 3, 4, 5)) * 0.1
  for bits, per_channel in ((4, True), (5, False), (6, True)):
    draws = jax.vmap(lambda k: low_precision.stochastic_round(k, w, bits, per_channel))(
        jax.random.split(jax.random.key(1), 4000))
    s = low_precision.grid_scale(w, bits, per_channel)
    assert s.shape == ((1, 1, 1, 5) if per_channel else (1, 1, 1, 1))
    q = np.asarray(draws / s)
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)  # integers...
    assert np.abs(np.round(q)).max() <= 2 ** (bits - 1) - 1  # ...of the b-bit range
    # Each draw is one of the two grid points around w ...
    lo = np.floor(np.asarray(w / s))
    assert np.all((np.abs(q - lo) < 1e-4) | (np.abs(q - lo - 1) < 1e-4))
    # ... and the mean of 4000 draws is w within 5 standard errors (per-point variance p(1-p)s^2).
    p = np.asarray(w / s) - lo
    se = np.sqrt(p * (1 - p) / 4000) * np.asarray(s)
    assert np.all(np.abs(np.asarray(draws.mean(0)) - np.asarray(w)) <= 5 * se + 1e-6)


def test_round_to_nearest_is_deterministic_and_nearest():
  w = jnp.asarray([[0.5, -0.26, 0.0, 0.11], [-0.5, 0.25, 0.03, 0.49]])
  q = low_precision.round_to_nearest(w, 3, per_channel=False)  # L = 3, s = 0.5 / 3
  np.testing.assert_allclose(q, np.round(np.asarray(w) / (0.5 / 3)) * (0.5 / 3), atol=1e-7)
  np.testing.assert_array_equal(q, low_precision.round_to_nearest(w, 3, per_channel=False))
  per_channel = low_precision.round_to_nearest(w, 3)
  np.testing.assert_allclose(per_channel[:, 2], np.round(np.asarray(w[:, 2]) / 0.01) * 0.01,
                             atol=1e-7)  # channel 2's own scale 0.03 / 3


def test_only_kernels_are_rounded_and_memory_counts_bits_and_scales():
  params = {"conv1": {"kernel": jnp.linspace(-1, 1, 2 * 2 * 3 * 4).reshape(2, 2, 3, 4)},
            "bn1": {"scale": jnp.full((4,), 0.3337), "bias": jnp.full((4,), 0.1234)},
            "head": {"kernel": jnp.linspace(-1, 1, 8).reshape(4, 2), "bias": jnp.ones(2) / 3}}
  q = low_precision.quantize(params, 4, jax.random.key(0))
  _assert_trees_equal(q["bn1"], params["bn1"])
  np.testing.assert_array_equal(q["head"]["bias"], params["head"]["bias"])
  assert not np.array_equal(q["conv1"]["kernel"], params["conv1"]["kernel"])
  # 48 + 8 kernel weights at 4 bits, 4 + 2 channel scales and 8 + 2 other values at 32 bits.
  assert low_precision.memory_bits(params, 4) == 4 * 56 + 32 * 6 + 32 * 10
  assert low_precision.memory_bits(params, 4, per_channel=False) == 4 * 56 + 32 * 2 + 32 * 10
  assert low_precision.memory_bits(params, None) == 32 * 66
  draws = low_precision.draw(jax.random.key(0), params, 4, 3)
  assert members.num_members(draws) == 3
  assert not np.array_equal(draws["conv1"]["kernel"][0], draws["conv1"]["kernel"][1])


def test_low_precision_evaluation_reports_every_width_and_both_batchnorm_modes(synthetic):
  config = tiny_config("local_de", members=2)
  config.eval.low_precision_bits = (4, 8)
  config.eval.low_precision_samples = 2
  config.eval.soups = False
  ens = api.finetune(config, synthetic, _pretrained(config, synthetic))
  results = api.evaluate(config, synthetic, ens)
  lp = results["low_precision"]
  assert set(lp["bits"]) == {"4", "8"}
  assert lp["bits"]["4"]["bits_per_model"] < lp["bits"]["8"]["bits_per_model"] < lp["float32_bits"]
  for entry in lp["bits"].values():
    assert entry["lpe"]["models"] == 2 and entry["plus_lpe"]["models"] == 4
    for key in ("round_to_nearest", "lpe", "plus_lpe"):
      for mode in ("bn_kept", "bn_recomputed"):
        assert 0 <= entry[key][mode]["test"]["accuracy"] <= 1
        assert np.isfinite(entry[key][mode]["calibrated_nll"])
  # At 8 bits round-to-nearest with the float model's statistics is the float model, nearly.
  float_member = results["test"]["members"][0]
  assert lp["bits"]["8"]["round_to_nearest"]["bn_kept"]["test"]["nll"] == pytest.approx(
      float_member["nll"], rel=1e-2)


# ------------------------------------------------------------------------------- learned soup


def test_equal_mixing_weights_are_the_uniform_soup():
  stacked = {"a": jax.random.normal(jax.random.key(0), (4, 3, 2)),
             "b": {"c": jax.random.normal(jax.random.key(1), (4, 5))}}
  equal = jax.tree.map(lambda _: jnp.zeros(4), stacked)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
               soups.mix(stacked, equal), soups.uniform_soup(stacked))


def test_learned_soup_moves_weight_to_the_member_that_fits():
  # Linear "networks": member 0 maps x to the right class, members 1 and 2 do not.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 4)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  good = np.zeros((4, 2), np.float32)
  good[0] = [-3.0, 3.0]
  stacked = {"w": jnp.asarray(np.stack([good, -good, rng.normal(size=(4, 2)).astype(np.float32)]))}
  logits_fn = lambda p, xb: xb @ p["w"]
  frozen, info0 = soups.learned_soup(stacked, logits_fn, x, y, soups.LearnedSoup(epochs=0))
  np.testing.assert_allclose(frozen["w"], soups.uniform_soup(stacked)["w"], rtol=1e-6, atol=1e-7)
  assert info0 == {"weights": pytest.approx([1 / 3] * 3), "scale": 1.0}
  learned, info = soups.learned_soup(stacked, logits_fn, x, y,
                                      soups.LearnedSoup(epochs=20, batch_size=64))
  assert info["weights"][0] > 0.6
  loss = lambda p: float(np.mean(-jax.nn.log_softmax(logits_fn(p, x))[np.arange(256), y]))
  assert loss(learned) < loss(frozen)


def test_learned_soup_with_no_training_is_the_uniform_soup_through_the_pipeline(synthetic):
  config = tiny_config("local_de", members=3)
  config.eval.learned_soup = True
  config.eval.learned_soup_epochs = 0
  ens = api.finetune(config, synthetic, _pretrained(config, synthetic))
  made = api.make_soups(config, synthetic, ens)
  assert made["learned"]["scale"] == 1.0
  np.testing.assert_allclose(made["learned"]["probs"], made["uniform"]["probs"], rtol=1e-5,
                             atol=1e-6)
  config.eval.learned_soup_epochs = 5
  trained = api.make_soups(config, synthetic, ens)["learned"]
  assert trained["scale"] != 1.0 and len(trained["weights"]) == 3


def test_fge_resumes_with_the_carried_momentum(synthetic, tmp_path):
  """FGE's later cycles continue the previous member's momentum; finished members are stored
  without optimizer state, so the progress checkpoint carries the one momentum still needed."""
  config = tiny_config("fge", members=3)
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  b = methods.Budget(num_members=3, steps_per_epoch=3, epochs=1.0, lr=0.05, fge_cycle_epochs=1,
                     fge_lr_1=0.05, fge_lr_2=1e-4)
  plan = methods.build_plan("fge", b)
  assert not plan[2].reset_optimizer
  pre = _pretrained(config, synthetic)
  reference, _ = train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre)
  v = trainer.init_variables(0, synthetic.image_shape)
  template = {**v, "opt_state": trainer.tx.init(v["params"])}
  # 3 steps of fine-tuning, a check after the phase, 1 step of cycle 1, the stop after it.
  with pytest.raises(resume.Interrupted, match="Stopped after phase 'fge_cycle_1'"):
    train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre,
                   checkpointer=resume.RunCheckpointer(str(tmp_path / "ck"), template),
                   actions=train.Actions(stop=_StopAfter(5)))
  progress = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert (progress.phase, progress.step, progress.states) == (2, 0, None)
  assert sorted(progress.carried) == [1]  # member 0's momentum is needed by no later phase
  assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(progress.carried[1]))
  assert "opt_state" not in progress.ensemble
  resumed, _ = train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre,
                              checkpointer=resume.RunCheckpointer(str(tmp_path / "ck"), template))
  _assert_trees_equal(resumed, reference)
