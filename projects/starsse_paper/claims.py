"""The StarSSE paper's reading of a sweep: the best setting per method, the basin barriers, and
the paper's claims, each decided by a paired comparison over seeds with a 95% t interval.

``Paper`` is the ``sweep.Outputs`` that ``projects/starsse_paper/sweep.py`` hands to
``sweep.run_sweep``: its ``summarize`` writes ``summary.md``, its ``plot`` the figures
(``plots``).
"""
from __future__ import annotations

import math

from starsse_jax import stats, sweep
from starsse_jax.sweep import ORDER, best_cells, cell_name, cell_table, gain_table, stat

from projects.starsse_paper import plots


class Paper(sweep.Outputs):
  """The paper's summary and figures."""

  def summarize(self, rows, threshold: float) -> str:
    return summarize(rows, threshold)

  def plot(self, workdir: str, rows, curves) -> dict[str, str]:
    return plots.plot_sweep(workdir, rows, curves)


_TABLE_KEYS = ("ensemble_accuracy", "ensemble_nll", "ensemble_cal_nll", "dee", "member_accuracy",
               "uniform_soup_accuracy", "greedy_soup_accuracy")


def _best_table(cells, best) -> list[str]:
  def fmt(group, key):
    mean, std = stat(group, key)
    return "-" if math.isnan(mean) else f"{mean:.4f} +- {std:.4f}"

  lines = ["| method | lr_ratio | cycle_ratio | ensemble acc | ensemble NLL | calibrated NLL | "
           "DEE | member acc | uniform soup acc | greedy soup acc |", "|---" * 10 + "|"]
  for method in ORDER:
    if method not in best:
      continue
    r, cr = best[method]
    g = cells[(method, r, cr)]
    lines.append(f"| {method} | {'-' if r is None else f'{r:g}'} | "
                 f"{'-' if cr is None else f'{cr:g}'} | "
                 + " | ".join(fmt(g, key) for key in _TABLE_KEYS) + " |")
  return lines


def _paired(cells, a, b, key) -> dict[str, float]:
  """``stats.paired_difference`` of ``key`` between cells ``a`` and ``b`` over their common
  seeds."""
  values = lambda cell: {r["seed"]: r[key] for r in cells.get(cell, []) if r.get(key) is not None}
  va, vb = values(a), values(b)
  seeds = sorted(set(va) & set(vb))
  if not seeds:
    return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
  return stats.paired_difference([va[s] for s in seeds], [vb[s] for s in seeds])


def _all_of(verdicts) -> str:
  """'yes' when every part says yes, 'no' when any says no, else 'unresolved'."""
  verdicts = list(verdicts)
  return ("yes" if all(v == "yes" for v in verdicts) else
          "no" if "no" in verdicts else "unresolved")


def _compare(cells, a, b) -> tuple[str, str]:
  """(verdict, text) of 'cell a beats cell b' in accuracy and calibrated NLL: 'yes' only when
  both intervals say so, 'no' when either says the reverse."""
  acc = _paired(cells, a, b, "ensemble_accuracy")
  nll = _paired(cells, a, b, "ensemble_cal_nll")
  v = (stats.verdict(acc), stats.verdict(nll, better="lower"))
  return _all_of(v), (f"accuracy {stats.describe(acc)} ({v[0]}), calibrated NLL "
                   f"{stats.describe(nll)} ({v[1]}); n = {acc['n']} seeds")


def summarize(rows, threshold: float) -> str:
  """Markdown: the best setting per method (chosen on the validation slice; test mean +- std
  over seeds), the basin barrier per lr ratio, and the paper's claims, each decided by a paired
  comparison over seeds with a 95% t interval."""
  cells = sweep.cells(rows)
  best = best_cells(rows)
  seeds = sorted({r["seed"] for r in rows})
  lines = [f"Best setting per method, chosen by mean ensemble accuracy on the validation slice; "
           f"test metrics, mean +- std (ddof 0) over {len(seeds)} seed(s) {seeds}. DEE: "
           "calibrated NLL as the number of Local DE members that match it.", "",
           *_best_table(cells, best)]
  if any(k[2] == 1.0 for k in cells):
    lines += ["", "At equal training compute (cycle_ratio 1: every method trains K x E "
              "member-epochs):", ""] + _best_table(cells, best_cells(rows, cycle_ratio=1.0))
  lines += ["", *cell_table(cells), "", *gain_table(cells, best)]
  lines += ["", *_barrier_table(rows, threshold)]
  lines += ["", "Claims of the paper: each difference is mean [95% t interval] over seeds, paired "
            "by seed (same pre-trained checkpoint, data and first model); 'yes' only where the "
            "intervals exclude zero.", ""]
  lines += _claims(cells, best, rows, threshold)
  return "\n".join(lines) + "\n"


