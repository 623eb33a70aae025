"""A TFDS dataset prepared beforehand (array_record), read without TensorFlow and without download.

Prepare it on a machine with internet access: ``tfds build NAME --file_format=array_record
--data_dir=DIR``, copy DIR, and name it ``tfds:NAME`` with ``data.tfds_data_dir=DIR``.
Examples are read in chunks (``__getitems__``), not one by one. A split whose images exceed
``data.host_memory_mb`` is decoded a chunk at a time into a ``.npy`` file in ``data.cache_dir``
once and read from there memory-mapped (``sources.disk``).
"""
from __future__ import annotations

import glob
import hashlib
import os

import numpy as np

from starsse_jax.sources import disk
from starsse_jax.sources.common import (CACHE_DIR, DatasetError, DatasetNotFoundError, Split,
                                        stack_images)

CHUNK = 1024
# Split names tried, in order, for the fine-tuning and the test data.
TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("test", "validation")


def _read_many(source, keys: list[int]) -> list:
  try:
    return source.__getitems__(keys)  # one array_record read for the whole chunk
  except (AttributeError, TypeError):  # sources without it (tfds.testing.mock_data's is unbound)
    return [source[k] for k in keys]


def examples(source, chunk: int = CHUNK):
  """Every example of a random-access ``source``, read ``chunk`` keys at a time."""
  for start in range(0, len(source), chunk):
    keys = list(range(start, min(start + chunk, len(source))))
    if keys:  # array_record rejects an empty read
      yield from _read_many(source, keys)


def _streamed(source, where: str, stored_size: int, cache_dir: str, first) -> Split:
  """The split decoded chunk by chunk into a ``.npy`` file in the cache, then memory-mapped."""
  n = len(source)
  key = hashlib.sha256(repr((where, n, stored_size)).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir or CACHE_DIR, f"tfds-{key}.npy")
  shape = (n,) + first.shape[1:]
  labels = np.zeros(n, np.int32)

  def fill(start: int, stop: int) -> np.ndarray:
    chunk = _read_many(source, list(range(start, stop)))
    labels[start:stop] = [int(ex["label"]) for ex in chunk]
    out = stack_images([np.asarray(ex["image"]) for ex in chunk], stored_size, where)
    if out.shape[1:] != first.shape[1:]:
      raise DatasetError(f"{where}: images have different sizes ({first.shape[1:]} and "
                         f"{out.shape[1:]}); set data.stored_size to store them at one size.")
    return out

  images = disk.open_images(path, shape, where)
  if images is None:
    disk.write(path, shape, fill)
    images = disk.open_images(path, shape, where)
  else:  # the labels only: a few bytes an example
    for start in range(0, n, CHUNK):
      labels[start:start + CHUNK] = [int(ex["label"]) for ex in _read_many(
          source, list(range(start, min(start + CHUNK, n))))]
  return Split(images, labels)


def read_split(name: str, split: str, data_dir: str, stored_size: int = 0,
               host_memory_mb: float = 0, cache_dir: str = "") -> Split:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  where = f"TFDS {name}/{split}"
  if host_memory_mb and len(source):
    first = stack_images([np.asarray(_read_many(source, [0])[0]["image"])], stored_size, where)
    if disk.over_cap(len(source) * first[0].nbytes, host_memory_mb):
      return _streamed(source, f"{where} ({data_dir or 'default'})", stored_size, cache_dir, first)
  images, labels = [], []
  for ex in examples(source):
    images.append(np.asarray(ex["image"]))
    labels.append(int(ex["label"]))
  return Split(stack_images(images, stored_size, where), np.asarray(labels, np.int32))


def _check_prepared(name: str, data_dir: str) -> None:
  """Raises the short message when ``name`` has never been prepared in ``data_dir``."""
  root = os.path.expanduser(data_dir or os.path.join("~", "tensorflow_datasets"))
  if not glob.glob(os.path.join(root, name.split(":")[0], "**", "dataset_info.json"),
                   recursive=True):
    raise DatasetNotFoundError(
        f"TFDS dataset {name!r} is not prepared in data.tfds_data_dir={data_dir!r} (no "
        f"{os.path.join(root, name)}/.../dataset_info.json; nothing is downloaded at run time). "
        f"Prepare it on a machine with internet access with `tfds build {name} "
        "--file_format=array_record --data_dir=DIR`, copy DIR here and set "
        "--config.data.tfds_data_dir=DIR.")


def read(location: str, stored_size: int = 0, data_dir: str = "", host_memory_mb: float = 0,
         cache_dir: str = "", **unused) -> dict[str, Split]:
  """``location`` is ``NAME`` (e.g. ``cifar100``, ``sun397/standard-part1-120k``); the data
  directory comes from ``data.tfds_data_dir`` (``data_dir``)."""
  name = location
  if not name:
    raise ValueError("Name the TFDS dataset: data.target='tfds:NAME', e.g. 'tfds:cifar100'.")
  if data_dir:  # (the default directory is where tfds.testing.mock_data pretends to read)
    _check_prepared(name, data_dir)
  splits = {}
  for split, candidates in (("train", TRAIN_SPLITS), ("test", TEST_SPLITS)):
    errors = []
    for candidate in candidates:
      try:
        splits[split] = read_split(name, candidate, data_dir, stored_size, host_memory_mb,
                                   cache_dir)
        break
      except Exception as e:  # tfds raises several types for "not there"
        errors.append(f"{candidate}: {type(e).__name__}: {str(e)[:300]}")
    if split not in splits:
      _check_prepared(name, data_dir)
      raise DatasetNotFoundError(
          f"TFDS dataset {name!r} ({' / '.join(candidates)} split) could not be read from "
          f"data_dir {data_dir or '(default)'}: {'; '.join(errors)}. Prepare it on a machine "
          f"with internet access with `tfds build {name} --file_format=array_record "
          "--data_dir=DIR`, copy DIR here and set --config.data.tfds_data_dir=DIR.")
  return splits
