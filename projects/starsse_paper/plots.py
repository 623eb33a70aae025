"""The StarSSE paper's figures of a sweep: ensemble accuracy and NLL, soups and members against
lr_ratio per cycle_ratio (mean +- std over seeds, Local and Global DE as lines), and the
interpolation curves from the first model."""
from __future__ import annotations

import os

import numpy as np

from starsse_jax import report, sweep
from starsse_jax.sweep import best_cells, stat

PLOTS = (("ensemble accuracy and NLL by lr_ratio (mean +- std over seeds)", "sweep_ensemble.png"),
         ("soups by lr_ratio", "sweep_soups.png"), ("members by lr_ratio", "sweep_members.png"),
         ("interpolation from the first model", "sweep_interpolation.png"))


def plot_sweep(workdir: str, rows, curves) -> dict[str, str]:
  """The sweep's figures in ``workdir``: caption -> path of those written."""
  plt = report.pyplot()
  cells = sweep.cells(rows)
  cycle_ratios = sorted({k[2] for k in cells if k[2] is not None})
  lr_ratios = sorted({k[1] for k in cells if k[1] is not None})
  if not cycle_ratios:
    return {}

  def panel(path, keys, title_of):
    fig, axes = plt.subplots(len(keys), len(cycle_ratios), squeeze=False,
                             figsize=(3.2 * len(cycle_ratios), 2.8 * len(keys)))
    for i, (key, styles) in enumerate(keys):
      for j, cr in enumerate(cycle_ratios):
        ax = axes[i][j]
        for method, label, style in styles:
          if method in ("local_de", "global_de"):
            mean, std = stat(cells.get((method, None, None), []), key)
            if np.isnan(mean):
              continue
            ax.axhline(mean, ls=style, color="gray" if method == "local_de" else "black",
                       label=label)
            continue
          stats = [stat(cells.get((method, r, cr), []), key) for r in lr_ratios]
          if all(np.isnan(s[0]) for s in stats):  # not measured (e.g. eval.soups=False)
            continue
          ax.errorbar(lr_ratios, [s[0] for s in stats], [s[1] for s in stats], marker="o",
                      ls=style, capsize=2, label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(f"cycle_ratio {cr:g}", fontsize=9)
        ax.set_xlabel("lr_ratio")
        if j == 0:
          ax.set_ylabel(title_of(key), fontsize=9)
    if not any(ax.has_data() for row in axes for ax in row):
      plt.close(fig)
      return
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, path), dpi=110)
    plt.close(fig)

  methods_ = [("sse", "SSE", "-"), ("starsse", "StarSSE", "-"), ("local_de", "Local DE", "--"),
              ("global_de", "Global DE", ":")]
  label = lambda key: "test " + key.replace("_", " ")
  panel("sweep_ensemble.png", [("ensemble_accuracy", methods_), ("ensemble_nll", methods_)],
        label)
  soups = methods_[:3]  # Global DE's soup averages unrelated checkpoints: left out
  panel("sweep_soups.png", [("uniform_soup_accuracy", soups), ("greedy_soup_accuracy", soups)],
        label)
  panel("sweep_members.png", [("member_accuracy", methods_)], label)
  if curves:
    _plot_curves(plt, os.path.join(workdir, "sweep_interpolation.png"), rows, curves)
  return report.existing({caption: os.path.join(workdir, f) for caption, f in PLOTS})


def _plot_curves(plt, path, rows, curves) -> None:
  """NLL from the first model to an SSE / StarSSE member, for the best and the largest lr."""
  best = best_cells(rows)
  first_seed = curves[0]["seed"]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
  for ax, method in zip(axes, ("sse", "starsse")):
    mine = [c for c in curves if c["method"] == method and c["seed"] == first_seed]
    if not mine:
      continue
    top = max(c["lr_ratio"] for c in mine)
    best_r = best.get(method, (top,))[0]
    for r in sorted({top, best_r}):
      pts = [c for c in mine if c["lr_ratio"] == r]
      which = " and ".join(w for w, v in (("best", best_r), ("largest", top)) if v == r)
      ax.plot([p["alpha"] for p in pts], [p["nll"] for p in pts], marker=".",
              label=f"lr_ratio {r:g} ({which})")
    ax.set_title(f"{method}: first model -> member (cycle_ratio {mine[0]['cycle_ratio']:g}, "
                 f"seed {first_seed})",
                 fontsize=9)
    ax.set_xlabel("alpha")
    ax.legend(fontsize=7)
  axes[0].set_ylabel("test NLL (BN recomputed)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
