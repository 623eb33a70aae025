import csv
import math

import ml_collections
import pytest

from conftest import synthetic_transfer, tiny_config
from projects.starsse_paper import claims
from starsse_jax import methods, resume, sweep


def test_sweep_plan_shares_phases_and_names_every_cell():
  b = methods.Budget(num_members=3, steps_per_epoch=10, epochs=2.0, lr=0.1)
  plan = methods.sweep_plan(b, (0.5, 2.0), (1.0, 2.0), local_checkpoint=1)
  # finetune (2K members), then per cycle ratio: StarSSE branches of both lrs + K-1 SSE cycles.
  assert [p.name for p in plan.phases] == [
      "finetune", "starsse_c1", "sse_c1_cycle1", "sse_c1_cycle2",
      "starsse_c2", "sse_c2_cycle1", "sse_c2_cycle2"]
  assert [p.num_members for p in plan.phases] == [6, 4, 2, 2, 4, 2, 2]
  assert [p.num_steps for p in plan.phases] == [20, 20, 20, 20, 40, 40, 40]
  first = plan.phases[0]
  assert [(s.kind, s.index) for s in first.starts] == [("pretrained", 1)] * 3 + [
      ("pretrained", 0), ("pretrained", 1), ("pretrained", 2)]
  assert plan.ensembles[("local_de", None, None)] == [0, 1, 2]
  assert plan.ensembles[("global_de", None, None)] == [3, 4, 5]
  # StarSSE branches (ids 6..9) all start from member 0; their peak lr is lr_ratio * lr.
  assert plan.ensembles[("starsse", 0.5, 1.0)] == [0, 6, 7]
  assert plan.ensembles[("starsse", 2.0, 1.0)] == [0, 8, 9]
  star = plan.phases[1]
  assert all((s.kind, s.index) == ("member", 0) for s in star.starts)
  assert [float(f(0)) for f in star.schedules] == pytest.approx([0.05, 0.05, 0.2, 0.2])
  # SSE chains: cycle 1 members 10, 11 start from member 0; cycle 2 from 10 and 11.
  assert plan.ensembles[("sse", 0.5, 1.0)] == [0, 10, 12]
  assert plan.ensembles[("sse", 2.0, 1.0)] == [0, 11, 13]
  assert [s.index for s in plan.phases[3].starts] == [10, 11]
  assert plan.ensembles[("sse", 2.0, 2.0)] == [0, 19, 21]
  # Deep Ensembles of the compute of SSE/StarSSE at cycle ratio 1 (1 + 2 x 1 = 3 trainings); at
  # cycle ratio 2 they would need 5 members, more than were trained, and are left out.
  assert plan.ensembles[("local_de_matched", None, 1.0)] == [0, 1, 2]
  assert plan.ensembles[("global_de_matched", None, 1.0)] == [3, 4, 5]
  assert len(plan.ensembles) == 2 + 2 * 2 * 2 + 2


def test_a_sweep_plan_without_sse_keeps_starsse_ids_and_trains_no_chain():
  b = methods.Budget(num_members=3, steps_per_epoch=10, epochs=2.0, lr=0.1)
  full = methods.sweep_plan(b, (0.5, 2.0), (1.0, 2.0))
  plan = methods.sweep_plan(b, (0.5, 2.0), (1.0, 2.0), sse=False)
  assert [p.name for p in plan.phases] == ["finetune", "starsse_c1", "starsse_c2"]
  assert not any(key[0] == "sse" for key in plan.ensembles)
  assert plan.ensembles[("starsse", 2.0, 1.0)] == full.ensembles[("starsse", 2.0, 1.0)]
  # the second cycle ratio's branches follow the first's directly: ids 10..13
  assert plan.ensembles[("starsse", 0.5, 2.0)] == [0, 10, 11]
  assert sum(p.num_members for p in plan.phases) == 6 + 4 + 4
  assert methods.matched_members(5, 0.25) == 2 and methods.matched_members(5, 0.5) == 3


def _tiny_sweep_config():
  c = tiny_config(members=3)
  c.pretrain.num_checkpoints = 3
  c.checkpoint_every_steps = 0
  c.sweep = ml_collections.ConfigDict(dict(lr_ratios=(0.5, 2.0), cycle_ratios=(1.0,),
                                           seeds=(0,), basin_cycle_ratio=1.0))
  c.eval.basin_points = 3
  return c


