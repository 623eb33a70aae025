import jax
import numpy as np
import pytest

from conftest import tiny_config
from starsse_jax import build, api, members, methods, models, train


def _trainer(config, data, classes, strategy="auto"):
  model = models.build_model(config.model, classes)
  config.execution.member_strategy = strategy
  return build.make_trainer(config, model, data, config.finetune)


def _pretrained(config, data, n=1):
  trainer = _trainer(config, data, data.num_source_classes)
  return members.stack([trainer.init_variables(100 + k, data.image_shape) for k in range(n)])


def _budget(k, steps_per_epoch=3):
  return methods.Budget(num_members=k, steps_per_epoch=steps_per_epoch, epochs=1.0, lr=0.05,
                        lr_ratio=0.5, cycle_ratio=1.0)


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_starsse_branches_start_bit_identical_to_member_one(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  plan = methods.build_plan("starsse", _budget(4))
  ensemble, _ = train.run_plan(trainer, plan[:1], synthetic.target_train, 8,
                               pretrained=_pretrained(config, synthetic))
  starts = train.start_states(trainer, plan[1], ensemble, None, synthetic.image_shape, [1, 2, 3])
  member_one = members.take(ensemble, 0)
  for k in range(3):
    branch = members.take(starts, k)
    _assert_trees_equal(branch["params"], member_one["params"])  # head included
    _assert_trees_equal(branch["batch_stats"], member_one["batch_stats"])
    # Optimizer state is reset at the start of the cycle (momentum zero).
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(branch["opt_state"])
               if np.ndim(x) > 0)


def test_sse_member_starts_from_the_previous_member(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  plan = methods.build_plan("sse", _budget(3))
  ensemble, _ = train.run_plan(trainer, plan[:2], synthetic.target_train, 8,
                               pretrained=_pretrained(config, synthetic))
  starts = train.start_states(trainer, plan[2], ensemble, None, synthetic.image_shape, [2])
  _assert_trees_equal(members.take(starts, 0)["params"], members.take(ensemble, 1)["params"])
  with pytest.raises(AssertionError):
    _assert_trees_equal(members.take(starts, 0)["params"], members.take(ensemble, 0)["params"])


def test_finetune_replaces_the_head_and_keeps_the_body(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  pre = _pretrained(config, synthetic, n=2)
  plan = methods.build_plan("global_de", _budget(2))
  starts = train.start_states(trainer, plan[0], None, pre, synthetic.image_shape, [0, 1])
  for k in range(2):
    body = lambda t: {n: v for n, v in t["params"].items() if n != models.HEAD}
    _assert_trees_equal(body(members.take(starts, k)), body(members.take(pre, k)))
  heads = starts["params"][models.HEAD]["kernel"]
  assert not np.array_equal(heads[0], heads[1])  # a new seeded head per member


def test_members_advance_independently_of_their_companions(synthetic):
  """Member 0 of a 3-member Local DE equals a 1-member run: same data order, lr, augmentation."""
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  pre = _pretrained(config, synthetic)
  ens3, _ = train.run_plan(trainer, methods.build_plan("local_de", _budget(3)),
                           synthetic.target_train, 8, pretrained=pre)
  ens1, _ = train.run_plan(trainer, methods.build_plan("local_de", _budget(1)),
                           synthetic.target_train, 8, pretrained=pre)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               members.take(ens3, 0)["params"], members.take(ens1, 0)["params"])
  assert not np.allclose(ens3["params"]["head"]["kernel"][0], ens3["params"]["head"]["kernel"][1])


@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_strategies_give_the_same_training(synthetic, strategy):
  config = tiny_config()
  pre = _pretrained(config, synthetic)
  plan = methods.build_plan("local_de", _budget(2))
  runs = {}
  for s in ("unroll", strategy):
    trainer = _trainer(config, synthetic, synthetic.num_target_classes, s)
    runs[s], _ = train.run_plan(trainer, plan, synthetic.target_train, 8, pretrained=pre)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               runs["unroll"]["params"], runs[strategy]["params"])


