"""Every method of the library on one split, one budget, several seeds: mean +- std per row.

  python experiments/compare.py --workdir=runs/compare
  python experiments/compare.py --workdir=runs/compare --seeds=0,1,2,3,4 --epochs=20 --members=5

Each (seed, method) is an ordinary run of ``configs/<method>.py`` (``api.run``) with the shared
settings below, in ``WORKDIR/seed_S/METHOD``; all fine-tune from the first shipped source network
(``shipped:fashion_mnist_source``, as the method configs do; ``--set=pretrain.checkpoint=``
pre-trains one in ``WORKDIR/pretrained`` instead), so seeds vary fine-tuning only (head
initialisation, data order, augmentation, dropout masks, rounding draws). StarSSE runs with the
low-precision evaluation on (``configs/low_precision.py``), so its rows and the LPE rows come from
the same ensembles. Every run also makes the learned soup and AME soups (SGD 1/i, Adam, Adagrad at
``--ame_lr``). A finished run is not repeated: rerunning the command resumes and re-summarises.

Writes ``WORKDIR/summary.md`` (the table, the settings and the wall time) and ``summary.csv``.
"""
import ast
import csv
import json
import os
import platform
import shlex
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import api, cli, configs, report  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {"local_de": "local_de", "starsse": "low_precision", "sse": "sse", "fge": "fge",
           "swa": "swa", "mc_dropout": "mc_dropout"}

_WORKDIR = flags.DEFINE_string("workdir", "runs/compare", "Where runs and the summary go.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.")
_METHODS = flags.DEFINE_list("methods", list(METHODS), "Methods to compare.")
_EPOCHS = flags.DEFINE_float("epochs", 10.0, "E: the first fine-tuning's epochs; cycles, SWA "
                             "runs and MC-dropout use the same.")
_LR = flags.DEFINE_float("lr", 0.02, "Fine-tuning peak learning rate.")
_MEMBERS = flags.DEFINE_integer("members", 4, "K for the ensemble methods.")
_TEST_PER_CLASS = flags.DEFINE_integer("test_per_class", 400, "Test images per target class.")
_AME_LR = flags.DEFINE_float("ame_lr", 0.01, "Learning rate of the Adam and Adagrad AME soups.")


_SET = flags.DEFINE_multi_string(
    "set", [], "FIELD=VALUE applied to every run's config after the settings above, e.g. "
    "--set=pretrain.epochs=0.5 (a Python literal, or else a string).")


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def load_config(name: str):
  return configs.load(name)


def with_overrides(c):
  """``--set`` on a config: the field must exist (a typo stops the comparison before it runs)."""
  for item in _SET.value:
    field, eq, value = item.partition("=")
    if not eq:
      cli.fail(f"--set={item!r}: write FIELD=VALUE, e.g. --set=pretrain.epochs=0.5.")
    node = c
    *path, leaf = field.split(".")
    for part in path:
      node = node.get(part) if hasattr(node, "get") else None
    if not hasattr(node, "get") or leaf not in node:
      cli.fail(f"--set={item!r}: the config has no field {field!r} (see starsse-jax --help).")
    try:
      node[leaf] = _literal(value)
    except TypeError as e:
      cli.fail(f"--set={item!r}: {e}")
  return c


def method_config(method: str, seed: int):
  c = load_config(METHODS[method])
  c.seed = seed
  c.finetune.epochs = _EPOCHS.value
  c.finetune.swa_epochs = _EPOCHS.value
  # The settings of the README's table, pinned here since the defaults became the default run's:
  # fine-tuning lr 0.02, StarSSE/SSE cycles of 0.5 x lr over 1 x E, 200 training and 100
  # validation images/class.
  c.finetune.lr = _LR.value
  c.finetune.lr_ratio, c.finetune.cycle_ratio = 0.5, 1.0
  c.data.target_train_per_class, c.data.target_val_per_class = 200, 100
  if method != "mc_dropout":
    c.num_members = _MEMBERS.value
  c.data.target_test_per_class = _TEST_PER_CLASS.value
  c.pretrain.checkpoint_dir = os.path.join(_WORKDIR.value, "pretrained")
  c.eval.ame_optimizer = "sgd,adam,adagrad"
  c.eval.ame_lr = _AME_LR.value
  c.eval.low_precision_samples = _MEMBERS.value
  c.log_every_steps = 100
  return with_overrides(c)


def rows_of(method: str, results) -> dict[str, dict[str, float]]:
  """Named rows of one run: first model, mean member, ensemble, greedy ensemble, soups, LPE."""
  def row(m, u):
    return {"accuracy": m["accuracy"], "nll": m["nll"], "ece": m["ece"],
            "cal_nll": (u or {}).get("calibrated", {}).get("nll")}

  test, u = results["test"], results["uncertainty"]

  def mean_row(ids):  # the mean of members' own metrics (not their ensemble)
    rows = [row(test["members"][k], u["members"][k]) for k in ids]
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}

  out = {}
  n = len(test["members"])
  if method == "mc_dropout":
    out["MC-dropout: one pass"] = row(test["members"][0], u["members"][0])
    out[f"MC-dropout: {n} passes"] = row(test["ensemble"], u["ensemble"])
    out["MC-dropout: dropout off"] = row(results["soups"]["uniform"]["test"],
                                         results["soups"]["uniform"]["uncertainty"])
    return out
  out["first fine-tuned model"] = row(test["members"][0], u["members"][0])
  if method == "swa":
    out["SWA (one run)"] = row(test["members"][1], u["members"][1])
    out[f"SWA: mean of {n - 1} runs"] = mean_row(range(1, n))
  else:
    out["mean member"] = mean_row(range(n))
  out[f"ensemble of {n}"] = row(test["ensemble"], u["ensemble"])
  g = results["greedy_ensemble"]
  out["greedy ensemble"] = row(g["test"], g["uncertainty"])
  for name, soup in results.get("soups", {}).items():
    out[f"{name} soup"] = row(soup["test"], soup["uncertainty"])
  for bits, entry in results.get("low_precision", {}).get("bits", {}).items():
    for key, label in (("round_to_nearest", "round-to-nearest"), ("lpe", "LPE of first model"),
                       ("plus_lpe", "+LPE")):
      for mode in ("bn_kept", "bn_recomputed"):
        if mode not in entry[key]:
          continue
        r = entry[key][mode]
        out[f"{label}, {bits}-bit, BN {mode[3:]}"] = {
            **{k: r["test"][k] for k in ("accuracy", "nll", "ece")},
            "cal_nll": r["calibrated_nll"], "kbit": entry["bits_per_model"] / 1e3}
  return out


