"""Results table, JSON, plots, the HTML page of a run, and metric writers."""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import sys
from typing import Any

import numpy as np

from starsse_jax import metrics

_COLUMNS = ("accuracy", "nll", "ece", "brier", "cal. nll", "ood auroc")


def _with_uncertainty(m: dict[str, float], u: dict[str, Any] | None) -> dict[str, float]:
  """Test metrics plus calibrated NLL (T from the validation slice) and max-softmax OOD AUROC."""
  u = u or {}
  return {**m, "cal. nll": u.get("calibrated", {}).get("nll"),
          "ood auroc": u.get("ood", {}).get("max_softmax", {}).get("auroc")}


def rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
  """(name, metrics) of every model the run evaluated, the first fine-tuned model first."""
  ens = results["test"]
  u = results.get("uncertainty", {})
  member_u = u.get("members", [None] * len(ens["members"]))
  out = [(f"member {k} ({name})", _with_uncertainty(m, mu))
         for k, (name, m, mu) in enumerate(zip(results["member_names"], ens["members"], member_u))]
  out.append((f"ensemble of {len(ens['members'])} ({results['method']})",
              _with_uncertainty(ens["ensemble"], u.get("ensemble"))))
  if "baseline" in results:
    b = results["baseline"]
    out.append((f"local DE of {len(b['test']['members'])} (baseline)",
                _with_uncertainty(b["test"]["ensemble"], b["uncertainty"]["ensemble"])))
  if "greedy_ensemble" in results:
    g = results["greedy_ensemble"]
    n = len(g["members"])
    out.append((f"greedy ensemble ({n} member{'s' if n != 1 else ''})",
                _with_uncertainty(g["test"], g.get("uncertainty"))))
  for name, soup in results.get("soups", {}).items():
    n = len(soup["members"])
    out.append((f"{name} soup ({n} member{'s' if n != 1 else ''})",
                _with_uncertainty(soup["test"], soup.get("uncertainty"))))
  return out


