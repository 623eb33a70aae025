"""Images that stay on disk: a memory-mapped ``.npy`` file, read a batch at a time.

A dataset above ``data.host_memory_mb`` is written once, chunk by chunk, into an uncompressed
``.npy`` file in ``data.cache_dir`` (``write``) and opened memory-mapped (``open_images``); the
splits and subsets cut from it (``take``) are index views, so no step of loading, splitting or
training holds more than the rows it reads. Training gathers each step's rows on the host
(``data.placement='host'``), evaluation reads its batches in order. ``.npy`` rather than
array_record: numpy reads it with a memory map and no new dependency, and a row of a fixed-size
uint8 image is a fixed offset, which is all random access needs.
"""
from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator

import numpy as np

from starsse_jax.sources.common import DatasetError

CHUNK_ROWS = 4096  # rows decoded, written or read at a time when a whole split is walked


class InMemoryRequired(DatasetError):
  """An operation would have loaded a streamed dataset whole into host memory."""


class DiskImages:
  """uint8 images ``[N, H, W, C]``: rows ``rows`` of a memory-mapped array, channels repeated
  ``repeat`` times (grey images for a colour network), read when indexed.

  Indexing with an integer, a slice, integer indices or a boolean mask returns a numpy array of
  those rows only; ``take`` returns another view. Converting the whole view to an array raises
  ``InMemoryRequired``: a dataset is on disk because it is larger than it may be in memory.
  """

  def __init__(self, base: np.ndarray, rows: np.ndarray | None = None, repeat: int = 1,
               where: str = ""):
    self.base, self.rows, self.repeat, self.where = base, rows, repeat, where

  @property
  def shape(self) -> tuple[int, ...]:
    n = len(self.base) if self.rows is None else len(self.rows)
    h, w, c = self.base.shape[1:]
    return (n, h, w, c * self.repeat)

  dtype = np.dtype(np.uint8)
  ndim = 4

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return self.shape[0]

  def _positions(self, key) -> np.ndarray | slice:
    if isinstance(key, slice):
      return key if self.rows is None else self.rows[key]
    key = np.asarray(key)
    if key.dtype == bool:
      key = np.flatnonzero(key)
    if key.dtype.kind not in "iu":
      raise TypeError(f"DiskImages rows are chosen by integers, slices or masks, not {key.dtype}.")
    return key if self.rows is None else self.rows[key]

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, (int, np.integer)):
      return self[np.asarray([key])][0]
    if isinstance(key, tuple):
      raise TypeError("DiskImages are indexed by rows only; index the returned array further.")
    out = np.asarray(self.base[self._positions(key)])  # reads only these rows from the file
    return np.repeat(out, self.repeat, axis=-1) if self.repeat > 1 else out

  def take(self, key) -> "DiskImages":
    """A view of the rows ``key`` selects (nothing is read)."""
    positions = self._positions(key)
    if isinstance(positions, slice):
      positions = np.arange(len(self.base))[positions]
    return DiskImages(self.base, np.asarray(positions, np.int64), self.repeat, self.where)

  def repeat_channels(self, times: int) -> "DiskImages":
    return DiskImages(self.base, self.rows, self.repeat * times, self.where)

  def __iter__(self) -> Iterator[np.ndarray]:
    for chunk in chunks(self):
      yield from chunk

  def __array__(self, dtype=None, copy=None):
    raise InMemoryRequired(
        f"{self.where or 'A dataset'} ({self.nbytes / 2**20:.0f} MB of images) is read from disk "
        "because it is larger than data.host_memory_mb, and this operation needs it whole in "
        "memory; raise data.host_memory_mb (0 = no limit) to use it.")


def take_rows(images, key):
  """``images[key]``: a view for images on disk, a copy for arrays in memory."""
  return images.take(key) if isinstance(images, DiskImages) else images[key]


def repeat_channels(images, times: int):
  return (images.repeat_channels(times) if isinstance(images, DiskImages)
          else np.repeat(images, times, axis=-1))


def chunks(images, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
  """The rows of ``images`` (on disk or in memory) a chunk at a time."""
  for start in range(0, len(images), rows):
    yield images[start:start + rows]


def write(path: str, shape: tuple[int, ...], fill: Callable[[int, int], np.ndarray]) -> None:
  """Writes uint8 ``[N, ...]`` of ``shape`` to the ``.npy`` file ``path``, ``fill(start, stop)``
  giving rows ``start..stop-1``; atomically (a crash leaves no half-written file under ``path``)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{uuid.uuid4().hex}.npy"  # unique across the processes of several hosts
  out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
  try:
    for start in range(0, shape[0], CHUNK_ROWS):
      stop = min(start + CHUNK_ROWS, shape[0])
      out[start:stop] = fill(start, stop)
    out.flush()
    del out
    os.replace(tmp, path)
  except BaseException:
    del out
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def open_images(path: str, shape: tuple[int, ...], where: str) -> DiskImages | None:
  """The images of ``path`` memory-mapped, or None when the file is missing or is not uint8 of
  ``shape`` (truncated, or written for other settings): the caller writes it again."""
  if not os.path.isfile(path):
    return None
  try:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError):
    return None
  if array.dtype != np.uint8 or tuple(array.shape) != tuple(shape):
    return None
  return DiskImages(array, where=where)


def cached(path: str, shape: tuple[int, ...], fill: Callable[[int, int], np.ndarray],
           where: str) -> DiskImages:
  """The images of ``path``, written first (``write(path, shape, fill)``) when the file is
  missing, cut short or of another shape."""
  images = open_images(path, shape, where)
  if images is None:
    write(path, shape, fill)
    images = open_images(path, shape, where)
  return images


def over_cap(nbytes: int, host_memory_mb: float) -> bool:
  """Whether ``nbytes`` of images exceed the cap (``0``: no cap)."""
  return bool(host_memory_mb) and nbytes > host_memory_mb * 2**20
