"""Datasets for the transfer setting, held on the device and augmented there.

A *transfer split* cuts one labelled image dataset by class: the source classes are the
pre-training task, the target classes the fine-tuning task, from whose training images a small
labelled set and a held-out validation slice are drawn; the target test set is complete.

Sources of images:
- ``fashion_mnist``: the IDX files of Fashion-MNIST (the Debian package ``dataset-fashion-mnist``
  installs them; any directory with the four ``*-ubyte.gz`` files works). Runs offline.
- any other name: a TFDS dataset read through ``tfds.data_source`` from ``tfds_data_dir``
  (already prepared in ``array_record`` format; nothing is downloaded at run time).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not where the config says; the message says how to get it."""


class Split(NamedTuple):
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class TransferData:
  source_train: Split
  target_train: Split
  target_val: Split
  target_test: Split
  num_source_classes: int
  num_target_classes: int
  mean: np.ndarray  # per-channel, over source training images, in [0, 1] units
  std: np.ndarray

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.target_test.images.shape[1:])


# ---------------------------------------------------------------------------- reading


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzip or raw) of unsigned bytes into an array of its declared shape."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4:
    raise ValueError(f"{path}: too short to be an IDX file.")
  zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}).")
  shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but the file "
                     f"holds {body.size}; it is truncated or corrupt.")
  return body.reshape(shape)


def load_fashion_mnist(directory: str) -> dict[str, Split]:
  """The train and test splits of Fashion-MNIST from its four IDX files."""
  missing = [name for pair in FASHION_MNIST_FILES.values() for name in pair
             if not os.path.isfile(os.path.join(directory, name))]
  if missing:
    raise DatasetNotFoundError(
        f"Fashion-MNIST files {missing} not found in {directory!r}. Install them with "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files go to "
        "/usr/share/datasets/fashion-mnist) or set --config.data.fashion_mnist_dir to a directory "
        "holding the four *-ubyte.gz files.")
  splits = {}
  for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
    images = read_idx(os.path.join(directory, images_file))
    labels = read_idx(os.path.join(directory, labels_file))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise ValueError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} "
                       "do not pair up.")
    splits[split] = Split(images[..., None], labels.astype(np.int32))
  return splits


def load_tfds(name: str, data_dir: str | None) -> dict[str, Split]:
  """The train and test splits of a prepared TFDS dataset, read without TensorFlow."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  splits = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
      examples = [source[i] for i in range(len(source))]
    except Exception as e:  # tfds raises several types for "not there"
      raise DatasetNotFoundError(
          f"TFDS dataset {name!r} (split {split!r}) could not be read from data_dir "
          f"{data_dir or '(default)'}: {type(e).__name__}: {e}. Prepare it on a machine with "
          f"internet access with `tfds build {name} --file_format=array_record "
          "--data_dir=DIR`, copy DIR here and set --config.data.tfds_data_dir=DIR.") from e
    images = np.stack([np.asarray(ex["image"]) for ex in examples]).astype(np.uint8)
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int32)
    if images.ndim == 3:
      images = images[..., None]
    splits[split] = Split(images, labels)
  return splits


def load_dataset(data_config) -> dict[str, Split]:
  if data_config.name == "fashion_mnist":
    return load_fashion_mnist(data_config.fashion_mnist_dir)
  return load_tfds(data_config.name, data_config.tfds_data_dir)


# ---------------------------------------------------------------------------- splitting


def _select(split: Split, classes) -> Split:
  """Keeps images of ``classes`` and relabels them 0..len(classes)-1 in the given order."""
  classes = np.asarray(classes)
  keep = np.isin(split.labels, classes)
  relabel = np.full(int(max(split.labels.max(), classes.max())) + 1, -1, dtype=np.int32)
  relabel[classes] = np.arange(len(classes), dtype=np.int32)
  return Split(split.images[keep], relabel[split.labels[keep]])


def _per_class(split: Split, counts: list[int], rng: np.random.Generator) -> list[Split]:
  """Disjoint class-balanced subsets of ``split``, ``counts[i]`` images per class each."""
  picks = [[] for _ in counts]
  for c in np.unique(split.labels):
    idx = rng.permutation(np.flatnonzero(split.labels == c))
    if len(idx) < sum(counts):
      raise ValueError(f"Class {c} has {len(idx)} training images; {sum(counts)} requested "
                       f"({counts}). Lower data.target_train_per_class / target_val_per_class.")
    start = 0
    for i, n in enumerate(counts):
      picks[i].append(idx[start:start + n])
      start += n
  indices = [np.sort(np.concatenate(p)) for p in picks]
  return [Split(split.images[i], split.labels[i]) for i in indices]


def check_split(split: Split, num_classes: int, what: str) -> None:
  """Rejects images that are not uint8 [N, H, W, C] and labels outside ``0..num_classes-1``."""
  if split.images.dtype != np.uint8 or split.images.ndim != 4:
    raise ValueError(f"{what}: images must be uint8 [N, H, W, C], got {split.images.dtype} "
                     f"{split.images.shape}.")
  if len(split) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
    raise ValueError(f"{what}: labels must lie in [0, {num_classes}), got "
                     f"[{split.labels.min()}, {split.labels.max()}].")


def transfer_split(splits: dict[str, Split], data_config, seed: int) -> TransferData:
  source_classes = list(data_config.source_classes)
  target_classes = list(data_config.target_classes)
  if set(source_classes) & set(target_classes):
    raise ValueError(f"Source classes {source_classes} and target classes {target_classes} "
                     "overlap; the transfer split needs disjoint tasks.")
  num_labels = int(splits["train"].labels.max()) + 1
  bad = [c for c in source_classes + target_classes if not 0 <= c < num_labels]
  if bad:
    raise ValueError(f"Classes {bad} do not exist in {data_config.name!r} (labels 0..{num_labels - 1}).")
  rng = np.random.default_rng(seed)
  source_train = _select(splits["train"], source_classes)
  target_train, target_val = _per_class(
      _select(splits["train"], target_classes),
      [data_config.target_train_per_class, data_config.target_val_per_class], rng)
  target_test = _select(splits["test"], target_classes)
  if data_config.get("target_test_per_class", 0):  # a fixed, seeded subset of the test split
    target_test, = _per_class(target_test, [data_config.target_test_per_class],
                              np.random.default_rng(seed + 1))
  pixels = source_train.images.reshape(-1, source_train.images.shape[-1]).astype(np.float64) / 255
  data = TransferData(source_train, target_train, target_val, target_test,
                      len(source_classes), len(target_classes),
                      mean=pixels.mean(0).astype(np.float32),
                      std=np.maximum(pixels.std(0), 1e-3).astype(np.float32))
  check_split(data.source_train, data.num_source_classes, "source train")
  for name in ("target_train", "target_val", "target_test"):
    check_split(getattr(data, name), data.num_target_classes, name.replace("_", " "))
  return data


def load_transfer_data(config) -> TransferData:
  return transfer_split(load_dataset(config.data), config.data, config.seed)


# ---------------------------------------------------------------------------- on device


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32, standardised per channel."""
  return (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)