def member_gains(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """The ensemble against its own members on the test set (``metrics.best_members``: ``best`` on
  the test set, ``picked`` on the validation slice), as gains: accuracy, ensemble - member; NLL,
  member - ensemble; positive is better."""
  ens = results["test"]["ensemble"]
  chosen = metrics.best_members(results["test"]["members"], results["val"]["members"])
  return {k: {"accuracy": ens["accuracy"] - m["accuracy"], "nll": m["nll"] - ens["nll"],
              "members": m["members"]} for k, m in chosen.items()}


def table(results: dict[str, Any]) -> str:
  """A markdown table of test metrics."""
  lines = ["| model | " + " | ".join(_COLUMNS) + " |", "|---" * (len(_COLUMNS) + 1) + "|"]
  for name, m in rows(results):
    lines.append(f"| {name} | " + " | ".join("-" if m.get(c) is None else f"{m[c]:.4f}"
                                             for c in _COLUMNS) + " |")
  div = results["test"]["diversity"]
  lines.append("")
  lines.append(f"diversity: disagreement {div['disagreement']:.4f}, "
               f"KL to ensemble {div['kl_to_ensemble']:.4f}")
  if len(results["test"]["members"]) > 1 and "val" in results:
    g = member_gains(results)
    lines.append("ensemble gain over its members (test; accuracy up, NLL down): over the best "
                 f"member there {g['best']['accuracy']:+.4f} / {g['best']['nll']:+.4f}; over the "
                 "member picked on validation (member {} / {}) ".format(*g["picked"]["members"])
                 + f"{g['picked']['accuracy']:+.4f} / {g['picked']['nll']:+.4f}")
  if "baseline" in results:
    b = results["baseline"]["test"]
    acc = [m["accuracy"] for m in b["members"]]
    lines.append(f"local DE baseline: members' accuracy {min(acc):.4f}-{max(acc):.4f}, "
                 f"disagreement {b['diversity']['disagreement']:.4f}")
  u = results.get("uncertainty", {})
  if u.get("ood_set"):
    lines.append(f"OOD set: {u['ood_set']} (AUROC of max-softmax; mutual information for the "
                 f"ensemble: {u['ensemble']['ood']['mutual_information']['auroc']:.4f})"
                 if "mutual_information" in u["ensemble"].get("ood", {}) else
                 f"OOD set: {u['ood_set']} (AUROC of max-softmax)")
  if "dee" in results:
    lines.append(f"DEE (calibrated NLL vs Local DE, {results['dee']['reference']}): ensemble "
                 f"{results['dee']['ensemble']:.2f}")
  if "mc_dropout" in results:
    lines.append(f"MC-dropout: members are {results['mc_dropout']['passes']} stochastic test "
                 "passes of each model; soups use the deterministic network.")
  if "low_precision" in results:
    lines += ["", low_precision_table(results["low_precision"])]
  return "\n".join(lines)


def low_precision_table(lp: dict[str, Any]) -> str:
  """Round-to-nearest and low-precision ensembles: memory per model beside test metrics."""
  names = {"round_to_nearest": "round-to-nearest, member 0",
           "lpe": "LPE of member 0", "plus_lpe": "+LPE (every member)"}
  lines = [f"Low-precision ensembles ({lp['samples']} draws per model, scale "
           f"{lp['scale']}; float32 model: {lp['float32_bits'] / 8e3:.1f} kB)", "",
           "| model | bits | kB per model | BatchNorm | accuracy | nll | cal. nll | "
           "member acc. |", "|---" * 8 + "|"]
  for bits, entry in lp["bits"].items():
    for key, label in names.items():
      if key not in entry:
        continue
      for mode in ("bn_kept", "bn_recomputed"):
        if mode not in entry[key]:
          continue
        r = entry[key][mode]
        bn = ("recomputed" if mode == "bn_recomputed" else "kept") if lp.get(
            "batchnorm", True) else "none"
        lines.append(
            f"| {label} (x{entry[key]['models']}) | {bits} | {entry['bits_per_model'] / 8e3:.1f} | "
            f"{bn} | "
            f"{r['test']['accuracy']:.4f} | {r['test']['nll']:.4f} | {r['calibrated_nll']:.4f} | "
            f"{r['member_accuracy']:.4f} |")
  return "\n".join(lines)


def _markdown_to_html(text: str) -> str:
  """The printed report (markdown tables and lines) as HTML: the page shows the same numbers."""
  out, table_rows = [], []

  def flush():
    if not table_rows:
      return
    head, body = table_rows[0], table_rows[2:]
    cells = lambda r, tag: "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>"
                                   for c in r.strip().strip("|").split("|"))
    out.append("<table><thead><tr>" + cells(head, "th") + "</tr></thead><tbody>" +
               "".join("<tr>" + cells(r, "td") + "</tr>" for r in body) + "</tbody></table>")
    table_rows.clear()

  for line in text.splitlines():
    if line.startswith("|"):
      table_rows.append(line)
      continue
    flush()
    if line.strip():
      out.append(f"<p>{html.escape(line)}</p>")
  flush()
  return "\n".join(out)


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
          "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
          "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}")


def page(title: str, command: str | None, sections: list[tuple[str, str]],
         images: dict[str, str], config: dict[str, Any] | None = None) -> str:
  """One self-contained HTML page: the command, ``sections`` (heading, markdown of tables and
  lines, as the printed reports write them), every plot embedded (PNG files as data URIs) and
  the config. Runs, sweeps and comparisons all write theirs with it."""
  parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
  parts.append("<h2>Command</h2><pre>" + html.escape(command or "from Python") + "</pre>")
  for heading, markdown in sections[:1]:
    parts.append(f"<h2>{html.escape(heading)}</h2>" + _markdown_to_html(markdown))
  if images:
    parts.append("<h2>Plots</h2>")
  for caption, path in images.items():
    with open(path, "rb") as f:
      data = base64.b64encode(f.read()).decode("ascii")
    parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")
  for heading, markdown in sections[1:]:
    parts.append(f"<h2>{html.escape(heading)}</h2>" + _markdown_to_html(markdown))
  if config is not None:
    parts.append("<h2>Config</h2><pre>" + html.escape(json.dumps(config, indent=1, default=str))
                 + "</pre>")
  parts.append("</body></html>")
  return "\n".join(parts)


