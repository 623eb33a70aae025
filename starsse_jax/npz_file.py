"""``.npz`` files from outside, read with numpy after checking what every member declares.

``np.load`` (always with ``allow_pickle=False`` here) allocates each array at the shape its
``.npy`` header declares before reading the data, so a file that lies about its shapes costs
that allocation first. ``load`` reads every header, refuses object arrays (they need pickle),
shapes that the member's bytes cannot hold and members that claim more bytes than the archive can
hold, and only then lets numpy read the file.
"""
from __future__ import annotations

import math
import os
import zipfile

import numpy as np

# Deflate cannot compress by more than about 1032:1; a member that claims more lies about its size.
MAX_DEFLATE_RATIO = 1100


def possible_size(info: zipfile.ZipInfo, file_size: int) -> int:
  """The most bytes a zip member of a ``file_size``-byte archive can really hold uncompressed."""
  if info.compress_type == zipfile.ZIP_STORED:
    return file_size
  return info.compress_size * MAX_DEFLATE_RATIO


class NpzError(ValueError):
  """The file is not a readable ``.npz`` of plain arrays; the message says why."""


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int) -> None:
  name = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else info.filename
  if info.file_size > possible_size(info, file_size):
    raise NpzError(f"array {name!r} claims {info.file_size} bytes in a file of {file_size}: "
                   "the file lies about its size (damaged or crafted)")
  with archive.open(info) as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
      shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    header = f.tell()
  if dtype.hasobject:
    raise NpzError(f"array {name!r} holds Python objects (dtype {dtype}), which only pickle can "
                   "read and this library never unpickles; save plain numeric arrays")
  need = math.prod(shape) * dtype.itemsize
  if header + need > info.file_size:
    raise NpzError(f"array {name!r} declares shape {shape} of {dtype} ({need} bytes) but holds "
                   f"{max(info.file_size - header, 0)} bytes: the file is truncated or damaged")


def load(path: str) -> dict[str, np.ndarray]:
  """Every array of the ``.npz`` at ``path``, in file order. Raises ``NpzError``."""
  file_size = os.path.getsize(path)
  try:
    with zipfile.ZipFile(path) as archive:
      for info in archive.infolist():
        _check_member(archive, info, file_size)
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except NpzError:
    raise
  except Exception as e:  # zipfile, zlib and numpy raise several types for damaged files
    raise NpzError(f"not a readable .npz ({type(e).__name__}: {str(e)[:200]}); the file is "
                   "truncated or not an .npz") from e