def test_reduced_sweep_writes_every_cell_with_finite_numbers(tmp_path, monkeypatch):
  config = _tiny_sweep_config()
  out = sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer(),
                        outputs=claims.Paper())
  with open(tmp_path / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  cells = {(r["method"], r["lr_ratio"], r["cycle_ratio"]) for r in rows}
  assert cells == {("local_de", "", ""), ("global_de", "", ""),
                   ("sse", "0.5", "1.0"), ("sse", "2.0", "1.0"),
                   ("starsse", "0.5", "1.0"), ("starsse", "2.0", "1.0"),
                   ("local_de_matched", "", "1.0"), ("global_de_matched", "", "1.0")}
  for row in rows:
    for key in sweep.COLUMNS:
      if key in ("method", "barrier_from_first", "left_basin") or (
          key in ("lr_ratio", "cycle_ratio") and "_de" in row["method"]):
        continue
      assert math.isfinite(float(row[key])), (key, row)
    # The member picked on validation is at best the one best on the test set.
    assert float(row["picked_member_accuracy"]) <= float(row["best_member_accuracy"])
    assert float(row["picked_member_nll"]) >= float(row["best_member_nll"])
    if row["method"] in ("sse", "starsse"):  # curves at the basin cycle ratio, first seed
      assert float(row["barrier_from_first"]) >= 0
  with open(tmp_path / "basin.csv") as f:
    curve_rows = list(csv.DictReader(f))
  assert len(curve_rows) == 4 * config.eval.basin_points
  for name in ("sweep_ensemble.png", "sweep_soups.png", "sweep_members.png",
               "sweep_interpolation.png", "summary.md"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert "5. StarSSE soups" in out["summary"] and "1. Global DE" in out["summary"]
  assert "Basin barrier from the first model" in out["summary"]
  page = (tmp_path / "report.html").read_text()  # the sweep's page: summary tables, all plots
  assert page.count("data:image/png;base64,") == 4
  assert page.count("<table>") == out["summary"].count("\n|---") + 1  # + the timings
  assert "&quot;lr_ratios&quot;" in page
  # A finished seed is read back, not retrained.
  monkeypatch.setattr(sweep, "train_seed", lambda *a, **k: pytest.fail("retrained a done seed"))
  again = sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())
  assert [r["ensemble_accuracy"] for r in again["rows"]] == [
      r["ensemble_accuracy"] for r in out["rows"]]
  # Without the paper's outputs, the library's own summary: every cell and its gains, no claims.
  assert "Every cell" in again["summary"] and "Ensemble gain" in again["summary"]
  assert "Claims of the paper" not in again["summary"]


def test_a_finished_seed_is_found_whatever_the_other_seeds():
  a, b = _tiny_sweep_config(), _tiny_sweep_config()
  b.sweep.seeds = (3, 0, 1)
  assert sweep.seed_path(a, "w", 0) == sweep.seed_path(b, "w", 0) != sweep.seed_path(a, "w", 1)
  b.finetune.lr_ratio = 0.7  # any other setting: other numbers, another file
  b.sweep.basin_cycle_ratio = 2.0
  assert sweep.seed_path(a, "w", 0) != sweep.seed_path(b, "w", 0)


def test_a_seeds_training_checkpoints_are_found_whatever_the_other_seeds():
  a, b = _tiny_sweep_config(), _tiny_sweep_config()
  b.sweep.seeds = (3, 0, 1)
  fingerprint = lambda c, s: resume.fingerprint(sweep.seed_config(c, s).to_dict())
  assert fingerprint(a, 0) == fingerprint(b, 0) != fingerprint(b, 1)


def test_sweep_rejects_bad_grids(tmp_path):
  config = _tiny_sweep_config()
  config.sweep.lr_ratios = ()
  with pytest.raises(ValueError, match="sweep.lr_ratios is empty"):
    sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())
  config = _tiny_sweep_config()
  config.pretrain.num_checkpoints = 1
  with pytest.raises(ValueError, match="pretrain.num_checkpoints >= 3"):
    sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())


