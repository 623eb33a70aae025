"""A grid of plans in one run: SSE and StarSSE over lr_ratio x cycle_ratio, against Local and
Global Deep Ensembles of the same size, over several seeds.

Per seed, the whole grid is one plan (``methods.sweep_plan``): the StarSSE branches of every
lr_ratio train as members of one stacked phase with a per-member learning rate, and one SSE chain
per lr_ratio advances per phase. Training is checkpointed like any run (a rerun resumes); a
finished seed's numbers are written to ``seed_<s>-<hash>.json`` and not recomputed.
``sweep.sse = False`` (absent: True) leaves SSE out, for a scan of StarSSE's own settings.

Outputs in the workdir: ``sweep.csv`` (one row per seed x cell, every number), ``basin.csv``
(interpolation curves from the first model to SSE/StarSSE members, every seed), ``summary.md``
(``Outputs.summarize``: every cell's mean +- std over seeds and its ensemble's gains; the paper's
claims and figures are its project's, ``projects/starsse_paper``), and ``report.html``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from typing import Any

import numpy as np

from starsse_jax import (api, basin, configlib, distributed, members, methods, metrics, models,
                         report, resume, train, uncertainty)
from starsse_jax import evaluation, build
from starsse_jax.data import TransferData, load_transfer_data

COLUMNS = ("seed", "method", "lr_ratio", "cycle_ratio", "ensemble_accuracy", "ensemble_nll",
           "ensemble_ece", "ensemble_cal_nll", "dee", "member_accuracy", "member_nll", "disagreement",
           "val_ensemble_accuracy", "val_ensemble_nll", "uniform_soup_accuracy", "uniform_soup_nll",
           "uniform_soup_val_accuracy", "greedy_soup_accuracy", "greedy_soup_nll",
           "greedy_soup_val_accuracy", "greedy_soup_size", "l2_to_first", "l2_to_pretrained",
           "barrier_from_first", "left_basin", "best_member_accuracy", "best_member_nll",
           "val_best_member_accuracy", "val_best_member_nll", "picked_member_accuracy",
           "picked_member_nll")
BASIN_COLUMNS = ("seed", "method", "lr_ratio", "cycle_ratio", "alpha", "nll", "accuracy")


def validate(config) -> None:
  """``configlib.validate`` plus the sweep's own fields."""
  configlib.validate(config)
  s = config.sweep
  for name in ("lr_ratios", "cycle_ratios", "seeds"):
    if not len(s[name]):
      raise ValueError(f"Invalid config: sweep.{name} is empty; give at least one value.")
  bad = [v for v in tuple(s.lr_ratios) + tuple(s.cycle_ratios) if not v > 0]
  if bad:
    raise ValueError(f"Invalid config: sweep ratios must be positive, got {bad}.")
  if config.num_members < 2:
    raise ValueError(f"Invalid config: num_members={config.num_members}; the sweep compares "
                     "ensembles, so it needs at least 2.")
  if config.pretrain.num_checkpoints < config.num_members:
    raise ValueError(f"Invalid config: Global DE needs num_members={config.num_members} "
                     f"pre-trained checkpoints; set pretrain.num_checkpoints >= "
                     f"{config.num_members} (got {config.pretrain.num_checkpoints}).")


