"""Fashion-MNIST from its four IDX files (Debian's ``dataset-fashion-mnist`` installs them)."""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from starsse_jax.sources.common import DatasetError, DatasetNotFoundError, Split, stack_images

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FIX = ("Reinstall the file (`apt-get install --reinstall dataset-fashion-mnist` for the Debian "
        "package) or point data.fashion_mnist_dir at an intact copy.")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzip or raw) of unsigned bytes into an array of its declared shape."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (EOFError, OSError, zlib.error) as e:
    raise DatasetError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is truncated "
                       f"or corrupt. {_FIX}") from e
  if len(raw) < 4:
    raise DatasetError(f"{path}: too short to be an IDX file. {_FIX}")
  zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}). {_FIX}")
  shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise DatasetError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but the file "
                       f"holds {body.size}; it is truncated or corrupt. {_FIX}")
  return body.reshape(shape)


def read(directory: str = "", stored_size: int = 0, **unused) -> dict[str, Split]:
  """The train and test splits of Fashion-MNIST from its four IDX files in ``directory``."""
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
    images = read_idx(os.path.join(directory, images_file))
    labels = read_idx(os.path.join(directory, labels_file))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DatasetError(f"Fashion-MNIST {split}: images {images.shape} and labels "
                         f"{labels.shape} do not pair up. {_FIX}")
    images = images[..., None]
    if stored_size:
      images = stack_images(list(images), stored_size, directory)
    splits[split] = Split(images, labels.astype(np.int32))
  return splits
