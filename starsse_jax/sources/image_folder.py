"""A folder of images by class: ``ROOT/train/CLASS/*.jpg|png`` and ``ROOT/test/CLASS/*``
(``val`` is accepted for ``test``), as torchvision's ``ImageFolder`` lays them out.

Images are decoded once (threads), converted to RGB and stored at ``stored_size`` (shorter side
resized, centre crop), then cached as an ``.npz`` beside nothing of the user's: in
``data.cache_dir`` (default ``~/.cache/starsse_jax``), keyed by the folder, its file list and
modification times, and the size. Classes are the sorted names of ``train``'s subfolders. Images
above ``data.host_memory_mb`` are decoded a chunk at a time into one ``.npy`` file per split
instead, and read from disk memory-mapped (``sources.disk``).
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from starsse_jax import npz_file
from starsse_jax.sources import disk
from starsse_jax.sources.common import (CACHE_DIR, DatasetError, DatasetNotFoundError, Split,
                                        stack_images, thread_map)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _files(root: str, classes: list[str]) -> tuple[list[str], list[int]]:
  """Image files and their labels; a file of another kind in a class folder is refused by name
  (hidden files such as ``.DS_Store`` are skipped)."""
  files, labels, other = [], [], []
  for label, name in enumerate(classes):
    directory = os.path.join(root, name)
    if not os.path.isdir(directory):
      continue
    for f in sorted(os.listdir(directory)):
      path = os.path.join(directory, f)
      if f.startswith(".") or os.path.isdir(path):
        continue
      if f.lower().endswith(EXTENSIONS):
        files.append(path)
        labels.append(label)
      else:
        other.append(path)
  if other:
    raise DatasetError(f"{root}: {len(other)} file(s) that are not images ({', '.join(EXTENSIONS)})"
                       f": {_names(other)}. Move them out of the image folder.")
  return files, labels


def _names(items: list[str], limit: int = 5) -> str:
  shown = ", ".join(items[:limit])
  return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _decode(path: str) -> np.ndarray | str:
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  if os.path.getsize(path) == 0:
    return f"{path} (empty file)"
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
    why = "truncated" if "truncated" in str(e) else "not a readable image"
    return f"{path} ({why}: {type(e).__name__})"


def _decode_all(files: list[str], stored_size: int, where: str) -> np.ndarray:
  decoded = thread_map(_decode, files)
  bad = [d for d in decoded if isinstance(d, str)]
  if bad:
    raise DatasetError(f"{where}: {len(bad)} image file(s) cannot be decoded: {_names(bad)}. "
                       "Remove or replace them.")
  return stack_images(decoded, stored_size, where)


def _streamed(listing, stored_size: int, cache_dir: str, digest: str, root: str
              ) -> dict[str, Split]:
  """Each split decoded chunk by chunk into ``folder-DIGEST-SPLIT.npy`` once, then memory-mapped."""
  first = _decode_all(listing["train"][0][:1], stored_size, f"{root}/train")
  splits = {}
  for s, (files, labels) in listing.items():
    shape = (len(files),) + first.shape[1:]
    path = os.path.join(cache_dir or CACHE_DIR, f"folder-{digest}-{s}.npy")

    def fill(start, stop, files=files, s=s):
      chunk = _decode_all(files[start:stop], stored_size, f"{root}/{s}")
      if chunk.shape[1:] != first.shape[1:]:
        raise DatasetError(f"{root}/{s}: images have different sizes ({first.shape[1:]} and "
                           f"{chunk.shape[1:]}); set data.stored_size to store them at one size.")
      return chunk

    splits[s] = Split(disk.cached(path, shape, fill, f"{root}/{s}"), np.asarray(labels, np.int32))
  return splits


def read(location: str, stored_size: int = 0, cache_dir: str = "", host_memory_mb: float = 0,
         **unused) -> dict[str, Split]:
  root = os.path.abspath(location)
  train_dir = os.path.join(root, "train")
  test_dir = next((os.path.join(root, d) for d in ("test", "val")
                   if os.path.isdir(os.path.join(root, d))), None)
  if not os.path.isdir(train_dir) or test_dir is None:
    raise DatasetNotFoundError(f"Image folder {root!r} needs subfolders train/CLASS/ and "
                               "test/CLASS/ (or val/CLASS/) holding the images.")
  classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
  if not classes:
    raise DatasetNotFoundError(f"{train_dir} has no class subfolders.")
  extra = sorted(set(d for d in os.listdir(test_dir)
                     if os.path.isdir(os.path.join(test_dir, d))) - set(classes))
  if extra:
    raise DatasetError(f"{test_dir} has classes {extra[:5]} that {train_dir} does not.")
  listing = {s: _files(d, classes) for s, d in (("train", train_dir), ("test", test_dir))}
  for split, (files, _) in listing.items():
    if not files:
      raise DatasetNotFoundError(f"No images ({', '.join(EXTENSIONS)}) under {root}/{split}.")
  digest = hashlib.sha256(repr((root, stored_size, [
      (f, os.path.getmtime(f), os.path.getsize(f)) for s in listing.values() for f in s[0]
  ])).encode()).hexdigest()[:16]
  if host_memory_mb:
    side = stored_size or max(_decode_all(listing["train"][0][:1], 0, root).shape[1:3])
    if disk.over_cap(sum(len(f) for f, _ in listing.values()) * side * side * 3, host_memory_mb):
      return _streamed(listing, stored_size, cache_dir, digest, root)
  cache = os.path.join(cache_dir or CACHE_DIR, f"folder-{digest}.npz")
  if os.path.isfile(cache):
    try:
      arrays = npz_file.load(cache)
      return {s: Split(arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in ("train", "test")}
    except Exception as e:  # a damaged cache is rebuilt
      logging.warning("Image cache %s is unreadable (%s); decoding again.", cache, e)
  splits = {s: Split(_decode_all(files, stored_size, f"{root}/{s}"), np.asarray(labels, np.int32))
            for s, (files, labels) in listing.items()}
  try:
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, **{f"{s}_{k}": v for s, sp in splits.items()
                     for k, v in (("images", sp.images), ("labels", sp.labels))})
    os.replace(tmp, cache)
  except OSError as e:
    logging.warning("Could not cache decoded images in %s (%s).", cache, e)
  return splits
