"""Pre-trained source networks shipped with the project, imported as any weight file is.

``fashion_mnist_source``: five independent pre-trainings of the default network (``resnet_small``,
stages (1, 1, 1), width 16) on the default source task (Fashion-MNIST classes 0-4), made by
``experiments/pretrain_sources.py`` with ``configs/pretrain.py``'s recipe; float32 ``.safetensors``
files in torchvision's layout, ``NAME_seedK.safetensors``, and ``NAME.json`` with the command,
time, machine, input statistics and each network's source-validation accuracy and NLL.

``pretrain.checkpoint='shipped:NAME'`` names them all (sorted by seed; a method takes as many as
it needs); ``configlib.use_shipped_sources`` also sets the input statistics they were trained with.
"""
from __future__ import annotations

import glob
import json
import os

DIR = os.path.dirname(os.path.abspath(__file__))
PREFIX = "shipped:"


def files(name: str) -> list[str]:
  """The shipped files of ``name``, seed 0 first; ``FileNotFoundError`` naming the ones there are."""
  found = sorted(glob.glob(os.path.join(DIR, f"{glob.escape(name)}_seed*.safetensors")),
                 key=lambda p: int(p.rsplit("_seed", 1)[1].split(".")[0]))
  if not found:
    raise FileNotFoundError(f"No shipped networks named {name!r}; the project ships "
                            f"{names() or 'none'} (pretrain.checkpoint='shipped:NAME').")
  return found


def names() -> list[str]:
  return sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(os.path.join(DIR, "*.json")))


def record(name: str) -> dict:
  """What ``NAME.json`` records: how the networks were made and their source-validation metrics."""
  path = os.path.join(DIR, f"{name}.json")
  if not os.path.isfile(path):
    files(name)  # the message naming what is shipped
  with open(path, encoding="utf-8") as f:
    return json.load(f)