def test_paired_difference_against_hand_worked_and_scipy_values():
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  from starsse_jax import stats  # pylint: disable=g-import-not-at-top
  # d = (1, 2, 3): mean 2, sd 1, t_{2, 0.975} = 4.302653 -> half-width 4.302653 / sqrt(3).
  i = stats.paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
  assert i["mean"] == 2.0 and i["n"] == 3
  assert i["high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  a, b = [0.91, 0.93, 0.92, 0.95, 0.90], [0.90, 0.90, 0.93, 0.91, 0.89]
  ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
  i = stats.paired_difference(a, b)
  assert (i["low"], i["high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
  assert stats.verdict(i) == "unresolved"  # 0.014 [-0.0098, 0.0378]
  assert stats.verdict({"low": 0.01, "high": 0.02}) == "yes"
  assert stats.verdict({"low": 0.01, "high": 0.02}, better="lower") == "no"
  assert stats.verdict(stats.paired_difference([1.0], [0.0])) == "unresolved"  # one seed
  with pytest.raises(ValueError, match="equally long"):
    stats.paired_difference([1.0, 2.0], [1.0])


def test_summary_decides_each_claim_by_a_paired_interval():
  base = dict(ensemble_nll=0.3, member_accuracy=0.8, dee=1.0, barrier_from_first=None,
              uniform_soup_accuracy=0.8, greedy_soup_accuracy=0.8, uniform_soup_val_accuracy=0.8,
              greedy_soup_val_accuracy=0.8)
  noise = (0.0, 0.002, -0.001)  # per seed, shared by every cell of that seed

  def cell(method, r, cr, acc, cal_nll, val=None, **kw):
    return [dict(base, seed=s, method=method, lr_ratio=r, cycle_ratio=cr,
                 ensemble_accuracy=acc + e, val_ensemble_accuracy=(val or acc) + e,
                 ensemble_cal_nll=cal_nll - e, **kw)
            for s, e in enumerate(noise)]

  rows = (cell("local_de", None, None, 0.90, 0.30)
          + cell("global_de", None, None, 0.92, 0.25)
          + cell("sse", 1.0, 1.0, 0.91, 0.28, barrier_from_first=0.01)
          + [dict(r, barrier_from_first=0.5 + 0.1 * r["seed"])
             for r in cell("sse", 4.0, 1.0, 0.85, 0.40)]
          + cell("starsse", 1.0, 1.0, 0.89, 0.31, uniform_soup_accuracy=0.9,
                 greedy_soup_accuracy=0.9, uniform_soup_val_accuracy=0.9,
                 greedy_soup_val_accuracy=0.9)
          # Best on test but not on validation: must not be chosen.
          + cell("starsse", 4.0, 1.0, 0.95, 0.20, val=0.80))
  text = claims.summarize(rows, threshold=0.1)
  assert "1. Global DE beats Local DE: yes" in text
  assert "2. SSE with a large lr leaves the basin and degrades: yes" in text
  assert "3. StarSSE at a moderate lr beats Local DE: no" in text
  assert "4. StarSSE beats SSE, each at its best setting on validation: no" in text
  assert "5. StarSSE soups beat SSE and Local-DE soups" in text and ": yes (" in text
  assert "| starsse | 1 | 1 | 0.8903 +- 0.0012" in text  # chosen on validation, not test
  assert "| 4 | 0.600 [0.352, 0.848], 3/3 | - |" in text
  # Differences that change sign across seeds leave a claim unresolved.
  rows = [dict(r, ensemble_accuracy=r["ensemble_accuracy"] + (0.05 if r["seed"] == 1 else -0.03),
               ensemble_cal_nll=0.3) if r["method"] == "global_de" else r for r in rows]
  assert "1. Global DE beats Local DE: unresolved" in claims.summarize(rows, threshold=0.1)
  # Without soups (eval.soups False) there is no soup claim and no soup number.
  bare = [{k: v for k, v in r.items() if "soup" not in k} for r in rows]
  text = claims.summarize(bare, threshold=0.1)
  assert "5. StarSSE soups" not in text and "nan" not in text


def test_first_model_curve_scores_each_length_and_seed(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from starsse_jax import build, members, models  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments",
                      "first_model_curve.py")
  spec = importlib.util.spec_from_file_location("first_model_curve", path)
  curve = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(curve)
  data, config = synthetic_transfer(), tiny_config(members=1)
  model = models.build_model(config.model, data.num_source_classes)
  trainer = build.make_trainer(config, model, data, config.pretrain)
  pre = members.stack([trainer.init_variables(0, data.image_shape)])
  rows = curve.curve_rows(config, data, pre, [1.0, 2.0], seeds=2)
  assert [(r["epochs"], r["seed"]) for r in rows] == [(1.0, 0), (1.0, 1), (2.0, 0), (2.0, 1)]
  assert [r["steps"] for r in rows] == [3, 3, 6, 6]  # 24 images, batch 8
  assert all(0 <= r["val_accuracy"] <= 1 and math.isfinite(r["test_nll"]) for r in rows)
  assert rows[0]["val_nll"] != rows[1]["val_nll"]  # seeds differ
  text = curve.summary(rows)
  assert text.count("\n") == 4 and "| 2 | 6 |" in text
  curve.plot(str(tmp_path / "c.png"), rows)
  assert (tmp_path / "c.png").stat().st_size > 1000


def test_gains_are_measured_against_each_seeds_own_best_member():
  group = [{"ensemble_accuracy": 0.95, "best_member_accuracy": 0.94, "ensemble_nll": 0.20,
            "best_member_nll": 0.23, "val_ensemble_accuracy": 0.90,
            "val_best_member_accuracy": 0.91, "val_ensemble_nll": 0.30,
            "val_best_member_nll": 0.29, "picked_member_accuracy": 0.92,
            "picked_member_nll": 0.25},
           {"ensemble_accuracy": 0.96, "best_member_accuracy": 0.93, "ensemble_nll": 0.19,
            "best_member_nll": 0.20, "val_best_member_accuracy": None}]
  test = sweep.gains(group)
  assert test["accuracy"] == pytest.approx([0.01, 0.03])
  assert test["nll"] == pytest.approx([0.03, 0.01])
  val = sweep.gains(group, "val_")  # the second seed has no validation numbers
  assert val["accuracy"] == pytest.approx([-0.01]) and val["nll"] == pytest.approx([-0.01])
  picked = sweep.gains(group, member="picked")  # the second seed predates the picked member
  assert picked["accuracy"] == pytest.approx([0.03]) and picked["nll"] == pytest.approx([0.05])
  with pytest.raises(ValueError, match="test-only"):
    sweep.gains(group, "val_", "picked")
  cells = {("starsse", 2.0, 0.5): group}
  table = "\n".join(sweep.gain_table(cells, {"starsse": (2.0, 0.5)}))
  # mean 0.02, sample std 0.01414: 1.4 times the spread; the chosen cell is starred
  assert ("| starsse (lr_ratio 2, cycle_ratio 0.5)* | -0.0100 | -0.0100 | +0.0200 +- 0.0141 (1.4x) "
          "| +0.0200 +- 0.0141 (1.4x) | +0.0300 | +0.0500 |") in table
  cells[("local_de_matched", None, 0.5)] = group[:1]
  table = "\n".join(sweep.cell_table(cells))
  assert "| starsse (lr_ratio 2, cycle_ratio 0.5) | 0.9550 +- 0.0071 | 0.1950 +- 0.0071 | " in table
  assert "| local_de_matched (cycle_ratio 0.5) | 0.9500 | 0.2000 | 0.9400 | 0.2300 | 0.9000 |" in table


@pytest.mark.parametrize("name,folder", [
    ("sweep_small_target", "small_target"), ("sweep_small_target_e40", "small_target/e40"),
    ("sweep_starsse_settings", "starsse_settings"), ("sweep_default", "sweep_default")])
def test_the_committed_seed_files_are_found_again(name, folder):
  """A sweep rerun over its committed results reuses every seed: settings added later that
  cannot change a seed's numbers do not rename its file."""
  import os  # pylint: disable=g-import-not-at-top
  from starsse_jax import configs  # pylint: disable=g-import-not-at-top
  config = configs.load(name)
  directory = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "results",
                           folder)
  for seed in config.sweep.seeds:
    assert os.path.exists(sweep.seed_path(config, directory, seed)), seed