def augment_params(rng: jax.Array, n: int, padding: int, flip: bool, image_hw=None,
                   image_size: int = 0) -> dict[str, jax.Array]:
  """Random augmentation of ``n`` images: flip flags, and crop offsets (``padding`` pixels of
  zero padding) or, when ``image_size`` is set, random-resized-crop boxes in ``image_hw``."""
  crop_key, flip_key = jax.random.split(rng)
  params = {"flips": jax.random.bernoulli(flip_key, 0.5, (n,)) if flip else jnp.zeros(n, bool)}
  if image_size:
    params["boxes"] = random_resized_crop_params(crop_key, n, *image_hw)
  else:
    params["offsets"] = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
  return params


def apply_augment(images: jax.Array, params: dict[str, jax.Array], padding: int,
                  image_size: int = 0) -> jax.Array:
  """Crops (padded crop, or random-resized crop to ``image_size``) and flips where flagged."""
  if image_size:
    images = crop_and_resize(images, params["boxes"], image_size)
  elif padding > 0:
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    images = jax.vmap(crop)(padded, params["offsets"])
  return jnp.where(params["flips"][:, None, None, None], images[:, :, ::-1, :], images)


def augment(rng: jax.Array, images: jax.Array, padding: int, flip: bool,
            image_size: int = 0) -> jax.Array:
  """Training view of a batch: random crop (padded, or resized to ``image_size``) and flip."""
  params = augment_params(rng, images.shape[0], padding, flip, images.shape[1:3], image_size)
  return apply_augment(images, params, padding, image_size)


def eval_view(images: jax.Array, image_size: int = 0) -> jax.Array:
  """Evaluation view of a batch: unchanged, or centre-cropped and resized to ``image_size``."""
  return center_resize(images, image_size) if image_size else images


def random_resized_crop_params(rng: jax.Array, n: int, height: int, width: int,
                               scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> jax.Array:
  """Boxes ``[n, 4]`` = (top, left, height, width) as torchvision's ``RandomResizedCrop`` draws.

  Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; where the box would
  not fit, its sides are clipped to the image (torchvision retries, then falls back to a centre
  crop; clipping keeps the draw a single vectorised step).
  """
  k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
  area = jax.random.uniform(k_area, (n,), minval=scale[0], maxval=scale[1]) * height * width
  aspect = jnp.exp(jax.random.uniform(k_ratio, (n,), minval=np.log(ratio[0]),
                                      maxval=np.log(ratio[1])))
  w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
  h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
  top = jax.random.uniform(k_top, (n,)) * (height - h)
  left = jax.random.uniform(k_left, (n,)) * (width - w)
  return jnp.stack([top, left, h, w], axis=-1)


def crop_and_resize(images: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
  """Bilinear resize of each image's box to ``size x size`` (float32, pixel values kept)."""

  def one(image, box):
    top, left, h, w = box[0], box[1], box[2], box[3]
    scale = jnp.stack([size / h, size / w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image.astype(jnp.float32), (size, size, image.shape[-1]),
                                         (0, 1), scale, translation, method="linear")

  return jax.vmap(one)(images, boxes)


def center_resize(images: jax.Array, size: int, crop_fraction: float = 0.875) -> jax.Array:
  """Evaluation view: the central ``crop_fraction`` of each image resized to ``size`` (the
  'resize to 256, centre-crop 224' of ImageNet evaluation is ``crop_fraction = 224 / 256``)."""
  n, height, width, _ = images.shape
  h, w = height * crop_fraction, width * crop_fraction
  box = jnp.asarray([(height - h) / 2, (width - w) / 2, h, w], jnp.float32)
  return crop_and_resize(images, jnp.broadcast_to(box, (n, 4)), size)
