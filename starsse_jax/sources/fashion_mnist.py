"""Fashion-MNIST from its four IDX files (Debian's ``dataset-fashion-mnist`` installs them).

A split whose images exceed ``data.host_memory_mb`` is decompressed once, chunk by chunk, into a
``.npy`` file in ``data.cache_dir`` and read from there memory-mapped (``sources.disk``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib

import numpy as np

from starsse_jax.sources import disk
from starsse_jax.sources.common import (CACHE_DIR, DatasetError, DatasetNotFoundError, Split,
                                        stack_images)

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FIX = ("Reinstall the file (`apt-get install --reinstall dataset-fashion-mnist` for the Debian "
        "package) or point data.fashion_mnist_dir at an intact copy.")


def _header(raw: bytes, path: str) -> tuple[int, ...]:
  if len(raw) < 4:
    raise DatasetError(f"{path}: too short to be an IDX file. {_FIX}")
  zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}). {_FIX}")
  if len(raw) < 4 + 4 * ndim:
    raise DatasetError(f"{path}: too short to be an IDX file. {_FIX}")
  return struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])


def _unreadable(path: str, e: Exception) -> DatasetError:
  return DatasetError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is truncated "
                      f"or corrupt. {_FIX}")


def _opener(path: str):
  return gzip.open if path.endswith(".gz") else open


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzip or raw) of unsigned bytes into an array of its declared shape."""
  try:
    with _opener(path)(path, "rb") as f:
      raw = f.read()
  except (EOFError, OSError, zlib.error) as e:
    raise _unreadable(path, e) from e
  shape = _header(raw, path)
  body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(shape))
  if body.size != int(np.prod(shape)):
    raise DatasetError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but the file "
                       f"holds {body.size}; it is truncated or corrupt. {_FIX}")
  return body.reshape(shape)


def idx_shape(path: str) -> tuple[int, ...]:
  """The shape an IDX file declares (its header only is read)."""
  try:
    with _opener(path)(path, "rb") as f:
      head = f.read(4)
      head += f.read(4 * head[3]) if len(head) == 4 else b""
  except (EOFError, OSError, zlib.error) as e:
    raise _unreadable(path, e) from e
  return _header(head, path)


def stream_idx_images(path: str, stored_size: int, cache_dir: str) -> disk.DiskImages:
  """The images of an IDX file ``[N, H, W]`` as ``[N, S, S, 1]`` on disk (S: ``stored_size``, or
  the stored size), decompressed into the cache once and memory-mapped."""
  n, h, w = idx_shape(path)
  size = (stored_size, stored_size) if stored_size else (h, w)
  stat = os.stat(path)
  key = hashlib.sha256(repr((os.path.abspath(path), stat.st_size, stat.st_mtime, stored_size)
                            ).encode()).hexdigest()[:16]
  target = os.path.join(cache_dir or CACHE_DIR, f"idx-{key}.npy")
  shape = (n,) + size + (1,)
  images = disk.open_images(target, shape, path)
  if images is not None:
    return images
  try:
    with _opener(path)(path, "rb") as f:
      f.read(4 + 4 * 3)

      def fill(start: int, stop: int) -> np.ndarray:
        raw = f.read((stop - start) * h * w)
        if len(raw) != (stop - start) * h * w:
          raise DatasetError(f"{path}: header says {(n, h, w)} but the file ends after image "
                             f"{start + len(raw) // (h * w)}; it is truncated or corrupt. {_FIX}")
        chunk = np.frombuffer(raw, np.uint8).reshape(stop - start, h, w, 1)
        return stack_images(list(chunk), stored_size, path) if stored_size else chunk

      disk.write(target, shape, fill)
  except (EOFError, OSError, zlib.error) as e:
    raise _unreadable(path, e) from e
  return disk.open_images(target, shape, path)


def read(directory: str = "", stored_size: int = 0, host_memory_mb: float = 0, cache_dir: str = "",
         **unused) -> dict[str, Split]:
  """The train and test splits of Fashion-MNIST from its four IDX files in ``directory``; a split
  whose images exceed ``host_memory_mb`` (0: no limit) is streamed from ``cache_dir``."""
  directory = directory or DEFAULT_DIR
  missing = [name for pair in FILES.values() for name in pair
             if not os.path.isfile(os.path.join(directory, name))]
  if missing:
    raise DatasetNotFoundError(
        f"Fashion-MNIST files {missing} not found in {directory!r}. Install them with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files go to "
        f"{DEFAULT_DIR}) or set --config.data.fashion_mnist_dir to a directory "
        "holding the four *-ubyte.gz files.")
  splits = {}
  for split, (images_file, labels_file) in FILES.items():
    images_path = os.path.join(directory, images_file)
    shape = idx_shape(images_path)
    labels = read_idx(os.path.join(directory, labels_file))
    if len(shape) != 3 or labels.ndim != 1 or shape[0] != len(labels):
      raise DatasetError(f"Fashion-MNIST {split}: images {shape} and labels "
                         f"{labels.shape} do not pair up. {_FIX}")
    side = stored_size or shape[1]
    if disk.over_cap(shape[0] * side * side, host_memory_mb):
      images = stream_idx_images(images_path, stored_size, cache_dir)
    else:
      images = read_idx(images_path)[..., None]
      if stored_size:
        images = stack_images(list(images), stored_size, directory)
    splits[split] = Split(images, labels.astype(np.int32))
  return splits
