"""An ``.npz`` file of arrays: ``train_images``, ``train_labels``, ``test_images``,
``test_labels`` (Keras' ``x_train``, ``y_train``, ``x_test``, ``y_test`` also work). Images
uint8 ``[N, H, W]`` or ``[N, H, W, C]``; labels integers ``0..C-1``."""
from __future__ import annotations

import os

import numpy as np

from starsse_jax import npz_file
from starsse_jax.sources.common import DatasetError, DatasetNotFoundError, Split, stack_images

NAMES = {"train": (("train_images", "train_labels"), ("x_train", "y_train")),
         "test": (("test_images", "test_labels"), ("x_test", "y_test"))}


def from_arrays(images, labels, stored_size: int = 0, where: str = "arrays") -> Split:
  """A split from arrays: images ``[N, H, W(, C)]`` (uint8 or floats in [0, 1]), int labels."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim not in (3, 4) or len(images) != len(labels) or labels.ndim != 1:
    raise DatasetError(f"{where}: images must be [N, H, W] or [N, H, W, C] with one label each; "
                       f"got images {images.shape} and labels {labels.shape}.")
  if images.dtype != np.uint8:
    if np.issubdtype(images.dtype, np.floating) and images.size and images.max() <= 1.0:
      images = np.round(images * 255)
    if images.size and (images.min() < 0 or images.max() > 255):
      raise DatasetError(f"{where}: images must be uint8 or floats in [0, 1] (got {images.dtype} "
                         f"in [{images.min()}, {images.max()}]).")
    images = images.astype(np.uint8)
  if not np.issubdtype(labels.dtype, np.integer):
    raise DatasetError(f"{where}: labels must be integers, got {labels.dtype}.")
  if images.ndim == 3:
    images = images[..., None]
  if stored_size:
    images = stack_images(list(images), stored_size, where)
  return Split(images, labels.astype(np.int32))


def read(location: str, stored_size: int = 0, **unused) -> dict[str, Split]:
  if not os.path.isfile(location):
    raise DatasetNotFoundError(f"No .npz file at {location!r}; set data.target='npz:PATH' to a "
                               "file with train_images, train_labels, test_images, test_labels.")
  try:
    arrays = npz_file.load(location)
  except npz_file.NpzError as e:
    raise DatasetError(f"{location}: {e}. Write it again with numpy.savez.") from e
  splits = {}
  for split, options in NAMES.items():
    keys = next((pair for pair in options if all(k in arrays for k in pair)), None)
    if keys is None:
      raise DatasetError(f"{location}: needs arrays {options[0]} (or {options[1]}); it has "
                         f"{sorted(arrays)}.")
    splits[split] = from_arrays(arrays[keys[0]], arrays[keys[1]], stored_size,
                                f"{location} ({split})")
  return splits
