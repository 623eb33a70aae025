"""What every data source shares: the split type, errors, and fixed-size storage of images."""
from __future__ import annotations

import concurrent.futures
import os
from typing import NamedTuple

import numpy as np

# Decoded image folders and datasets streamed from disk (data.cache_dir overrides it).
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "starsse_jax")


class Split(NamedTuple):
  images: np.ndarray  # uint8 [N, H, W, C]; or sources.disk.DiskImages for data read from disk
  labels: np.ndarray  # int32 [N]

  def __len__(self):
    return len(self.labels)


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not where the config says; the message says how to get it."""


class DatasetError(ValueError):
  """A dataset is there but cannot be used (truncated, unreadable, inconsistent); the message
  names the file and the fix."""


def check_labels(labels: np.ndarray, where: str) -> None:
  """Labels must be integers >= 0 (class indices); a bound above is the data's own class count."""
  if labels.dtype.kind not in "iu":
    raise DatasetError(f"{where}: labels have dtype {labels.dtype}; they must be integer class "
                       "indices 0..C-1.")
  if labels.size and labels.min() < 0:
    raise DatasetError(f"{where}: {int((labels < 0).sum())} label(s) are negative (e.g. "
                       f"{int(labels.min())}); labels must be class indices 0..C-1.")
  if labels.size and labels.max() > np.iinfo(np.int32).max:
    raise DatasetError(f"{where}: label {int(labels.max())} is out of range; labels must be class "
                       "indices 0..C-1.")


def check_split(split: "Split", where: str) -> None:
  """What every source must deliver: uint8 images ``[N, H, W, C]``, one integer label each."""
  images, labels = split.images, np.asarray(split.labels)
  if images.dtype != np.uint8 or images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
    raise DatasetError(f"{where}: expected uint8 images [N, H, W, C] with one label each, got "
                       f"{images.dtype} images {images.shape} and labels {labels.shape}.")
  check_labels(labels, where)


def thread_map(fn, items) -> list:
  """``[fn(x) for x in items]`` on threads: PIL releases the GIL while decoding and resizing."""
  with concurrent.futures.ThreadPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as pool:
    return list(pool.map(fn, items))


def fit_size(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 ``[H, W, C]`` -> ``[size, size, C]``: shorter side resized to ``size`` (bilinear,
  antialiased), then the centre square cropped (torchvision's ``Resize`` + ``CenterCrop``)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  h, w, c = image.shape
  if (h, w) == (size, size):
    return image
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  pil = Image.fromarray(image[..., 0] if c == 1 else image)
  resized = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
  top, left = (nh - size) // 2, (nw - size) // 2
  out = resized[top:top + size, left:left + size]
  return out[..., None] if out.ndim == 2 else out


def stack_images(images: list[np.ndarray], stored_size: int, where: str) -> np.ndarray:
  """One uint8 ``[N, H, W, C]`` array of ``images`` (each ``[H, W]`` or ``[H, W, C]``), resized
  to ``stored_size`` when it is > 0; otherwise all images must share one size."""
  images = [im[..., None] if im.ndim == 2 else im for im in images]
  if stored_size:
    images = thread_map(lambda im: fit_size(np.asarray(im, np.uint8), stored_size), images)
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise DatasetError(f"{where}: images have different sizes ({sorted(shapes)[:3]}...); set "
                       "data.stored_size (e.g. 256, or 32 for small images) to store them at one "
                       "size.")
  return np.stack(images).astype(np.uint8) if images else np.zeros((0, 1, 1, 1), np.uint8)
