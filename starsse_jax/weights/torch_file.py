"""PyTorch checkpoints (``.pth``, ``.pth.tar``, ``.pt``) read into numpy; torch is never used.

Both formats ``torch.save`` writes are read here with one *restricted* unpickler: tensors become
numpy arrays, containers stay containers, and any other class or function the pickle names (an
``argparse.Namespace`` of training arguments, an optimizer's state, but also ``os.system``,
``builtins.eval`` or ``subprocess.Popen`` in a malicious file) becomes an inert placeholder that
is never called. Nothing from the file is executed, whether or not torch is installed.

- Zip (every PyTorch since 1.6): ``<name>/data.pkl``, a pickle whose tensors name their storages
  by key, and one raw little-endian file per storage under ``<name>/data/``.
- Legacy (before 1.6, or ``_use_new_zipfile_serialization=False``): one stream of five pickles
  (magic number, protocol version, system info, the object, the list of storage keys) followed by
  each storage as an 8-byte element count and its raw bytes.

Sizes are checked before anything is allocated: a zip entry may not claim more bytes than the file
could hold, a storage must hold every element its tensors address, and the tensors of one file may
not add up to more than a few times the file's size.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import tarfile
import zipfile
from typing import Any, Callable

import ml_dtypes
import numpy as np

from starsse_jax import npz_file
from starsse_jax.weights.errors import UnreadableWeightsError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # torch/serialization.py's MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
# The tensors of one file may not materialise more than this many times its size: tensors that
# share a storage (tied weights) are fine, a small pickle naming one storage a million times is not.
_EXPANSION = 4


class _StorageType:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Opaque:
  """Stands in for any class or function of the pickle that is not a tensor or a container.
  Calling it (pickle's REDUCE) only records the arguments."""

  def __init__(self, *args, **kwargs):
    self.args = args

  def __setstate__(self, state):
    self.state = state

  def __call__(self, *args, **kwargs):
    return _Opaque(*args)


def _rebuild_parameter(data, *unused):
  return data


class _Unpickler(pickle.Unpickler):
  """Resolves only tensors, storages and plain containers; ``storage(pid)`` supplies the storage
  (a 1-D numpy array) a persistent id names."""

  def __init__(self, file, storage: Callable[[tuple], Any], path: str, budget: int):
    super().__init__(file)
    self._storage, self._path, self._budget = storage, path, budget
    self._allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): tuple,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
    }

  def find_class(self, module, name):
    if (module, name) in self._allowed:
      return self._allowed[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    return _Opaque

  def persistent_load(self, pid):
    return self._storage(pid)

  def _rebuild_tensor(self, storage, offset, size, stride, *unused):
    """The tensor ``storage[offset + sum(i_k * stride_k)]``, after checking that every element it
    addresses lies inside the storage."""
    if not isinstance(storage, np.ndarray):  # a placeholder (first legacy pass) or a bad pickle
      return _Opaque(storage)
    ints = lambda xs: isinstance(xs, (tuple, list)) and all(
        isinstance(x, int) and x >= 0 for x in xs)
    if not (isinstance(offset, int) and offset >= 0 and ints(size) and ints(stride)
            and len(size) == len(stride)):
      raise UnreadableWeightsError(self._path, f"a tensor has an invalid layout (offset "
                                   f"{offset!r}, size {size!r}, stride {stride!r})")
    numel = math.prod(size)
    if numel == 0:
      return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage) or numel > len(storage):
      raise UnreadableWeightsError(
          self._path, f"a tensor of shape {tuple(size)} (stride {tuple(stride)}, offset {offset}) "
          f"needs elements up to {max(last + 1, numel)} but its storage holds {len(storage)}; "
          "the storage is shorter than its tensor (a damaged or crafted file)")
    self._budget -= numel * storage.dtype.itemsize
    if self._budget < 0:
      raise UnreadableWeightsError(self._path, f"its tensors add up to more than {_EXPANSION} "
                                   "times the file's size (a crafted file)")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=[s * itemsize for s in stride])
    return np.array(view)


def _unpickle(data: bytes, path: str, storage=lambda pid: _Opaque(pid), budget: int = 0):
  return _Unpickler(io.BytesIO(data), storage, path, budget).load()


def _storage_pid(pid, path: str) -> tuple[np.dtype, str, int]:
  """(dtype, key, element count) of a ``('storage', type, key, location, numel, ...)`` id."""
  if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage")
      or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0):
    raise UnreadableWeightsError(path, f"the pickle refers to {str(pid)[:80]}, which is not a "
                                 "storage of a known type")
  key = pid[2].decode() if isinstance(pid[2], bytes) else str(pid[2])
  return pid[1].dtype.newbyteorder("<"), key, pid[4]


def read(path: str):
  """The object ``torch.load`` would return, with tensors as numpy arrays."""
  size = os.path.getsize(path)
  if zipfile.is_zipfile(path):
    return _read_zip(path, size)
  with open(path, "rb") as f:
    head = f.read(4)
  if head == b"PK\x03\x04":  # a zip's start without its end: cut short
    raise UnreadableWeightsError(path, "it is a zip archive without its central directory: "
                                 "the file is truncated")
  if tarfile.is_tarfile(path):
    raise UnreadableWeightsError(path, "it is a tar archive: PyTorch's format before 0.4, which "
                                 "this library does not read; save it again with a newer PyTorch")
  return _read_legacy(path, size)