def key_row(method: str, name: str, first_method: str) -> bool:
  """The rows of the short table: the first model once, then each method's headline rows."""
  if name == "first fine-tuned model":
    return method == first_method
  return (name.startswith("ensemble of") or name in (
      "greedy ensemble", "uniform soup", "greedy soup", "learned soup", "SWA (one run)")
          or name.startswith("MC-dropout") or name.startswith("+LPE")
          or name.startswith("LPE of first model, 4-bit, BN recomputed"))


def summarize(all_rows, only=None) -> tuple[str, list[dict]]:
  keys = ("accuracy", "nll", "cal_nll", "ece")
  lines = ["| method | model | " + " | ".join(keys) + " | fine-tuning epochs |",
           "|---" * (len(keys) + 3) + "|"]
  csv_rows = []
  first_method = next(iter(all_rows))
  for method, per_seed in all_rows.items():
    names = [n for n in per_seed[0][0] if only is None or only(method, n, first_method)]
    for name in names:
      stats = {}
      for key in keys:
        vals = [r[name][key] for r, _ in per_seed if r[name].get(key) is not None]
        stats[key] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
      epochs = per_seed[0][1]
      lines.append(f"| {method} | {name} | " + " | ".join(
          f"{m:.4f} ± {s:.4f}" for m, s in stats.values()) + f" | {epochs:g} |")
      csv_rows.append({"method": method, "model": name, "seeds": len(per_seed),
                       "epochs": epochs, **{f"{k}_mean": m for k, (m, _) in stats.items()},
                       **{f"{k}_std": s for k, (_, s) in stats.items()}})
  return "\n".join(lines), csv_rows


def training_epochs(results, steps_per_epoch: int) -> float:
  """Member-epochs of fine-tuning the run spent (steps x members of every phase)."""
  return sum(p["steps"] * len(p["members"]) for p in results["phases"]) / steps_per_epoch


def main(argv):
  del argv
  report.quiet_cli_logging()
  seeds = [int(s) for s in _SEEDS.value]
  all_rows, timing = {}, {}
  for seed in seeds:
    for method in _METHODS.value:
      workdir = os.path.join(_WORKDIR.value, f"seed_{seed}", method)
      path = os.path.join(workdir, "results.json")
      if not os.path.exists(path):
        api.run(method_config(method, seed), workdir)
      with open(path) as f:
        results = json.load(f)
      with open(os.path.join(workdir, "timing.json")) as f:
        run_time = json.load(f)
      timing[f"{seed}/{method}"] = sum(v for k, v in run_time.items() if k.endswith("_s"))
      c = results["config"]
      steps_per_epoch = (c["data"]["target_train_per_class"] * len(c["data"]["target_classes"])
                         // c["finetune"]["batch_size"])
      all_rows.setdefault(method, []).append(
          (rows_of(method, results), training_epochs(results, steps_per_epoch)))
  table, csv_rows = summarize(all_rows)
  short, _ = summarize(all_rows, key_row)
  head = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores ({platform.machine()}), JAX "
          f"backend {jax.default_backend()}.\n"
          f"Seeds {seeds}; E = {_EPOCHS.value:g}, K = {_MEMBERS.value} (MC-dropout: 1 model), "
          f"{_TEST_PER_CLASS.value} test images per class; mean ± std (ddof 1) over seeds.\n"
          f"Command: python experiments/compare.py --workdir={_WORKDIR.value} "
          f"--seeds={','.join(map(str, seeds))} --epochs={_EPOCHS.value:g} "
          f"--members={_MEMBERS.value}\n"
          f"Run time (data + pre-training + fine-tuning + evaluation, from each run's "
          f"timing.json), summed: {sum(timing.values()):.0f} s; per method and seed: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items()) + ".\n")
  text = (head + "\nHeadline rows:\n\n" + short + "\n\nEvery row (soups, AME variants, LPE at "
          "every width and BatchNorm mode):\n\n" + table + "\n")
  with open(os.path.join(_WORKDIR.value, "summary.md"), "w") as f:
    f.write(text)
  with open(os.path.join(_WORKDIR.value, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
    writer.writeheader()
    writer.writerows(csv_rows)
  headline = [r for r in csv_rows if key_row(r["method"], r["model"], next(iter(all_rows)))]
  plot = os.path.join(_WORKDIR.value, "compare.png")
  report.plot_intervals(plot, report.interval_series(headline))
  report.write_page(os.path.join(_WORKDIR.value, "report.html"), "starsse_jax comparison",
                    " ".join(shlex.quote(a) for a in ["python", "experiments/compare.py"]
                             + sys.argv[1:]),
                    [("Headline rows (mean ± std over seeds)", head + "\n" + short),
                     ("Every row", table)],
                    {"headline rows: mean +- std over seeds": plot})
  print(text)


if __name__ == "__main__":
  app.run(main)