def timing_markdown(timing: dict[str, Any]) -> str:
  lines = ["| what | seconds |", "|---|---|"]
  lines += [f"| {k} | {v} |" for k, v in timing.items() if k != "phases"]
  lines += [f"| phase {p['name']} | {p['seconds']} (first step {p['first_step_s']}, "
            f"{p['member_img_per_s']} member-img/s) |" for p in timing.get("phases", [])]
  return "\n".join(lines)


def html_page(results: dict[str, Any], images: dict[str, str], command: str | None = None,
              title: str = "starsse_jax run") -> str:
  """The page of a run: the command, the test metrics, every plot, the timings and the config."""
  sections = [("Test metrics", table(results))]
  if results.get("images_per_class"):
    sections.append(("Images per class", class_table(results["images_per_class"])))
  if results.get("timing"):
    sections.append(("Timing", timing_markdown(results["timing"])))
  return page(title, command or "starsse_jax.run(...) from Python", sections, images,
              results.get("config"))


def class_table(counts: dict[str, list[int]]) -> str:
  """Markdown: images of each target class in each split, with each split's imbalance ratio
  (largest class over smallest)."""
  names = list(counts)
  lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for c in range(len(counts[names[0]])):
    lines.append(f"| {c} | " + " | ".join(str(counts[n][c]) for n in names) + " |")
  ratio = lambda v: f"{max(v) / max(min(v), 1):.2f}"
  lines.append("| largest / smallest | " + " | ".join(ratio(counts[n]) for n in names) + " |")
  return "\n".join(lines)


def existing(images: dict[str, str]) -> dict[str, str]:
  """The plots of ``images`` that were written (some exist only with some settings)."""
  return {k: v for k, v in images.items() if os.path.exists(v)}


def write_html(path: str, results: dict[str, Any], images: dict[str, str],
               command: str | None = None) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write(html_page(results, existing(images), command))


def write_page(path: str, *args, **kwargs) -> None:
  """``page(...)`` written to ``path``."""
  with open(path, "w", encoding="utf-8") as f:
    f.write(page(*args, **kwargs))


