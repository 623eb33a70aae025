"""Pre-trained source networks: how long pre-training needs (chosen on a source validation slice),
and the networks the project ships.

  python experiments/pretrain_sources.py --workdir=runs/pretrain_curve --epochs=3,6,12 --seeds=2
  python experiments/pretrain_sources.py --workdir=runs/pretrain_ship --epochs=12 --seeds=5 \\
      --export=starsse_jax/pretrained

For each length E the script pre-trains ``--seeds`` independent networks of ``configs/pretrain.py``
(the default network on the default source task, one cosine over E epochs; networks differ in
initialisation and data order) as one stacked run, on the source classes' training images less a
validation slice of ``--val_per_class`` images per class, and evaluates each on that slice. The
target task is never read. With ``--export`` (one E) every network is written as a float32
``.safetensors`` file in torchvision's layout, ``fashion_mnist_source_seedK.safetensors``, and
``fashion_mnist_source.json`` records the command, time, machine, input statistics and each
network's source-validation accuracy and NLL: what ``configs/starsse.py`` imports as a user imports
a torchvision network.

Writes ``WORKDIR/curve.md`` (mean +- std per E) and ``curve.json``.
"""
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

from starsse_jax import api, configs, inference, metrics, models, report, weights  # noqa: E402
from starsse_jax import data as data_lib  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_curve", "Where runs and tables go.")
_EPOCHS = flags.DEFINE_list("epochs", ["3", "6", "12"], "Pre-training lengths E (epochs).")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Independent networks per length.")
_VAL = flags.DEFINE_integer("val_per_class", 500, "Source validation images per class.")
_EXPORT = flags.DEFINE_string("export", "", "Directory for the networks' files (one E only).")
_STEM = "fashion_mnist_source"


def pretrain_config(epochs: float, seeds: int):
  config = configs.load("pretrain")
  with config.unlocked():
    config.pretrain.epochs = float(epochs)
    config.pretrain.num_checkpoints = seeds
  return config


def evaluate(config, data, variables, val) -> list[dict]:
  model = models.build_model(config.model, data.num_source_classes)
  probs = inference.predict(inference.Network(model, data.mean, data.std), variables, val.images,
                            batch_size=config.eval.batch_size)
  return [{"val_accuracy": metrics.accuracy(p, val.labels), "val_nll": metrics.nll(p, val.labels)}
          for p in probs]


def export(directory: str, config, data, variables, rows, epochs: float, seconds: float) -> None:
  os.makedirs(directory, exist_ok=True)
  model = models.build_model(config.model, data.num_source_classes)
  files = []
  for k, row in enumerate(rows):
    name = f"{_STEM}_seed{k}.safetensors"
    one = jax.tree.map(lambda x, k=k: np.asarray(x[k], np.float32), variables)
    weights.export(one, os.path.join(directory, name), model)
    files.append({"file": name, **{key: round(v, 4) for key, v in row.items()}})
  record = {
      "command": "python experiments/pretrain_sources.py " + " ".join(
          shlex.quote(a) for a in sys.argv[1:]),
      "model": {k: v for k, v in config.model.to_dict().items()
                if k in ("name", "stage_sizes", "width")},
      "source_classes": list(config.data.source_classes),
      "train_images": int(len(data.source_train)), "val_images_per_class": _VAL.value,
      "epochs": epochs, "lr": config.pretrain.lr, "batch_size": config.pretrain.batch_size,
      "input_mean": [round(float(v), 6) for v in data.mean],
      "input_std": [round(float(v), 6) for v in data.std],
      "seconds": round(seconds), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
      "date": time.strftime("%Y-%m-%d"), "networks": files}
  with open(os.path.join(directory, f"{_STEM}.json"), "w") as f:
    json.dump(record, f, indent=1)
  print(f"Wrote {len(files)} networks and {_STEM}.json to {directory}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _EXPORT.value and len(_EPOCHS.value) != 1:
    raise app.UsageError("--export writes the networks of one length: give one --epochs value.")
  report.quiet_cli_logging()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  results = []
  for e in (float(x) for x in _EPOCHS.value):
    config = pretrain_config(e, _SEEDS.value)
    full = data_lib.load_transfer_data(config)
    train, val = data_lib.hold_out(full.source_train, _VAL.value, config.seed, "--val_per_class")
    data = data_lib.TransferData(train, full.target_train, full.target_val, full.target_test,
                                 full.num_source_classes, full.num_target_classes,
                                 *data_lib.image_statistics(train.images))
    t = time.perf_counter()
    variables = api.pretrain(config, data, os.path.join(_WORKDIR.value, f"epochs_{e:g}"))
    seconds = time.perf_counter() - t
    rows = evaluate(config, data, variables, val)
    results.append({"epochs": e, "seconds": round(seconds, 1), "networks": rows})
    acc = [r["val_accuracy"] for r in rows]
    nll = [r["val_nll"] for r in rows]
    print(f"E={e:g}: {seconds:.0f} s; source val accuracy {np.mean(acc):.4f} +- {np.std(acc):.4f}, "
          f"NLL {np.mean(nll):.4f} +- {np.std(nll):.4f}", flush=True)
    if _EXPORT.value:
      export(_EXPORT.value, config, data, variables, rows, e, seconds)
  lines = ["| E (epochs) | networks | source val accuracy | source val NLL | seconds |",
           "|---|---|---|---|---|"]
  for r in results:
    acc = [n["val_accuracy"] for n in r["networks"]]
    nll = [n["val_nll"] for n in r["networks"]]
    lines.append(f"| {r['epochs']:g} | {len(acc)} | {np.mean(acc):.4f} +- {np.std(acc):.4f} | "
                 f"{np.mean(nll):.4f} +- {np.std(nll):.4f} | {r['seconds']:.0f} |")
  text = "\n".join(lines) + (f"\n\n{len(train)} training / {_VAL.value} validation images per "
                             f"class of the source task; {platform.machine()} "
                             f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}.\n")
  with open(os.path.join(_WORKDIR.value, "curve.md"), "w") as f:
    f.write(text)
  with open(os.path.join(_WORKDIR.value, "curve.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(text)


if __name__ == "__main__":
  app.run(main)