def test_learning_rate_follows_the_table(synthetic):
  """With lr 0 a member's weights do not move (weight decay scales with lr too)."""
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  start = members.stack([trainer.init_variables(0, synthetic.image_shape)] * 2)
  start["opt_state"] = jax.vmap(trainer.tx.init)(start["params"])
  before = jax.tree.map(np.array, start["params"])
  table = np.array([[0.0, 0.1]] * 3, np.float32)
  result = train.run_phase(trainer, start, np.array([1, 2]), synthetic.target_train, table, 8, "t")
  _assert_trees_equal(members.take(result.states["params"], 0), members.take(before, 0))
  assert not np.array_equal(result.states["params"]["head"]["kernel"][1],
                            before["head"]["kernel"][1])


def test_nonfinite_loss_names_member_phase_and_step(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  start = members.stack([trainer.init_variables(0, synthetic.image_shape)] * 2)
  start["opt_state"] = jax.vmap(trainer.tx.init)(start["params"])
  table = np.array([[0.01, 1e30]] * 4, np.float32)
  with pytest.raises(train.NonFiniteLossError, match=r"member 6 in phase 'boom' at step \d"):
    train.run_phase(trainer, start, np.array([1, 2]), synthetic.target_train, table, 8, "boom",
                    train.PhaseLoop(member_ids=[5, 6], actions=train.Actions(log_every=1)))


def test_batch_larger_than_data_is_rejected(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  with pytest.raises(ValueError, match="batch size 100 is larger than the 24 training images"):
    train.run_plan(trainer, methods.build_plan("local_de", _budget(1)), synthetic.target_train,
                   100, pretrained=_pretrained(config, synthetic))


def test_data_order_is_a_seeded_permutation():
  a = train.data_order(3, 10, 3, epoch=0)
  assert a.shape == (3, 3) and len(set(a.ravel())) == 9
  np.testing.assert_array_equal(a, train.data_order(3, 10, 3, epoch=0))
  assert not np.array_equal(a, train.data_order(3, 10, 3, epoch=1))
  assert not np.array_equal(a, train.data_order(4, 10, 3, epoch=0))


@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_every_method_fine_tunes_k_members(synthetic, method):
  config = tiny_config(method, members=3)
  pre = _pretrained(config, synthetic, n=3)
  ens = api.finetune(config, synthetic, pre)
  assert ens.num_members == 3 and members.num_members(ens.variables) == 3
  assert len(ens.member_names) == 3
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(ens.variables))
  lr = np.concatenate([p["lr_table"].ravel() for p in ens.phases])
  ft = config.finetune
  peak = max(ft.lr, ft.lr * ft.lr_ratio if method in ("sse", "starsse") else 0, ft.fge_lr_1,
             ft.swa_lr)
  assert lr.max() <= peak + 1e-7 and lr.min() >= 0


def test_bfloat16_compute_keeps_float32_state_and_tracks_float32(synthetic):
  """bf16 compute, fp32 params and optimizer state; a short run lands near the fp32 run."""
  pre = None
  finals = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config("local_de", members=2)
    config.model.dtype = dtype
    config.finetune.epochs = 3.0
    if pre is None:
      pre = _pretrained(config, synthetic)
    ens = api.finetune(config, synthetic, pre)
    assert {x.dtype for x in jax.tree.leaves(ens.variables)} == {np.dtype("float32")}
    finals[dtype] = ens
  probs = {d: build.predict_members(tiny_config(), synthetic, e.model, e.variables,
                           synthetic.target_test.images) for d, e in finals.items()}
  assert np.max(np.abs(probs["float32"] - probs["bfloat16"])) < 0.05
  for a, b in zip(jax.tree.leaves(finals["float32"].variables["params"]),
                  jax.tree.leaves(finals["bfloat16"].variables["params"])):
    np.testing.assert_allclose(a, b, atol=0.02 + 0.02 * float(np.max(np.abs(a))))


def test_training_and_evaluation_at_a_resized_resolution(synthetic):
  config = tiny_config("starsse", members=2)
  config.data.image_size = 16  # the synthetic images are 10 px
  model = models.build_model(config.model, synthetic.num_source_classes)
  trainer = build.make_trainer(config, model, synthetic, config.pretrain)
  pre = members.stack([trainer.init_variables(0, synthetic.image_shape)])
  assert pre["params"]["conv1"]["kernel"].shape[-2] == 1
  ens = api.finetune(config, synthetic, pre)
  results = api.evaluate(config, synthetic, ens)
  assert 0.0 <= results["test"]["ensemble"]["accuracy"] <= 1.0
  assert np.isfinite(results["soups"]["uniform"]["test"]["nll"])


def test_diverged_member_is_dropped_when_asked(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  start = members.stack([trainer.init_variables(0, synthetic.image_shape)] * 2)
  start["opt_state"] = jax.vmap(trainer.tx.init)(start["params"])
  table = np.array([[0.01, 1e30]] * 6, np.float32)
  dropping = train.Actions(log_every=1, drop_diverged=True)
  result = train.run_phase(trainer, start, np.array([1, 2]), synthetic.target_train, table, 8,
                           "boom", train.PhaseLoop(member_ids=[5, 6], actions=dropping))
  assert result.member_ids == [5]
  assert members.num_members(result.states) == 1 and result.lr_table.shape == (6, 1)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(result.states["params"]))
  assert "loss/member_6" in result.history[0] and "loss/member_6" not in result.history[-1]
  # The survivor kept running in a group of the phase's size: the step compiled once.
  assert trainer.step_for(2, 8)[0]._cache_size() == 1  # pylint: disable=protected-access


def test_a_phase_cannot_start_from_a_dropped_member(synthetic):
  config = tiny_config()
  trainer = _trainer(config, synthetic, synthetic.num_target_classes)
  cosine = methods.schedules.cosine_cycle
  plan = [methods.Phase("two", (methods.Start("pretrained", 0),) * 2,
                        (cosine(0.01, 6), cosine(1e30, 6)), 6),
          methods.Phase("from_dropped", (methods.Start("member", 1),), (cosine(0.01, 3),), 3)]
  with pytest.raises(ValueError, match="starts from member 1, which diverged and was dropped"):
    train.run_plan(trainer, plan, synthetic.target_train, 8, _pretrained(config, synthetic),
                   train.Actions(log_every=1, drop_diverged=True))
  ensemble, results = train.run_plan(trainer, plan[:1], synthetic.target_train, 8,
                                     _pretrained(config, synthetic),
                                     train.Actions(log_every=1, drop_diverged=True))
  assert results[0].member_ids == [0] and members.num_members(ensemble) == 1


def test_a_large_phase_runs_as_groups_of_one_compiled_step_like_one_program(synthetic,
                                                                             monkeypatch):
  """K = 11 members run as 3 groups of 4 (the last padded with a copy) through one compiled
  step, and train as the same 11 members in one unrolled program do."""
  assert members.group_size(11, "auto", "gpu") == 11  # accelerators: one program per phase
  config = tiny_config()
  pre = _pretrained(config, synthetic)
  plan = methods.build_plan("local_de", _budget(11))
  assert members.group_size(11, "auto", "cpu") == 4 and members.group_size(10, "auto", "cpu") == 10
  runs = {}
  for name, limit in (("grouped", members.MAX_ONE_PROGRAM), ("one", 11)):
    monkeypatch.setattr(members, "MAX_ONE_PROGRAM", limit)
    trainer = _trainer(config, synthetic, synthetic.num_target_classes)
    runs[name], results = train.run_plan(trainer, plan, synthetic.target_train, 8,
                                         pretrained=pre)
    assert results[0].member_ids == list(range(11))
    step = trainer.step_for(11, 8)[0]
    assert step._cache_size() == 1  # pylint: disable=protected-access
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               runs["grouped"], runs["one"])
  assert members.num_members(runs["grouped"]) == 11