def _guarded(path: str, load: Callable[[], Any]):
  """Runs ``load``, turning whatever a damaged pickle raises into one ``UnreadableWeightsError``
  (nothing from the file can run, so any exception is a malformed file)."""
  try:
    return load()
  except UnreadableWeightsError:
    raise
  except (Exception, RecursionError) as e:  # pylint: disable=broad-except
    raise UnreadableWeightsError(
        path, f"the file is damaged or truncated ({type(e).__name__}: {str(e)[:200]})") from e


def _read_zip(path: str, size: int):
  def entry(archive: zipfile.ZipFile, name: str, expected: int | None = None) -> bytes:
    info = archive.getinfo(name)
    limit = min(npz_file.possible_size(info, size), _EXPANSION * size + (1 << 20))
    if info.file_size > limit or (expected is not None and info.file_size < expected):
      raise UnreadableWeightsError(
          path, f"entry {name} claims {info.file_size} bytes"
          f"{f' (its tensors need {expected})' if expected is not None else ''} in a file of "
          f"{size}: it lies about its size (a damaged or crafted file)")
    return archive.read(name)

  def load():
    with zipfile.ZipFile(path) as archive:
      pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
      if not pickles:
        raise UnreadableWeightsError(path, "it is a zip file without a PyTorch data.pkl")
      prefix = pickles[0][:-len("data.pkl")]
      names = set(archive.namelist())
      if f"{prefix}byteorder" in names and entry(archive, f"{prefix}byteorder") != b"little":
        raise UnreadableWeightsError(path, "it was saved on a big-endian machine")
      storages = {}

      def storage(pid):
        dtype, key, numel = _storage_pid(pid, path)
        if key not in storages:
          name = f"{prefix}data/{key}"
          if name not in names:
            raise UnreadableWeightsError(path, f"storage {key} is missing")
          raw = entry(archive, name, numel * dtype.itemsize)
          storages[key] = np.frombuffer(raw, dtype=dtype, count=numel)
        return storages[key]

      return _unpickle(entry(archive, pickles[0]), path, storage, _EXPANSION * size)

  return _guarded(path, load)


def _read_legacy(path: str, size: int):
  with open(path, "rb") as f:
    raw = f.read()
  stream = io.BytesIO(raw)

  def next_pickle(storage=lambda pid: _Opaque(pid)):
    start = stream.tell()
    return _Unpickler(stream, storage, path, 0).load(), start, stream.tell()

  def load():
    try:
      magic, _, _ = next_pickle()
    except Exception:  # pylint: disable=broad-except
      magic = None
    if magic != _LEGACY_MAGIC:
      raise UnreadableWeightsError(path, "it is neither a zip archive nor PyTorch's legacy "
                                   "(pre-1.6) format: a truncated file, or not a PyTorch file")
    protocol, _, _ = next_pickle()
    if protocol != _LEGACY_PROTOCOL:
      raise UnreadableWeightsError(path, f"unknown legacy protocol version {protocol!r}")
    sys_info, _, _ = next_pickle()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
      raise UnreadableWeightsError(path, "it was saved on a big-endian machine")
    # First pass: which storages (type, element count) the object needs, and where it ends.
    declared: dict[str, tuple[np.dtype, int, list]] = {}

    def declare(pid):
      dtype, key, numel = _storage_pid(pid, path)
      view = pid[5] if len(pid) > 5 else None
      declared.setdefault(key, (dtype, numel, []))
      if view is not None:
        declared[key][2].append(view)
      return _Opaque(pid)

    _, start, end = next_pickle(declare)
    keys, _, _ = next_pickle()
    if not isinstance(keys, list) or set(map(str, keys)) != set(declared):
      raise UnreadableWeightsError(path, "its list of storages does not match its tensors")
    storages, offset = {}, stream.tell()
    for key in map(str, keys):
      dtype, numel, _ = declared[key]
      if offset + 8 > len(raw):
        raise UnreadableWeightsError(path, f"storage {key} is missing: the file is truncated")
      (stored,) = struct.unpack("<q", raw[offset:offset + 8])
      nbytes = numel * dtype.itemsize
      if stored != numel or offset + 8 + nbytes > len(raw):
        raise UnreadableWeightsError(
            path, f"storage {key} declares {numel} elements and records {stored}, "
            f"{nbytes} bytes, but {max(len(raw) - offset - 8, 0)} are left in the file: it is "
            "truncated or damaged")
      storages[key] = np.frombuffer(raw, dtype=dtype, count=numel, offset=offset + 8)
      offset += 8 + nbytes

    def storage(pid):  # second pass, with the data: a view (old files) is a slice
      _, key, _ = _storage_pid(pid, path)
      view = pid[5] if len(pid) > 5 else None
      if view is None:
        return storages[key]
      _, begin, length = view
      if not (isinstance(begin, int) and isinstance(length, int) and 0 <= begin
              and begin + length <= len(storages[key])):
        raise UnreadableWeightsError(path, f"a view of storage {key} lies outside it")
      return storages[key][begin:begin + length]

    return _unpickle(raw[start:end], path, storage, _EXPANSION * size)

  return _guarded(path, load)