def write_json(path: str, results: dict[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2, default=lambda o: np.asarray(o).tolist())
  os.replace(tmp, path)


def quiet_cli_logging() -> None:
  """INFO logs for a command line, without orbax's per-save chatter."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)
  # Orbax logs every step of every save at INFO; keep the run's own progress readable.
  absl_logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  # JAX reports at INFO that a CPU-only machine has no TPU runtime: noise on every command line.
  absl_logging.get_absl_handler().addFilter(
      lambda record: not (record.pathname.endswith("xla_bridge.py")
                          and record.levelno < absl_logging.converter.STANDARD_WARNING))


def pyplot():
  """matplotlib's pyplot on the file-only Agg backend (runs without a display)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_learning_rates(path: str, phases: list[dict[str, Any]]) -> None:
  """Learning rate of every member over the global step, one line per member."""
  plt = pyplot()

  fig, ax = plt.subplots(figsize=(7, 3.5))
  offset = 0
  for phase in phases:
    table_ = np.asarray(phase["lr_table"])
    steps = offset + np.arange(len(table_))
    for j, member in enumerate(phase["members"]):
      ax.plot(steps, table_[:, j], label=f"member {member} ({phase['name']})")
    offset += len(table_)
  ax.set_xlabel("step (phases in order; parallel members share steps)")
  ax.set_ylabel("learning rate")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


SIZE_PANELS = ("accuracy", "nll", "cal. nll")


def size_curve_series(results: dict[str, Any]) -> dict[str, dict[str, tuple[list, list, str]]]:
  """What the ensemble-size plot draws, per panel (test accuracy, NLL, calibrated NLL): label ->
  (sizes, values, style) with style 'line' (an ensemble of the first k members, k = 1..K: the
  method and, with ``eval.baseline``, the Local DE of equal compute) or 'points' (every member
  at size 1; each soup and the greedy ensemble at the number of members they use)."""
  u = results.get("uncertainty", {})
  curve = results["test"]["size_curve"]
  cal = u.get("size_curve_calibrated_nll")
  out = {panel: {} for panel in SIZE_PANELS}

  def line(label, size_curve, calibrated):
    k = list(range(1, len(size_curve) + 1))
    for panel in ("accuracy", "nll"):
      out[panel][label] = (k, [c[panel] for c in size_curve], "line")
    if calibrated:
      out["cal. nll"][label] = (k, list(calibrated), "line")

  line(f"{results['method']} ensemble", curve, cal)
  if "baseline" in results:
    b = results["baseline"]
    line("local DE (baseline)", b["test"]["size_curve"],
         b.get("uncertainty", {}).get("size_curve_calibrated_nll"))
  members = results["test"]["members"]
  member_u = u.get("members", [{}] * len(members))
  for panel, get in (("accuracy", lambda m, mu: m["accuracy"]), ("nll", lambda m, mu: m["nll"]),
                     ("cal. nll", lambda m, mu: mu.get("calibrated", {}).get("nll"))):
    values = [get(m, mu) for m, mu in zip(members, member_u)]
    if all(v is not None for v in values):
      out[panel]["members"] = ([1] * len(values), values, "points")
  picks = [("greedy ensemble", results.get("greedy_ensemble"))] + [
      (f"{name} soup", soup) for name, soup in results.get("soups", {}).items()]
  for label, r in picks:
    if not r:
      continue
    n = len(r["members"])
    metrics = _with_uncertainty(r["test"], r.get("uncertainty"))
    for panel in SIZE_PANELS:
      if metrics.get(panel) is not None:
        out[panel][label] = ([n], [metrics[panel]], "points")
  return out


_MARKERS = {"members": "o", "greedy ensemble": "s"}


def plot_size_curve(path: str, results: dict[str, Any]) -> None:
  """Test accuracy, NLL and calibrated NLL against ensemble size: the method's and the
  baseline's curves, each member at size 1, the soups and the greedy ensemble as marked points
  (``size_curve_series``)."""
  plt = pyplot()
  series = size_curve_series(results)
  fig, axes = plt.subplots(1, len(SIZE_PANELS), figsize=(12, 3.4))
  k = len(results["test"]["size_curve"])
  for ax, panel in zip(axes, SIZE_PANELS):
    for label, (xs, ys, style) in series[panel].items():
      if style == "line":
        ax.plot(xs, ys, marker=".", label=label)
      else:
        marker = _MARKERS.get(label, "*" if "soup" in label else "D")
        ax.scatter(xs, ys, marker=marker, s=30 if label == "members" else 60, zorder=3,
                   label=label, alpha=0.7 if label == "members" else 1.0)
    ax.set_xlabel("ensemble size (members)")
    ax.set_ylabel(f"test {panel}")
    ax.set_xticks(range(1, max(k, 2) + 1))
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def reliability_series(curves: dict[str, Any]) -> dict[str, list[tuple[float, float, int]]]:
  """Per model, the non-empty confidence bins as (mean confidence, accuracy, count)."""
  out = {}
  for name, c in curves.items():
    r = c["reliability"]
    out[name] = [(r["confidence"][i], r["accuracy"][i], int(r["count"][i]))
                 for i, n in enumerate(r["count"]) if n]
  return out


def plot_reliability(path: str, curves: dict[str, Any]) -> None:
  """Reliability diagrams: accuracy against mean confidence per confidence bin, each bar
  labelled with its number of test images (sparse bins look miscalibrated by chance)."""
  plt = pyplot()
  series = reliability_series(curves)
  fig, axes = plt.subplots(1, len(curves), figsize=(3.4 * len(curves), 3.4), sharey=True)
  for ax, (name, bins) in zip(np.atleast_1d(axes), series.items()):
    width = 1 / len(curves[name]["reliability"]["count"])
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.bar([b[0] for b in bins], [b[1] for b in bins], width=width, alpha=0.6, edgecolor="black")
    for conf, acc, n in bins:
      ax.text(conf, min(acc, 0.97) + 0.02, str(n), ha="center", fontsize=6, rotation=90)
    ax.set_title(name)
    ax.set_xlabel("confidence (bar labels: images)")
    ax.set_ylim(0, 1.1)
  np.atleast_1d(axes)[0].set_ylabel("accuracy")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_risk_coverage(path: str, curves: dict[str, Any]) -> None:
  """Selective risk (error rate of the most confident inputs) against coverage."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, c in curves.items():
    ax.plot(c["risk_coverage"]["coverage"], c["risk_coverage"]["risk"], label=name)
  ax.set_xlabel("coverage")
  ax.set_ylabel("risk (error rate)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def interval_series(rows: list[dict[str, Any]], metrics=("accuracy", "nll", "cal_nll")
                    ) -> dict[str, list[tuple[str, float, float]]]:
  """Per metric, ``(label, mean, std)`` of each row of a comparison over seeds (rows with
  ``method``, ``model``, ``<metric>_mean``, ``<metric>_std``; a metric a row lacks is left out)."""
  out = {}
  for metric in metrics:
    out[metric] = [(f"{r['method']}: {r['model']}", float(r[f"{metric}_mean"]),
                    float(r[f"{metric}_std"])) for r in rows
                   if r.get(f"{metric}_mean") is not None and np.isfinite(r[f"{metric}_mean"])]
  return out


def plot_intervals(path: str, series: dict[str, list[tuple[str, float, float]]],
                   what: str = "mean +- std over seeds") -> None:
  """One panel per metric: each row's mean as a point with its interval as a bar."""
  plt = pyplot()
  metrics = [m for m in series if series[m]]
  height = max(len(series[m]) for m in metrics) if metrics else 1
  fig, axes = plt.subplots(1, max(len(metrics), 1), squeeze=False,
                           figsize=(4.2 * max(len(metrics), 1), 1.2 + 0.3 * height),
                           sharey=True)
  for ax, metric in zip(axes[0], metrics):
    labels, means, stds = zip(*series[metric])
    y = np.arange(len(labels))[::-1]
    ax.errorbar(means, y, xerr=stds, fmt="o", capsize=3, label=metric)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_title(f"{metric.replace('_', ' ')} ({what})", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_interpolation(path: str, basin_results: dict[str, Any]) -> None:
  """Test NLL along the lines pre-trained point -> member and member 0 -> member."""
  plt = pyplot()

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
  for ax, key, title in ((axes[0], "to_pretrained", "pre-trained point -> member"),
                         (axes[1], "to_first", "member 0 -> member")):
    for row in basin_results["members"]:
      if key in row:
        ax.plot(row[key]["alpha"], row[key]["nll"], marker=".", label=row["member"])
    ax.set_title(title)
    ax.set_xlabel("alpha")
    ax.legend(fontsize=7)
  axes[0].set_ylabel("test NLL (BN recomputed)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


class Progress:
  """A phase's progress as a tqdm bar with ETA when ``stream`` (stderr) is a terminal; inactive
  otherwise, where the phase's log lines are the progress (logs and CI keep one line per
  ``log_every_steps``, not a bar redrawn in place)."""

  def __init__(self, name: str, total: int, initial: int = 0, stream=None):
    stream = stream if stream is not None else sys.stderr
    self._bar = None
    if getattr(stream, "isatty", lambda: False)():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, desc=name, unit="step", file=stream,
                       dynamic_ncols=True, leave=True)

  @property
  def active(self) -> bool:
    return self._bar is not None

  def update(self, done: int) -> None:
    if self._bar is not None and done > self._bar.n:
      self._bar.update(done - self._bar.n)

  def describe(self, **values) -> None:
    if self._bar is not None:
      self._bar.set_postfix(values, refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


class LoggingWriter:
  """A metric writer (the interface of ``clu.metric_writers``) that only logs: processes other than
  the writer, and runs that asked for no event files."""

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    logging.debug("step %d: %s", step, scalars)

  def write_hparams(self, hparams: dict[str, Any]) -> None:
    logging.info("hparams: %s", hparams)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class TensorBoardWriter(LoggingWriter):
  """TensorBoard event files through tensorboardX: no TensorFlow at run time (clu's default writer
  imports TensorFlow, which cost 8 to 19 s of every run's start and reserves accelerator memory
  unless hidden from it)."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._events = SummaryWriter(logdir)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    super().write_scalars(step, scalars)
    for key, value in scalars.items():
      self._events.add_scalar(key, value, step)

  def write_hparams(self, hparams: dict[str, Any]) -> None:
    super().write_hparams(hparams)
    self._events.add_text("hparams", json.dumps(hparams, indent=1, default=str))

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()


def create_writer(logdir: str):
  """TensorBoard event files and the log (process 0 of a run)."""
  return TensorBoardWriter(logdir)


def timing(times: dict[str, float], trained: list[dict[str, Any]],
           batch_size: int) -> dict[str, Any]:
  """``timing.json``: seconds per stage, and per phase its seconds, its first step's (compilation,
  mostly) and the steady throughput in member-images per second (the first step left out)."""
  out = {k: round(v, 2) for k, v in times.items()}
  out["phases"] = [
      {"name": p["name"], "seconds": round(p["seconds"], 2),
       "first_step_s": round(p["first_step_seconds"], 2),
       "member_img_per_s": round((len(p["lr_table"]) - 1) * batch_size * len(p["members"]) /
                                 max(p["seconds"] - p["first_step_seconds"], 1e-9), 1)}
      for p in trained if p["seconds"] and len(p["lr_table"]) > 1]
  return out


# The plots of report.html, in its order: title -> file in the workdir.
RUN_PLOTS = {"Test metrics against ensemble size": "ensemble_size.png",
             "Reliability (bars labelled with their image counts)": "reliability.png",
             "Selective prediction: risk against coverage": "risk_coverage.png",
             "Learning rate of every member": "learning_rates.png",
             "Loss along straight lines between members": "interpolation.png"}


def write_outputs(workdir: str, results: dict[str, Any], trained: list[dict[str, Any]],
                  command: str | None = None) -> None:
  """A run's outputs beside its ``results.json``: ``timing.json``, the plots and
  ``report.html`` (``command``: the command line shown in it)."""
  write_json(os.path.join(workdir, "timing.json"), results["timing"])
  plot_learning_rates(os.path.join(workdir, "learning_rates.png"), trained)
  plot_size_curve(os.path.join(workdir, "ensemble_size.png"), results)
  plot_reliability(os.path.join(workdir, "reliability.png"), results["curves"])
  plot_risk_coverage(os.path.join(workdir, "risk_coverage.png"), results["curves"])
  if "basin" in results:
    plot_interpolation(os.path.join(workdir, "interpolation.png"), results["basin"])
  write_html(os.path.join(workdir, "report.html"), results,
             {k: os.path.join(workdir, v) for k, v in RUN_PLOTS.items()}, command)
