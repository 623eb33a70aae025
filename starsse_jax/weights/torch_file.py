"""PyTorch checkpoints (``.pth``, ``.pth.tar``, ``.pt``) read into numpy, with or without torch.

``torch.save`` has written a zip archive since PyTorch 1.6: ``<name>/data.pkl`` (a pickle whose
tensors refer to storages by key) and one raw little-endian file per storage under
``<name>/data/``. That layout is read here with a *restricted* unpickler: tensors become numpy
arrays, containers stay containers, and any other class in the pickle (an ``argparse.Namespace``
of training arguments, an optimizer's state) becomes an inert placeholder. Nothing from the file
is executed, and torch is not needed. The legacy pre-1.6 format (not a zip) needs
``torch.load``, which is used when torch is importable.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile

import ml_dtypes
import numpy as np

from starsse_jax.weights.errors import UnreadableWeightsError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Opaque:
  """Stands in for any class of the pickle that is not a tensor or a container."""

  def __init__(self, *args, **kwargs):
    self.args = args

  def __setstate__(self, state):
    self.state = state

  def __call__(self, *args, **kwargs):
    return _Opaque(*args)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  if not size:
    return storage[offset].copy()
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=[s * itemsize for s in stride])
  return np.array(view)


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self._archive, self._prefix, self._path = archive, prefix, path
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    return _Opaque

  def persistent_load(self, pid):
    _, storage_type, key, _, _ = pid
    if key not in self._storages:
      try:
        raw = self._archive.read(f"{self._prefix}data/{key}")
      except (KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UnreadableWeightsError(self._path, f"storage {key} is missing or damaged ({e})")
      dtype = storage_type.dtype.newbyteorder("<")
      self._storages[key] = np.frombuffer(raw, dtype=dtype)
    return self._storages[key]


def read(path: str):
  """The object ``torch.load`` would return, with tensors as numpy arrays."""
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      if f.read(4) == b"PK\x03\x04":  # a zip's start without its end: cut short
        raise UnreadableWeightsError(path, "it is a zip archive without its central directory: "
                                     "the file is truncated")
    return _read_legacy(path)
  try:
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
      if not pickles:
        raise UnreadableWeightsError(path, "it is a zip file without a PyTorch data.pkl")
      prefix = pickles[0][:-len("data.pkl")]
      names = set(archive.namelist())
      if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") != b"little":
        raise UnreadableWeightsError(path, "it was saved on a big-endian machine")
      with archive.open(pickles[0]) as f:
        return _Unpickler(io.BytesIO(f.read()), archive, prefix, path).load()
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError) as e:
    if isinstance(e, UnreadableWeightsError):
      raise
    raise UnreadableWeightsError(path, f"the archive is damaged ({type(e).__name__}: {e})") from e


def _read_legacy(path: str):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UnreadableWeightsError(
        path, "it is not a zip archive: either PyTorch's legacy (pre-1.6) format, which needs "
        "torch to read (pip install torch, or convert it once elsewhere with "
        "`torch.save(torch.load(f), g)`), or a truncated file") from None
  try:
    # Legacy checkpoints may pickle arbitrary objects; only load files you trust.
    obj = torch.load(path, map_location="cpu", weights_only=False)
  except Exception as e:  # torch raises many types for damaged files
    raise UnreadableWeightsError(path, f"torch.load failed ({type(e).__name__}: {e})") from e
  return _to_numpy(obj, torch)


def _to_numpy(obj, torch):
  if isinstance(obj, torch.Tensor):
    tensor = obj.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
  if isinstance(obj, dict):  # insertion order is kept: it is the state_dict's key order
    return {k: _to_numpy(v, torch) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v, torch) for v in obj)
  return obj
