"""An ``.npz`` file of arrays: ``train_images``, ``train_labels``, ``test_images``,
``test_labels`` (Keras' ``x_train``, ``y_train``, ``x_test``, ``y_test`` also work). Images
``[N, H, W]`` or ``[N, H, W, C]``, uint8 or floats in [0, 1] or [0, 255]; labels integers
``0..C-1``. Object arrays are refused (reading them would need pickle)."""
from __future__ import annotations

import logging
import os

import numpy as np

from starsse_jax import npz_file
from starsse_jax.sources.common import (DatasetError, DatasetNotFoundError, Split, check_labels,
                                        stack_images)

NAMES = {"train": (("train_images", "train_labels"), ("x_train", "y_train")),
         "test": (("test_images", "test_labels"), ("x_test", "y_test"))}


def _as_uint8(images: np.ndarray, where: str) -> np.ndarray:
  """uint8 pixels from uint8, other integers in [0, 255], or floats in [0, 1] or [0, 255]
  (the range assumed is logged); NaN, Inf and anything else are refused."""
  if images.dtype == np.uint8:
    return images
  kind = images.dtype.kind
  if kind not in "fiu":
    raise DatasetError(f"{where}: images have dtype {images.dtype}; give uint8, or floats in "
                       "[0, 1] or [0, 255].")
  if kind == "f":
    finite = np.isfinite(images)
    if not finite.all():
      bad = np.argwhere(~finite)[0]
      raise DatasetError(f"{where}: {int((~finite).sum())} pixel value(s) are NaN or Inf (the "
                         f"first in image {bad[0]}); clean or drop those images.")
  low, high = (images.min(), images.max()) if images.size else (0, 0)
  if kind == "f" and low >= 0 and high <= 1:
    logging.info("%s: float images in [%g, %g]: assumed the range [0, 1].", where, low, high)
    return np.round(images * 255).astype(np.uint8)
  if low < 0 or high > 255:
    raise DatasetError(f"{where}: images have dtype {images.dtype} with values in [{low}, "
                       f"{high}]; give uint8, or floats in [0, 1] or [0, 255].")
  logging.info("%s: %s images in [%g, %g]: assumed the range [0, 255].", where, images.dtype,
               low, high)
  return np.round(images).astype(np.uint8)


def from_arrays(images, labels, stored_size: int = 0, where: str = "arrays") -> Split:
  """A split from arrays: images ``[N, H, W(, C)]`` (uint8, or floats in [0, 1] or [0, 255]),
  integer labels >= 0. A list of images of different sizes needs ``stored_size``."""
  if isinstance(images, (list, tuple)) and len({np.shape(im) for im in images}) > 1:
    images = stack_images([_as_uint8(np.asarray(im), where) for im in images], stored_size, where)
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
    raise DatasetError(f"{where}: images must be [N, H, W] or [N, H, W, C] with one label each; "
                       f"got images {images.shape} and labels {labels.shape}.")
  check_labels(labels, where)
  images = _as_uint8(images, where)
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
