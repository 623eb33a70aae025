"""Readers of weight files, one per format, chosen by file name; and writers for export.

A reader returns whatever the file holds (for PyTorch, the pickled object: often a dict that wraps
the state_dict); ``read_state_dict`` unwraps it to a flat ``{key: numpy array}``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from starsse_jax import npz_file
from starsse_jax.weights import safetensors_file, torch_file
from starsse_jax.weights.errors import UnreadableWeightsError, WeightsError


def _read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    return npz_file.load(path)
  except npz_file.NpzError as e:
    raise UnreadableWeightsError(path, str(e)) from e


READERS: dict[str, Callable[[str], Any]] = {
    ".safetensors": safetensors_file.read,
    ".npz": _read_npz,
    ".pth": torch_file.read,
    ".pth.tar": torch_file.read,
    ".pt": torch_file.read,
    ".tar": torch_file.read,
    ".ckpt": torch_file.read,
    ".bin": torch_file.read,
}

# Where checkpoints put the state_dict, tried in this order (official StarSSE code: model_state,
# state_dict, model; timm: state_dict / state_dict_ema; MoCo/BYOL exports: state_dict).
WRAPPER_KEYS = ("state_dict", "model_state", "model", "state_dict_ema", "network", "params",
                "module")


def _suffix(path: str) -> str:
  name = os.path.basename(path).lower()
  return next((s for s in sorted(READERS, key=len, reverse=True) if name.endswith(s)), "")


def read(path: str) -> Any:
  if not os.path.isfile(path):
    raise UnreadableWeightsError(path, "no such file" if not os.path.exists(path) else
                                 "it is a directory, not a weight file")
  suffix = _suffix(path)
  if not suffix:
    raise UnreadableWeightsError(path, f"the file name has none of the known suffixes "
                                 f"{sorted(READERS)}")
  return READERS[suffix](path)


def _is_state_dict(obj) -> bool:
  return isinstance(obj, dict) and bool(obj) and all(
      isinstance(v, np.ndarray) or np.isscalar(v) for v in obj.values())


def unwrap(obj: Any, key: str = "auto", path: str = "") -> dict[str, np.ndarray]:
  """The flat state_dict inside a loaded checkpoint.

  ``key='auto'`` takes ``obj`` itself when it is a dict of arrays, else the first of
  ``WRAPPER_KEYS`` that holds one (searched recursively); any other ``key`` is a '/'-separated
  path into the checkpoint, e.g. ``'model'`` or ``'checkpoint/state_dict'``.
  """
  if key != "auto":
    for part in key.split("/"):
      if not isinstance(obj, dict) or part not in obj:
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path}: no entry {part!r} in the checkpoint (it has {have}); fix "
                           "pretrain.checkpoint_key.")
      obj = obj[part]
    found = obj if _is_state_dict(obj) else None
  else:
    found, queue = None, [obj]
    while queue and found is None:
      candidate = queue.pop(0)
      if _is_state_dict(candidate):
        found = candidate
      elif isinstance(candidate, dict):
        queue += [candidate[k] for k in WRAPPER_KEYS if k in candidate]
  if found is None:
    top = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(f"{path}: found no state_dict (a flat mapping of names to tensors) in the "
                       f"checkpoint; its top level is {top}. Name the entry that holds it with "
                       "pretrain.checkpoint_key.")
  return {str(k): np.asarray(v) for k, v in found.items()}


def read_state_dict(path: str, key: str = "auto") -> dict[str, np.ndarray]:
  """The flat ``{name: array}`` state_dict stored in ``path`` (any supported format)."""
  return unwrap(read(path), key, path)


def write_state_dict(path: str, state_dict: dict[str, np.ndarray]) -> None:
  """Writes a flat state_dict as ``.safetensors`` or ``.npz`` (by the file name)."""
  if path.endswith(".safetensors"):
    safetensors_file.write(path, state_dict)
  elif path.endswith(".npz"):
    np.savez(path, **state_dict)
  else:
    raise WeightsError(f"{path}: export writes .safetensors or .npz; choose one of those names.")