def seed_config(config, seed: int):
  """The config of one seed's runs. It names that seed alone, so that its training checkpoints
  (named by a hash of the config) are found again by a run given another list of seeds."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.seed = int(seed)
    c.sweep.seeds = (int(seed),)
  return c


def train_seed(config, data: TransferData, pretrained, seed: int, workdir: str | None = None,
               stop: resume.StopRequest | None = None):
  """Trains every member of the sweep for one seed; returns (model, variables, plan)."""
  c = seed_config(config, seed)
  ft, s = c.finetune, c.sweep
  budget = methods.Budget(num_members=c.num_members,
                          steps_per_epoch=len(data.target_train) // ft.batch_size,
                          epochs=ft.epochs, lr=ft.lr, warmup_epochs=ft.warmup_epochs,
                          warmup_lr=ft.warmup_lr, per_epoch=ft.schedule_unit == "epoch")
  local = seed % members.num_members(pretrained)
  plan = methods.sweep_plan(budget, tuple(s.lr_ratios), tuple(s.cycle_ratios), local,
                           sse=s.get("sse", True))
  model = models.build_model(c.model, data.num_target_classes)
  trainer = build.make_trainer(c, model, data, ft)
  checkpointer = build.make_checkpointer(c, trainer, data, workdir, f"sweep-seed{seed}")
  logging.info("Seed %d: %d phases, %d members (Local DE from pre-trained checkpoint %d).", seed,
               len(plan.phases), sum(p.num_members for p in plan.phases), local)
  actions = train.Actions(log_every=c.log_every_steps, save_every=c.checkpoint_every_steps,
                          stop=stop)
  variables, _ = train.run_plan(trainer, plan.phases, data.target_train, ft.batch_size,
                                pretrained, actions, checkpointer)
  return model, variables, plan


def predict_all(config, data: TransferData, model, variables, images, chunk: int = 10):
  """Probabilities ``[M, N, C]`` of all M stacked members, ``chunk`` members per program (the
  last chunk is padded so that every chunk reuses one compiled program)."""
  total = members.num_members(variables)
  chunk = min(chunk, total)
  out = []
  for start in range(0, total, chunk):
    ids = list(range(start, min(start + chunk, total)))
    padded = ids + [ids[-1]] * (chunk - len(ids))
    probs = build.predict_members(config, data, model, members.take(variables, padded), images)
    out.append(probs[:len(ids)])
  return np.concatenate(out)


def evaluate_seed(config, data: TransferData, model, variables, plan: methods.SweepPlan,
                  pretrained, seed: int, basin_curves: bool) -> dict[str, Any]:
  """Rows of ``COLUMNS`` for every cell, and (if ``basin_curves``) the interpolation curves."""
  c = seed_config(config, seed)
  test = predict_all(c, data, model, variables, data.target_test.images)
  val = predict_all(c, data, model, variables, data.target_val.images)
  params = variables["params"]
  local = seed % members.num_members(pretrained)
  k = c.num_members

  def source_of(member_id: int) -> int:  # the pre-trained checkpoint a member descends from
    return member_id - k if k <= member_id < 2 * k else local

  def distance_to_pretrained(member_id: int) -> float:
    head = c.model.head
    return basin.l2_distance(evaluation.body_params(members.take(params, member_id), head),
                             evaluation.body_params(members.take(pretrained["params"],
                                                          source_of(member_id)), head))

  rows, curves = [], []
  test_y, val_y = data.target_test.labels, data.target_val.labels

  def cal_nll(ids) -> float:  # T fitted on the validation slice, NLL on the test set
    return uncertainty.calibrated_nll(metrics.ensemble(val[ids]), val_y,
                                      metrics.ensemble(test[ids]), test_y)

  local_ids = plan.ensembles[("local_de", None, None)]
  reference = [cal_nll(local_ids[:l]) for l in range(1, len(local_ids) + 1)]
  for (method, r, cr), ids in plan.ensembles.items():
    labels = data.target_test.labels
    ens_cal_nll = cal_nll(ids)
    report_ = metrics.ensemble_report(test[ids], labels, c.eval.ece_bins)
    ens = evaluation.Ensemble(model, members.take(variables, ids), [str(i) for i in ids], [])
    val_acc = [metrics.accuracy(p, data.target_val.labels) for p in val[ids]]
    val_nll = [metrics.nll(p, data.target_val.labels) for p in val[ids]]
    soups = evaluation.make_soups(c, data, ens, val_acc) if c.eval.soups else {}
    chosen = metrics.best_members(
        report_["members"], [{"accuracy": a, "nll": n} for a, n in zip(val_acc, val_nll)])
    first = members.take(params, ids[0])
    later = ids[1:]
    row = {
        "seed": seed, "method": method, "lr_ratio": r, "cycle_ratio": cr,
        "ensemble_accuracy": report_["ensemble"]["accuracy"],
        "ensemble_nll": report_["ensemble"]["nll"], "ensemble_ece": report_["ensemble"]["ece"],
        "ensemble_cal_nll": ens_cal_nll,
        "val_ensemble_accuracy": metrics.accuracy(metrics.ensemble(val[ids]), val_y),
        "val_ensemble_nll": metrics.nll(metrics.ensemble(val[ids]), val_y),
        "dee": uncertainty.deep_ensemble_equivalent(ens_cal_nll, reference),
        "member_accuracy": float(np.mean([m["accuracy"] for m in report_["members"]])),
        "member_nll": float(np.mean([m["nll"] for m in report_["members"]])),
        "best_member_accuracy": chosen["best"]["accuracy"],
        "best_member_nll": chosen["best"]["nll"],
        "val_best_member_accuracy": max(val_acc), "val_best_member_nll": min(val_nll),
        # The member a user would deploy without the test set: best on the validation slice.
        "picked_member_accuracy": chosen["picked"]["accuracy"],
        "picked_member_nll": chosen["picked"]["nll"],
        "disagreement": report_["diversity"]["disagreement"],
        "l2_to_first": float(np.mean([basin.l2_distance(members.take(params, i), first)
                                      for i in later])),
        "l2_to_pretrained": float(np.mean([distance_to_pretrained(i) for i in later])),
        "barrier_from_first": None, "left_basin": None,
    }
    for name in ("uniform", "greedy"):
      if name in soups:
        row[f"{name}_soup_accuracy"] = soups[name]["test"]["accuracy"]
        row[f"{name}_soup_nll"] = soups[name]["test"]["nll"]
        row[f"{name}_soup_val_accuracy"] = soups[name]["val_accuracy"]
    if "greedy" in soups:
      row["greedy_soup_size"] = len(soups["greedy"]["members"])
    if basin_curves and method in ("sse", "starsse") and cr == float(c.sweep.basin_cycle_ratio):
      # SSE's last member has travelled furthest along its chain; StarSSE's branches are alike.
      target = ids[-1] if method == "sse" else ids[1]
      curve = evaluation.curve_fn(c, data, model, members.take(variables["batch_stats"], 0))(
          first, members.take(params, target))
      row["barrier_from_first"], row["left_basin"] = curve["barrier"], curve["left_basin"]
      curves += [{"seed": seed, "method": method, "lr_ratio": r, "cycle_ratio": cr, "alpha": a,
                  "nll": n, "accuracy": acc}
                 for a, n, acc in zip(curve["alpha"], curve["nll"], curve["accuracy"])]
    rows.append(row)
  return {"rows": rows, "curves": curves}


class Outputs:
  """What a sweep writes beside its CSVs; a project replaces it (the StarSSE paper's claims and
  figures: ``projects/starsse_paper``). The library's own: every cell's table and gains."""

  def summarize(self, rows, threshold: float) -> str:
    """Markdown of the whole sweep."""
    del threshold
    cells_ = cells(rows)
    return "\n".join([*cell_table(cells_), "", *gain_table(cells_, best_cells(rows))]) + "\n"

  def plot(self, workdir: str, rows, curves) -> dict[str, str]:
    """Figures written to ``workdir``: caption -> path."""
    del workdir, rows, curves
    return {}


def run_sweep(config, workdir: str, data: TransferData | None = None,
              stop: resume.StopRequest | None = None, command: str | None = None,
              outputs: Outputs = Outputs()) -> dict[str, Any]:
  """The whole sweep: pre-train (or reuse) the checkpoints, train and evaluate every seed, write
  the CSVs, ``outputs``' summary and figures, and ``report.html`` (``command``: the command line
  it shows).
  Returns ``{'rows', 'curves', 'summary', 'timing'}``."""
  validate(config)
  distributed.initialize(config.execution)  # with execution.distributed; before any JAX call
  writes = distributed.is_writer()  # every process computes; only process 0 writes the outputs
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  data = data if data is not None else load_transfer_data(config)
  pretrained = api.pretrain(config, data, workdir, stop=stop)
  timing = {"pretrain_s": time.perf_counter() - start}
  rows, curves = [], []
  for i, seed in enumerate(config.sweep.seeds):
    path = seed_path(config, workdir, seed)
    if os.path.exists(path):
      with open(path) as f:
        done = json.load(f)
      logging.info("Seed %d: reusing %s.", seed, path)
    else:
      t = time.perf_counter()
      model, variables, plan = train_seed(config, data, pretrained, seed, workdir, stop)
      t_train = time.perf_counter() - t
      # Evaluating a seed takes minutes and saves nothing until it is done; the seed's training
      # is saved, so a stop ends the evaluation at once (a rerun evaluates again).
      with stop.immediate(f"evaluating seed {seed}") if stop else contextlib.nullcontext():
        logging.info("Seed %d: evaluating %d members.", seed, members.num_members(variables))
        done = evaluate_seed(config, data, model, variables, plan, pretrained, seed,
                             basin_curves=True)
      done["timing"] = {"train_s": t_train, "evaluate_s": time.perf_counter() - t - t_train}
      if writes:
        report.write_json(path, done)
      logging.info("Seed %d done: train %.0f s, evaluate %.0f s.", seed, t_train,
                   done["timing"]["evaluate_s"])
    rows += done["rows"]
    curves += done["curves"]
    timing[f"seed_{seed}"] = done.get("timing")
  timing["total_s"] = time.perf_counter() - start
  summary = outputs.summarize(rows, config.eval.basin_threshold)
  if not writes:
    return {"rows": rows, "curves": curves, "summary": summary, "timing": timing}
  write_csv(os.path.join(workdir, "sweep.csv"), rows, COLUMNS)
  write_csv(os.path.join(workdir, "basin.csv"), curves, BASIN_COLUMNS)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(summary)
  figures = outputs.plot(workdir, rows, curves)
  report.write_json(os.path.join(workdir, "timing.json"), timing)
  report.write_page(
      os.path.join(workdir, "report.html"), "starsse_jax sweep", command,
      [("Summary", summary), ("Timing", report.timing_markdown(timing))],
      report.existing(figures),
      config.to_dict())
  return {"rows": rows, "curves": curves, "summary": summary, "timing": timing}


def seed_path(config, workdir: str, seed: int) -> str:
  """Where a finished seed's numbers live: named by a hash of every setting but the list of seeds,
  so that a changed config never reuses another's numbers while a sweep extended with more seeds
  (or split over processes by seed) reuses the seeds it has."""
  settings = config.to_dict()
  settings["sweep"] = {k: v for k, v in settings["sweep"].items() if k != "seeds"}
  # Settings that cannot change a seed's numbers stay out of the name, so that adding one keeps
  # the finished seeds: the memory check's limit, and the validation fraction, which the class
  # split does not use (it draws its slices by count).
  settings["execution"] = {k: v for k, v in settings["execution"].items()
                           if k != "memory_limit_mb"}
  if config.data.target in ("", "split"):
    settings["data"] = {k: v for k, v in settings["data"].items()
                        if k not in ("val_fraction", "val_min_per_class")}
  return os.path.join(workdir, f"seed_{seed}-{resume.fingerprint(settings, ())}.json")


def write_csv(path: str, rows: list[dict[str, Any]], columns) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


# ------------------------------------------------------------------------------- summary


def cells(rows) -> dict[tuple, list[dict[str, Any]]]:
  cells = {}
  for row in rows:
    cells.setdefault((row["method"], row["lr_ratio"], row["cycle_ratio"]), []).append(row)
  return cells


def stat(group, key) -> tuple[float, float]:
  values = [r[key] for r in group if r.get(key) is not None]
  if not values:
    return math.nan, math.nan
  return float(np.mean(values)), float(np.std(values))


def best_cells(rows, key: str = "val_ensemble_accuracy", cycle_ratio=None,
               max_lr_ratio=None) -> dict[str, tuple]:
  """Per method, the (lr_ratio, cycle_ratio) cell with the best mean ``key`` over seeds: by
  default the validation slice's ensemble accuracy, so that the test set only reports. Only
  cells of ``cycle_ratio`` and with lr_ratio <= ``max_lr_ratio`` (and the baselines) compete
  when they are given."""
  best = {}
  for (method, r, cr), group in cells(rows).items():
    if cycle_ratio is not None and cr not in (None, cycle_ratio):
      continue
    if max_lr_ratio is not None and r is not None and r > max_lr_ratio:
      continue
    mean = stat(group, key)[0]
    if method not in best or mean > best[method][1]:
      best[method] = ((r, cr), mean)
  return {method: cell for method, (cell, _) in best.items()}


# The order of methods in tables.
ORDER = ("local_de", "global_de", "local_de_matched", "global_de_matched", "sse", "starsse")


def cell_name(cell) -> str:
  method, r, cr = cell
  if r is None:  # a Deep Ensemble: matched to a cycle ratio's compute, or of K members
    return method if cr is None else f"{method} (cycle_ratio {cr:g})"
  return f"{method} (lr_ratio {r:g}, cycle_ratio {cr:g})"


def gains(group, prefix: str = "", member: str = "best") -> dict[str, list[float]]:
  """Per seed of one cell, its ensemble's gain over its own best member (``prefix`` 'val_' on the
  validation slice): accuracy, ensemble - most accurate member; NLL, lowest member NLL -
  ensemble's. Positive is better in both. ``member='picked'``: over the member picked on the
  validation slice (most accurate there, lowest NLL there), on the test set; the best member on
  the test set is chosen with the test labels, so it is an optimistic comparison."""
  if member not in ("best", "picked") or (member == "picked" and prefix):
    raise ValueError(f"gains: member={member!r} with prefix={prefix!r}; 'picked' is test-only.")
  acc, nll = f"{prefix}{member}_member_accuracy", f"{prefix}{member}_member_nll"
  rows = [x for x in group if x.get(acc) is not None]
  return {"accuracy": [x[f"{prefix}ensemble_accuracy"] - x[acc] for x in rows],
          "nll": [x[nll] - x[f"{prefix}ensemble_nll"] for x in rows]}


def sorted_cells(cells) -> list[tuple]:
  return sorted(cells, key=lambda cell: (ORDER.index(cell[0]) if cell[0] in ORDER
                                         else len(ORDER), cell[2] or 0.0, cell[1] or 0.0))


def mean_std(values) -> tuple[float, float]:
  """Mean and sample std (ddof 1; nan for one value) of a non-empty list."""
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def spread(values) -> str:
  """'mean +- sample std' of ``values`` (no std for one value)."""
  if not values:
    return "-"
  m, sd = mean_std(values)
  return f"{m:.4f}" if math.isnan(sd) else f"{m:.4f} +- {sd:.4f}"


def cell_table(cells) -> list[str]:
  """Every cell's ensemble and its best member, test and validation, mean +- std over seeds."""
  keys = ("ensemble_accuracy", "ensemble_nll", "best_member_accuracy", "best_member_nll",
          "val_ensemble_accuracy", "val_ensemble_nll")
  lines = ["Every cell: its ensemble and its best member (the most accurate, and the lowest-NLL "
           "one), mean +- std (ddof 1) over seeds:", "",
           "| cell | accuracy | NLL | best member accuracy | best member NLL | val accuracy | "
           "val NLL |", "|---" * 7 + "|"]
  for cell in sorted_cells(cells):
    cols = [spread([r[k] for r in cells[cell] if r.get(k) is not None]) for k in keys]
    lines.append(f"| {cell_name(cell)} | " + " | ".join(cols) + " |")
  return lines


