"""Has the first model plateaued? Validation accuracy and NLL of ordinary fine-tuning against its
length E, over several seeds.

  python experiments/first_model_curve.py --config=configs/starsse.py --workdir=runs/curve
  python experiments/first_model_curve.py --config=configs/sweep.py --workdir=runs/curve_sweep \
      --epochs=5,10,20,40,80

StarSSE's premise is a first model that ordinary fine-tuning has finished with: its branches then
explore around a solution instead of continuing an unfinished run. For each E the script
fine-tunes ``--seeds`` members from the config's pre-trained checkpoint with one cosine schedule
over E epochs (the first phase of every plan; members differ in head initialisation, data order
and augmentation), trained together, and evaluates each on the validation slice (which chooses)
and the test set (reported only). Pre-training is the config's own (``WORKDIR/pretrained``, or
``--config.pretrain.checkpoint_dir`` to reuse one).

Writes ``curve.csv`` (one row per E x seed), ``curve.md`` (mean +- std per E) and ``curve.png``.
"""
import csv
import os
import platform
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from starsse_jax import build, api, metrics, report  # noqa: E402
from starsse_jax.data import load_transfer_data  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "A run config (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/curve", "Where the curve and pre-training go.")
_EPOCHS = flags.DEFINE_list("epochs", ["5", "10", "20", "40", "80"], "Fine-tuning lengths E.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Members (seeds) per length.")
flags.mark_flags_as_required(["config"])

COLUMNS = ("epochs", "steps", "seed", "val_accuracy", "val_nll", "test_accuracy", "test_nll",
           "seconds")


def curve_rows(config, data, pretrained, epochs, seeds: int) -> list[dict]:
  """One row per (E, seed): the metrics of ordinary fine-tuning for E epochs."""
  rows = []
  for e in epochs:
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.method, c.num_members, c.finetune.epochs = "local_de", seeds, float(e)
      c.eval.baseline = ""  # a Local DE has no baseline (configs/starsse.py sets one)
    t = time.perf_counter()
    ens = api.finetune(c, data, pretrained)
    seconds = time.perf_counter() - t
    probs = {s: build.predict_members(c, data, ens.model, ens.variables,
                             getattr(data, f"target_{s}").images) for s in ("val", "test")}
    steps = len(ens.phases[0]["lr_table"])
    for k in range(seeds):
      row = {"epochs": float(e), "steps": steps, "seed": k, "seconds": round(seconds, 1)}
      for s in ("val", "test"):
        labels = getattr(data, f"target_{s}").labels
        row[f"{s}_accuracy"] = metrics.accuracy(probs[s][k], labels)
        row[f"{s}_nll"] = metrics.nll(probs[s][k], labels)
      rows.append(row)
    print(f"E={e:>5}: {steps} steps, {seconds:.0f} s; val acc "
          f"{np.mean([r['val_accuracy'] for r in rows[-seeds:]]):.4f}, val NLL "
          f"{np.mean([r['val_nll'] for r in rows[-seeds:]]):.4f}", flush=True)
  return rows


def summary(rows) -> str:
  lines = ["| E (epochs) | steps | val accuracy | val NLL | test accuracy | test NLL |",
           "|---|---|---|---|---|---|"]
  for e in sorted({r["epochs"] for r in rows}):
    g = [r for r in rows if r["epochs"] == e]
    cell = lambda key: f"{np.mean([r[key] for r in g]):.4f} +- {np.std([r[key] for r in g]):.4f}"
    lines.append(f"| {e:g} | {g[0]['steps']} | {cell('val_accuracy')} | {cell('val_nll')} | "
                 f"{cell('test_accuracy')} | {cell('test_nll')} |")
  return "\n".join(lines) + "\n"


def plot(path: str, rows) -> None:
  plt = report.pyplot()  # pylint: disable=protected-access
  es = sorted({r["epochs"] for r in rows})
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
  for ax, key in zip(axes, ("accuracy", "nll")):
    for split, style in (("val", "-o"), ("test", "--s")):
      mean = [np.mean([r[f"{split}_{key}"] for r in rows if r["epochs"] == e]) for e in es]
      std = [np.std([r[f"{split}_{key}"] for r in rows if r["epochs"] == e]) for e in es]
      ax.errorbar(es, mean, std, fmt=style, capsize=2, label=split)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fine-tuning epochs E")
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
  fig.suptitle("first model: ordinary fine-tuning, mean +- std over seeds", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  report.quiet_cli_logging()
  config = _CONFIG.value
  os.makedirs(_WORKDIR.value, exist_ok=True)
  start = time.perf_counter()
  data = load_transfer_data(config)
  pretrained = api.pretrain(config, data, _WORKDIR.value)
  rows = curve_rows(config, data, pretrained, [float(e) for e in _EPOCHS.value], _SEEDS.value)
  with open(os.path.join(_WORKDIR.value, "curve.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  text = (summary(rows) + f"\n{len(data.target_train)} training / {len(data.target_val)} "
          f"validation / {len(data.target_test)} test images; {_SEEDS.value} seeds per E; "
          f"{time.perf_counter() - start:.0f} s on {platform.machine()} "
          f"({os.cpu_count()} cores).\n")
  with open(os.path.join(_WORKDIR.value, "curve.md"), "w") as f:
    f.write(text)
  plot(os.path.join(_WORKDIR.value, "curve.png"), rows)
  print(text)


if __name__ == "__main__":
  app.run(main)
