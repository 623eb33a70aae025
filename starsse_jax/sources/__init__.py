"""Data sources: each reads one kind of labelled image data into uint8 ``train``/``test`` splits.

A source is a function ``read(location, stored_size, **options) -> {'train': Split, 'test': Split}``
registered in ``SOURCES`` under its name; ``data.target`` / ``data.name`` select one as
``NAME`` or ``NAME:LOCATION`` (e.g. ``tfds:cifar100``, ``folder:/data/pets``, ``npz:arrays.npz``).
``stored_size`` > 0 resizes every image (shorter side, then centre crop) to that square size once,
when read; 0 keeps the native size, which then must be the same for all images.
"""
from __future__ import annotations

from typing import Callable

from starsse_jax.sources import disk, fashion_mnist, image_folder, npz_arrays, tfds_source
from starsse_jax.sources.common import DatasetError, DatasetNotFoundError, Split, check_split

SOURCES: dict[str, Callable[..., dict[str, Split]]] = {
    "fashion_mnist": fashion_mnist.read,
    "tfds": tfds_source.read,
    "folder": image_folder.read,
    "npz": npz_arrays.read,
}

# Sources that read a dataset above data.host_memory_mb from disk a batch at a time.
STREAMING = ("fashion_mnist", "folder", "tfds")


def parse(spec: str, default_location: str = "") -> tuple[str, str]:
  """``'NAME:LOCATION'`` -> (NAME, LOCATION); a bare name takes ``default_location``."""
  name, _, location = spec.partition(":")
  if name not in SOURCES:
    raise ValueError(f"Unknown data source {name!r} in {spec!r}; use one of "
                     f"{sorted(SOURCES)} (e.g. 'tfds:cifar100', 'folder:/data/pets', "
                     "'npz:arrays.npz').")
  return name, location or default_location


def read(spec: str, stored_size: int = 0, default_location: str = "", **options
         ) -> dict[str, Split]:
  """Reads the source named by ``spec``; ``options`` (``data_dir`` for TFDS, ``cache_dir`` for
  image folders and streamed data, ``host_memory_mb``) go to the sources that use them. A split
  above ``host_memory_mb`` comes back as ``disk.DiskImages`` from a ``STREAMING`` source; any
  other source refuses it."""
  name, location = parse(spec, default_location)
  splits = SOURCES[name](location, stored_size, **options)
  for split_name, split in splits.items():
    check_split(split, f"{spec} ({split_name})")
    cap = options.get("host_memory_mb", 0)
    if not isinstance(split.images, disk.DiskImages) and disk.over_cap(split.images.nbytes, cap):
      raise DatasetError(
          f"{spec} ({split_name}): {split.images.nbytes / 2**20:.0f} MB of images, above "
          f"data.host_memory_mb={cap}, and the {name!r} source reads into memory; the "
          f"{', '.join(STREAMING)} sources stream from disk (e.g. save the images as an image "
          "folder), or raise data.host_memory_mb.")
  return splits


__all__ = ["SOURCES", "Split", "DatasetError", "DatasetNotFoundError", "parse", "read"]