def _barrier_table(rows, threshold) -> list[str]:
  """Interpolation barrier (test NLL above the straight line) from the first model to a member,
  per method and lr ratio, with the share of seeds that left the basin."""
  done = [r for r in rows if r.get("barrier_from_first") is not None]
  if not done:
    return []
  lines = [f"Basin barrier from the first model (nats of test NLL; left the basin above "
           f"{threshold:g}), cycle_ratio {done[0]['cycle_ratio']:g}: mean [95% t interval], "
           "seeds that left", "", "| lr_ratio | SSE (last member) | StarSSE (a branch) |",
           "|---|---|---|"]
  for r in sorted({row["lr_ratio"] for row in done}):
    cell = []
    for method in ("sse", "starsse"):
      b = [row["barrier_from_first"] for row in done
           if row["method"] == method and row["lr_ratio"] == r]
      if not b:
        cell.append("-")
        continue
      i = stats.paired_difference(b, [0.0] * len(b))
      cell.append(f"{i['mean']:.3f} [{i['low']:.3f}, {i['high']:.3f}], "
                  f"{sum(v > threshold for v in b)}/{len(b)}")
    lines.append(f"| {r:g} | {cell[0]} | {cell[1]} |")
  return lines


def _claims(cells, best, rows, threshold) -> list[str]:
  out = []
  local, glob = ("local_de", None, None), ("global_de", None, None)
  verdict, text = _compare(cells, glob, local)
  out.append(f"1. Global DE beats Local DE: {verdict} (Global - Local: {text}).")
  if "sse" in best:
    top = max(k[1] for k in cells if k[0] == "sse")
    br, bcr = best["sse"]
    barriers = [r["barrier_from_first"] for r in rows if r["method"] == "sse"
                and r["lr_ratio"] == top and r.get("barrier_from_first") is not None]
    left = stats.paired_difference(barriers, [threshold] * len(barriers)) if barriers else {
        "mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    left_v = stats.verdict(left)
    if br == top:
      degrade_v, degrade = "no", f"the largest lr_ratio {top:g} is also SSE's best on validation"
    else:
      degrade_v, degrade = _compare(cells, ("sse", br, bcr), ("sse", top, bcr))
      degrade = f"best SSE (lr_ratio {br:g}) - SSE at lr_ratio {top:g}, cycle_ratio {bcr:g}: {degrade}"
    verdict = _all_of((left_v, degrade_v))
    out.append(f"2. SSE with a large lr leaves the basin and degrades: {verdict} (barrier at "
               f"lr_ratio {top:g} minus the threshold {threshold:g}: "
               f"{stats.describe(left, 3)} ({left_v}, n = {left['n']}); {degrade}).")
  if "starsse" in best:
    moderate = best_cells(rows, max_lr_ratio=2.0).get("starsse")
    if moderate:
      cell = ("starsse",) + moderate
      verdict, text = _compare(cells, cell, local)
      out.append(f"3. StarSSE at a moderate lr beats Local DE: {verdict} ({cell_name(cell)}, chosen "
                 f"on validation among lr_ratio <= 2, - Local DE: {text}).")
    equal = best_cells(rows, cycle_ratio=1.0, max_lr_ratio=2.0).get("starsse")
    if equal and equal[1] == 1.0:
      cell = ("starsse",) + equal
      verdict, text = _compare(cells, cell, local)
      out.append(f"3b. ... at equal compute (cycle_ratio 1): {verdict} ({cell_name(cell)} - Local DE: "
                 f"{text}).")
    star = ("starsse",) + best["starsse"]
    for other, label in (("local_de_matched", "3c. StarSSE beats a Local DE"),
                         ("global_de_matched", "6. StarSSE beats a Global DE")):
      matched = (other, None, star[2])
      if matched in cells:
        verdict, text = _compare(cells, star, matched)
        out.append(f"{label} of equal training compute: {verdict} ({cell_name(star)} - "
                   f"{other} at cycle_ratio {star[2]:g}: {text}).")
    if "sse" in best:
      a, b = ("starsse",) + best["starsse"], ("sse",) + best["sse"]
      verdict, text = _compare(cells, a, b)
      out.append(f"4. StarSSE beats SSE, each at its best setting on validation: {verdict} "
                 f"({cell_name(a)} - {cell_name(b)}: {text}).")
    parts, verdicts = [], []
    for soup in ("uniform", "greedy"):
      key, val_key = f"{soup}_soup_accuracy", f"{soup}_soup_val_accuracy"
      if not any(r.get(key) is not None for r in rows):  # soups not made (eval.soups False)
        continue
      chosen = best_cells(rows, key=val_key)
      for other in ("sse", "local_de"):
        if other not in chosen or "starsse" not in chosen:
          continue
        a, b = ("starsse",) + chosen["starsse"], (other,) + chosen[other]
        i = _paired(cells, a, b, key)
        verdicts.append(stats.verdict(i))
        parts.append(f"{soup}: {cell_name(a)} - {cell_name(b)} {stats.describe(i)} ({verdicts[-1]})")
    if verdicts:
      verdict = _all_of(verdicts)
      out.append(f"5. StarSSE soups beat SSE and Local-DE soups (soup test accuracy, each cell "
                 f"chosen by its soup's validation accuracy): {verdict} ({'; '.join(parts)}).")
  return out


# ------------------------------------------------------------------------------- figures
