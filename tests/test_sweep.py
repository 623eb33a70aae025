import csv
import math

import ml_collections
import pytest

from conftest import synthetic_transfer, tiny_config
from starsse_jax import methods, sweep


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
  assert len(plan.ensembles) == 2 + 2 * 2 * 2


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
  out = sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())
  with open(tmp_path / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  cells = {(r["method"], r["lr_ratio"], r["cycle_ratio"]) for r in rows}
  assert cells == {("local_de", "", ""), ("global_de", "", ""),
                   ("sse", "0.5", "1.0"), ("sse", "2.0", "1.0"),
                   ("starsse", "0.5", "1.0"), ("starsse", "2.0", "1.0")}
  for row in rows:
    for key in sweep.COLUMNS:
      if key in ("method", "barrier_from_first", "left_basin") or (
          key in ("lr_ratio", "cycle_ratio") and row["method"].endswith("_de")):
        continue
      assert math.isfinite(float(row[key])), (key, row)
    if row["method"] in ("sse", "starsse"):  # curves at the basin cycle ratio, first seed
      assert float(row["barrier_from_first"]) >= 0
  with open(tmp_path / "basin.csv") as f:
    curve_rows = list(csv.DictReader(f))
  assert len(curve_rows) == 4 * config.eval.basin_points
  for name in ("sweep_ensemble.png", "sweep_soups.png", "sweep_members.png",
               "sweep_interpolation.png", "summary.md"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert "4. StarSSE soups" in out["summary"] and "1. Global DE" in out["summary"]
  # A finished seed is read back, not retrained.
  monkeypatch.setattr(sweep, "train_seed", lambda *a, **k: pytest.fail("retrained a done seed"))
  again = sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())
  assert [r["ensemble_accuracy"] for r in again["rows"]] == [
      r["ensemble_accuracy"] for r in out["rows"]]


def test_sweep_rejects_bad_grids(tmp_path):
  config = _tiny_sweep_config()
  config.sweep.lr_ratios = ()
  with pytest.raises(ValueError, match="sweep.lr_ratios is empty"):
    sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())
  config = _tiny_sweep_config()
  config.pretrain.num_checkpoints = 1
  with pytest.raises(ValueError, match="pretrain.num_checkpoints >= 3"):
    sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer())


def test_summary_states_each_claim_from_the_numbers():
  base = dict(ensemble_nll=0.3, member_accuracy=0.8, uniform_soup_accuracy=0.8,
              greedy_soup_accuracy=0.8, barrier_from_first=None)
  rows = [dict(base, seed=0, method="local_de", lr_ratio=None, cycle_ratio=None,
               ensemble_accuracy=0.90),
          dict(base, seed=0, method="global_de", lr_ratio=None, cycle_ratio=None,
               ensemble_accuracy=0.92),
          dict(base, seed=0, method="sse", lr_ratio=1.0, cycle_ratio=1.0, ensemble_accuracy=0.91,
               barrier_from_first=0.01),
          dict(base, seed=0, method="sse", lr_ratio=4.0, cycle_ratio=1.0, ensemble_accuracy=0.85,
               barrier_from_first=0.5),
          dict(base, seed=0, method="starsse", lr_ratio=1.0, cycle_ratio=1.0,
               ensemble_accuracy=0.89, uniform_soup_accuracy=0.9, greedy_soup_accuracy=0.9),
          dict(base, seed=0, method="starsse", lr_ratio=4.0, cycle_ratio=1.0,
               ensemble_accuracy=0.95)]
  text = sweep.summarize(rows, threshold=0.1)
  assert "1. Global DE > Local DE: yes" in text
  assert "2. SSE with a large lr leaves the basin and degrades: yes" in text
  # The best StarSSE (0.95) has lr_ratio 4, not moderate; the moderate one (0.89) loses.
  assert "3. StarSSE at a moderate lr beats Local DE: no" in text
  assert "4. StarSSE soups beat SSE and Local-DE soups: yes" in text
  assert "| starsse | 4 | 1 | 0.9500 +- 0.0000" in text