def gain_table(cells, best) -> list[str]:
  """Every cell's ensemble against its own best member, per seed: mean +- std of the gain over
  seeds (sample std) and their ratio, the number the default setting is chosen by (a gain three
  times its seed spread survives another machine); * marks each method's cell chosen on
  validation."""
  lines = ["Ensemble gain over its best member (accuracy: ensemble - most accurate member; NLL: "
           "lowest member NLL - ensemble), mean +- std (ddof 1) over seeds (mean / std); the last "
           "two columns: over the member picked on validation, on the test set; * = the "
           "method's cell chosen on validation:", "",
           "| cell | val accuracy gain | val NLL gain | test accuracy gain | test NLL gain | "
           "test accuracy gain over the picked member | test NLL gain over the picked member |",
           "|---|---|---|---|---|---|---|"]
  for cell in sorted_cells(cells):
    method, r, cr = cell
    cols = []
    for prefix, member in (("val_", "best"), ("", "best"), ("", "picked")):
      for v in gains(cells[cell], prefix, member).values():
        if not v:
          cols.append("-")
          continue
        m, sd = mean_std(v)
        cols.append(f"{m:+.4f} +- {sd:.4f} ({m / sd:.1f}x)" if sd > 0 else f"{m:+.4f}")
    mark = "*" if best.get(method) == (r, cr) else ""
    lines.append(f"| {cell_name(cell)}{mark} | " + " | ".join(cols) + " |")
  return lines
