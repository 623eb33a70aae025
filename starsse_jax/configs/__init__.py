"""The configs that ship with the library, named relative to this folder.

A config is a Python file with ``get_config(arg=None)`` (ml_collections' convention); a name
after a colon is passed to it. From the command line or the functional API::

  starsse-jax --config=starsse                            # starsse_jax/configs/starsse.py
  starsse-jax --config=paper/supervised_cifar100:starsse  # get_config("starsse")
  starsse-jax --config=my_configs/mine.py                 # any file: a path is used as given

  config = starsse_jax.configs.load("paper/swin_cifar100:sse")
"""
from __future__ import annotations

import importlib
import os

import ml_collections

DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """Every shipped config, e.g. ``['cifar100_resnet50', ..., 'paper/supervised_cifar100', ...]``."""
  found = []
  for root, _, files in os.walk(DIR):
    for f in files:
      if f.endswith(".py") and not f.startswith("_") and f != "common.py":
        found.append(os.path.relpath(os.path.join(root, f), DIR)[:-3].replace(os.sep, "/"))
  return sorted(found)


def _split(name: str) -> tuple[str, str | None]:
  base, colon, arg = name.partition(":")
  return base, (arg if colon else None)


def _stem(base: str) -> str:
  """``'configs/paper/x.py'`` -> ``'paper/x'``: a shipped config's name."""
  stem = base[:-3] if base.endswith(".py") else base
  return stem.removeprefix("configs/").removeprefix("starsse_jax/configs/")


def resolve(name: str) -> str:
  """``NAME[.py][:ARG]`` -> ``/path/to/NAME.py[:ARG]``; an existing file (with or without ``:ARG``)
  is returned unchanged, so paths keep working. Unknown names raise ValueError listing the
  shipped ones."""
  base, arg = _split(name)
  if os.path.isfile(base):
    return name
  stem = _stem(base)
  if stem not in names():
    raise ValueError(f"--config={name!r}: no such file, and no shipped config of that name. Give "
                     f"a path to a config file or one of: {', '.join(names())}.")
  path = os.path.join(DIR, *stem.split("/")) + ".py"
  return path if arg is None else f"{path}:{arg}"


def module(name: str):
  """The Python module of a shipped config (``'paper/swin_cifar100'``)."""
  stem = _stem(_split(name)[0])
  if stem not in names():
    raise ValueError(f"no shipped config {stem!r}; choose one of: {', '.join(names())}.")
  return importlib.import_module(f"{__name__}.{stem.replace('/', '.')}")


def load(name: str) -> ml_collections.ConfigDict:
  """The config a shipped name stands for: ``load('starsse')``, ``load('paper/byol_sun397:sse')``."""
  _, arg = _split(name)
  get_config = module(name).get_config
  return get_config() if arg is None else get_config(arg)
