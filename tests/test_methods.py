import math

import pytest

from starsse_jax import methods

# The method settings these plans read (a Budget has no defaults of its own: the config's are the
# only ones, and these tests fix theirs).
SETTINGS = dict(lr_ratio=1.0, cycle_ratio=1.0, fge_cycle_epochs=2, fge_lr_1=0.05, fge_lr_2=1e-4,
                swa_epochs=20.0, swa_lr=0.01, swa_lr_min=1e-4, swa_schedule="constant",
                swa_start=0.0, swa_collect_every=1.0)


def budget(k=5, **kw):
  return methods.Budget(num_members=k, steps_per_epoch=10, epochs=3, lr=0.1,
                        **{**SETTINGS, "lr_ratio": 0.5, "cycle_ratio": 2.0, **kw})


def test_starsse_branches_all_start_from_member_one():
  plan = methods.build_plan("starsse", budget())
  assert [p.name for p in plan] == ["finetune", "star_branches"]
  assert plan[0].starts == (methods.Start("pretrained", 0),)
  assert plan[1].starts == (methods.Start("member", 0),) * 4
  assert plan[1].reset_optimizer
  assert plan[0].num_steps == 30 and plan[1].num_steps == 60  # cycle_ratio x E
  assert float(plan[1].schedules[0](0)) == pytest.approx(0.05)  # lr_ratio x lr


def test_sse_chains_cycles():
  plan = methods.build_plan("sse", budget())
  assert len(plan) == 5
  for j, phase in enumerate(plan[1:]):
    assert phase.starts == (methods.Start("member", j),)
    assert phase.num_steps == 60 and phase.reset_optimizer


def test_deep_ensembles():
  local = methods.build_plan("local_de", budget())
  assert len(local) == 1 and local[0].starts == (methods.Start("pretrained", 0),) * 5
  glob = methods.build_plan("global_de", budget())
  assert [s.index for s in glob[0].starts] == [0, 1, 2, 3, 4]
  assert methods.checkpoints_needed("global_de", 5) == 5
  assert methods.checkpoints_needed("starsse", 5) == 1


def test_local_de_baseline_appends_a_local_de_of_equal_member_epochs():
  one = methods.Budget(5, 10, 3, 0.1, **SETTINGS)
  plan = methods.with_local_de_baseline(methods.build_plan("starsse", one))
  assert [p.name for p in plan] == ["finetune", "star_branches", methods.BASELINE_PHASE]
  extra = plan[-1]
  assert extra.starts == (methods.Start("pretrained", 0),) * 4  # K = 5 at cycle_ratio 1
  assert extra.num_steps == plan[0].num_steps == 30
  assert all(float(s(k)) == float(plan[0].schedules[0](k)) for s in extra.schedules
             for k in (0, 7, 29))
  # StarSSE: E + 4 x 2E = 9E member-epochs at cycle_ratio 2 -> a Local DE of 9 members.
  plan = methods.with_local_de_baseline(methods.build_plan("starsse", budget()))
  assert plan[-1].num_members == 8
  half = methods.Budget(5, 10, 3, 0.1, **{**SETTINGS, "cycle_ratio": 0.5})  # E + 4 x E/2 = 3E
  assert methods.with_local_de_baseline(methods.build_plan("sse", half))[-1].num_members == 2
  for method in ("fge", "swa"):
    last = methods.with_local_de_baseline(methods.build_plan(method, one))[-1]
    assert last.starts[0] == methods.Start("pretrained", 0) and last.num_steps == 30
  for method in ("local_de", "global_de", "mc_dropout"):
    with pytest.raises(ValueError, match="eval.baseline=''"):
      methods.with_local_de_baseline(methods.build_plan(method, one))


def test_fge_collects_at_cycle_minima_without_resetting_momentum():
  plan = methods.build_plan("fge", budget(fge_cycle_epochs=2, fge_lr_1=0.05, fge_lr_2=1e-3))
  assert len(plan) == 5
  first, later = plan[1], plan[2:]
  assert first.num_steps == 10 and first.reset_optimizer
  assert float(first.schedules[0](0)) == pytest.approx(0.05, rel=1e-5)
  # The member is taken after the last step, whose next lr would be lr_2 (the minimum).
  assert float(first.schedules[0](first.num_steps)) == pytest.approx(1e-3, rel=1e-5)
  for phase in later:
    assert phase.num_steps == 20 and not phase.reset_optimizer
    assert float(phase.schedules[0](0)) == pytest.approx(1e-3, rel=1e-5)
    assert float(phase.schedules[0](10)) == pytest.approx(0.05, rel=1e-5)


def test_single_member_plans():
  for method in methods.METHODS:
    plan = methods.build_plan(method, budget(k=1))
    assert sum(p.num_members for p in plan) == 1


def test_every_plan_has_num_members_members():
  for method in methods.METHODS:
    assert sum(p.num_members for p in methods.build_plan(method, budget(k=4))) == 4


def test_unknown_method():
  with pytest.raises(ValueError, match="Unknown method 'snapshot'"):
    methods.build_plan("snapshot", budget())


def test_pretrain_plan():
  (phase,) = methods.pretrain_plan(3, steps_per_epoch=7, epochs=2, lr=0.1)
  assert phase.starts == tuple(methods.Start("init", k) for k in range(3))
  assert phase.num_steps == 14
  assert float(phase.schedules[0](7)) == pytest.approx(0.1 * (1 + math.cos(math.pi / 2)) / 2)
