"""The data of a transfer run, on the host: the target splits, their validation slice, the OOD set.

The device-side views of the images (augmentation, normalisation, evaluation resizing) live in
``augment``.

Two ways to name the fine-tuning data (``data.target``):
- ``'split'`` (default): a *transfer split* of one labelled dataset (``data.name``: the embedded
  Fashion-MNIST, or a source such as ``tfds:cifar100``) cut by class: the source classes are the
  pre-training task, the target classes the fine-tuning task, from whose training images a small
  labelled set and a held-out validation slice are drawn; the target test set is complete.
- a whole dataset, for fine-tuning a checkpoint pre-trained elsewhere (``pretrain.checkpoint``):
  ``tfds:NAME``, ``folder:PATH``, ``npz:PATH`` or ``fashion_mnist`` (``starsse_jax.sources``),
  or arrays in a notebook (``from_arrays``). All its classes are the task; the validation slice
  is carved from its training split (seeded, class-balanced), the test set is its test split.

With a pre-trained checkpoint the inputs are normalised with the checkpoint's statistics
(``pretrain.input_mean`` / ``input_std``, ImageNet's by default) and grey images get three
channels; no source data is read.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from starsse_jax import sources
from starsse_jax.sources import disk
from starsse_jax.sources.common import DatasetError, DatasetNotFoundError, Split, stack_images
from starsse_jax.sources.fashion_mnist import FILES as FASHION_MNIST_FILES, read_idx
from starsse_jax.sources.npz_arrays import from_arrays as split_from_arrays

__all__ = ["Split", "TransferData", "DatasetError", "DatasetNotFoundError", "read_idx",
           "FASHION_MNIST_FILES", "load_fashion_mnist", "load_dataset", "transfer_split",
           "target_split", "hold_out", "image_statistics", "from_arrays", "load_transfer_data", "check_split"]


@dataclasses.dataclass
class TransferData:
  source_train: Split | None  # None when the pre-trained network comes from a checkpoint
  target_train: Split
  target_val: Split
  target_test: Split
  num_source_classes: int
  num_target_classes: int
  mean: np.ndarray  # per-channel input normalisation, in [0, 1] units
  std: np.ndarray
  ood: Split | None = None  # out-of-distribution test images (labels unused), or None
  ood_name: str = ""

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.target_test.images.shape[1:])


def load_fashion_mnist(directory: str) -> dict[str, Split]:
  return sources.read("fashion_mnist", default_location=directory)


def load_dataset(data_config, spec: str | None = None) -> dict[str, Split]:
  """The ``train``/``test`` splits of ``spec`` (default ``data.name``)."""
  spec = spec or data_config.name
  name = spec.partition(":")[0]
  if name not in sources.SOURCES:  # a bare TFDS name, as data.name has always accepted
    spec = f"tfds:{spec}"
  return sources.read(spec, data_config.get("stored_size", 0),
                      default_location=data_config.fashion_mnist_dir,
                      data_dir=data_config.tfds_data_dir, cache_dir=data_config.get("cache_dir",
                                                                                    ""),
                      host_memory_mb=data_config.get("host_memory_mb", 0))


# ---------------------------------------------------------------------------- splitting


def _select(split: Split, classes) -> Split:
  """Keeps images of ``classes`` and relabels them 0..len(classes)-1 in the given order."""
  classes = np.asarray(classes)
  keep = np.isin(split.labels, classes)
  relabel = np.full(int(max(split.labels.max(), classes.max())) + 1, -1, dtype=np.int32)
  relabel[classes] = np.arange(len(classes), dtype=np.int32)
  return Split(disk.take_rows(split.images, keep), relabel[split.labels[keep]])


def _per_class(split: Split, counts: list[int], rng: np.random.Generator,
               what: str = "training", fields: str = "data.target_train_per_class / "
               "data.target_val_per_class") -> list[Split]:
  """Disjoint class-balanced subsets of ``split``, ``counts[i]`` images per class each; a count
  of 0 in the last place takes all the images left."""
  picks = [[] for _ in counts]
  for c in np.unique(split.labels):
    idx = rng.permutation(np.flatnonzero(split.labels == c))
    need = sum(counts)
    if len(idx) < need or (counts[-1] == 0 and len(idx) <= need):
      raise DatasetError(
          f"Class {c} has {len(idx)} {what} image(s) but the config asks for {need} per class "
          f"({' + '.join(map(str, counts))}{', plus at least one to train on' if counts[-1] == 0 else ''}"
          f"); lower {fields}.")
    start = 0
    for i, n in enumerate(counts):
      n = n or len(idx) - start
      picks[i].append(idx[start:start + n])
      start += n
  indices = [np.sort(np.concatenate(p)) for p in picks]
  return [Split(disk.take_rows(split.images, i), split.labels[i]) for i in indices]


def _by_fraction(split: Split, fraction: float, floor: int,
                 rng: np.random.Generator) -> list[Split]:
  """(validation, training): of each class's n images, ``round(fraction * n)`` but at least
  ``floor`` (and at most n - 1) held out for validation, chosen by ``rng``; the rest train."""
  val, rest = [], []
  for c in np.unique(split.labels):
    idx = rng.permutation(np.flatnonzero(split.labels == c))
    if len(idx) < 2:
      raise DatasetError(
          f"Class {c} has {len(idx)} training image(s): it cannot give one validation image and "
          "keep one to train on. Add images of that class or drop it from the data.")
    n_val = min(max(int(round(fraction * len(idx))), floor, 1), len(idx) - 1)
    val.append(idx[:n_val])
    rest.append(idx[n_val:])
  return [Split(disk.take_rows(split.images, i), split.labels[i])
          for i in (np.sort(np.concatenate(val)), np.sort(np.concatenate(rest)))]


def class_counts(data: "TransferData") -> dict[str, list[int]]:
  """Images per target class in each split (``train``, ``val``, ``test``)."""
  count = lambda s: np.bincount(s.labels, minlength=data.num_target_classes).tolist()
  return {"train": count(data.target_train), "val": count(data.target_val),
          "test": count(data.target_test)}


def imbalance_line(counts: dict[str, list[int]]) -> str:
  """One log line: the range of images per class of each split, and the largest over the
  smallest (the imbalance ratio)."""
  parts = []
  for name, c in counts.items():
    lo, hi = min(c), max(c)
    parts.append(f"{name} {lo}" + ("" if lo == hi else f"-{hi} (ratio {hi / max(lo, 1):.2f})"))
  return "Images per target class: " + ", ".join(parts) + "."


def hold_out(split: Split, per_class: int, seed: int,
             field: str = "per_class") -> tuple[Split, Split]:
  """(the rest, a held-out slice): ``per_class`` images of every class of ``split`` set aside,
  chosen by ``seed`` (the source task's validation slice, for choosing pre-training settings)."""
  held, rest = _per_class(split, [per_class, 0], np.random.default_rng(seed), "source", field)
  return rest, held


def check_split(split: Split, num_classes: int, what: str) -> None:
  """Rejects images that are not uint8 [N, H, W, C] and labels outside ``0..num_classes-1``."""
  if split.images.dtype != np.uint8 or split.images.ndim != 4:
    raise ValueError(f"{what}: images must be uint8 [N, H, W, C], got {split.images.dtype} "
                     f"{split.images.shape}.")
  if len(split) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
    raise ValueError(f"{what}: labels must lie in [0, {num_classes}), got "
                     f"[{split.labels.min()}, {split.labels.max()}].")


def image_statistics(images) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation of uint8 ``images`` in [0, 1] units (std at least
  1e-3). Sums of the integer pixel values are exact, so a dataset read from disk a chunk at a time
  gets the very statistics it would get in memory."""
  total = total_sq = 0
  count = 0
  for chunk in disk.chunks(images):
    pixels = chunk.reshape(-1, chunk.shape[-1]).astype(np.int64)
    total = total + pixels.sum(0)
    total_sq = total_sq + (pixels * pixels).sum(0)
    count += len(pixels)
  mean = total / count
  var = np.maximum(total_sq / count - mean * mean, 0.0)
  return ((mean / 255).astype(np.float32),
          np.maximum(np.sqrt(var) / 255, 1e-3).astype(np.float32))


def _check(data: TransferData) -> TransferData:
  if data.source_train is not None:
    check_split(data.source_train, data.num_source_classes, "source train")
  for name in ("target_train", "target_val", "target_test"):
    check_split(getattr(data, name), data.num_target_classes, name.replace("_", " "))
  return data


def _test_subset(test: Split, data_config, seed: int) -> Split:
  if data_config.get("target_test_per_class", 0):  # a fixed, seeded subset of the test split
    test, = _per_class(test, [data_config.target_test_per_class], np.random.default_rng(seed + 1),
                       "test", "data.target_test_per_class")
  return test


def transfer_split(splits: dict[str, Split], data_config, seed: int,
                   with_source: bool = True) -> TransferData:
  """The class split of one dataset; ``with_source=False`` leaves the source task unread."""
  source_classes = list(data_config.source_classes)
  target_classes = list(data_config.target_classes)
  if set(source_classes) & set(target_classes):
    raise ValueError(f"Source classes {source_classes} and target classes {target_classes} "
                     "overlap; the transfer split needs disjoint tasks.")
  num_labels = int(splits["train"].labels.max()) + 1
  bad = [c for c in source_classes + target_classes if not 0 <= c < num_labels]
  if bad:
    raise ValueError(f"Classes {bad} do not exist in {data_config.name!r} (labels 0..{num_labels - 1}).")
  counts = np.bincount(splits["train"].labels, minlength=num_labels)
  empty = [c for c in source_classes + target_classes if counts[c] == 0]
  if empty:
    raise DatasetError(f"Classes {empty} of {data_config.name!r} have no training images (empty "
                       "classes); choose others in data.source_classes / data.target_classes.")
  rng = np.random.default_rng(seed)
  source_train = _select(splits["train"], source_classes) if with_source else None
  target_train, target_val = _per_class(
      _select(splits["train"], target_classes),
      [data_config.target_train_per_class, data_config.target_val_per_class], rng)
  target_test = _test_subset(_select(splits["test"], target_classes), data_config, seed)
  mean, std = image_statistics(source_train.images if with_source else target_train.images)
  # The natural near-OOD set: test images of the source classes, never the target's classes.
  ood = _select(splits["test"], source_classes)
  return _check(TransferData(source_train, target_train, target_val, target_test,
                             len(source_classes), len(target_classes), mean, std, ood,
                             f"{data_config.name} test images of source classes {source_classes}"))


def target_split(splits: dict[str, Split], data_config, seed: int) -> TransferData:
  """A whole dataset as the target task: a validation slice carved from ``train`` (stratified,
  seeded): ``data.val_fraction`` of each class (at least ``data.val_min_per_class``) with every
  other image trained on; or, with ``val_fraction = 0``, ``target_val_per_class`` images per class
  and ``target_train_per_class`` of the rest (0: all). The ``test`` split as it is."""
  train, test = splits["train"], splits["test"]
  if not len(train) or not len(test):
    raise DatasetError(f"The target data has {len(train)} training and {len(test)} test images; "
                       "both must be non-empty.")
  train_classes, test_classes = int(train.labels.max()) + 1, int(test.labels.max()) + 1
  if train_classes != test_classes:
    raise DatasetError(f"The training split has {train_classes} classes (labels 0.."
                       f"{train_classes - 1}) but the test split {test_classes} (labels 0.."
                       f"{test_classes - 1}); both must label the same classes.")
  num_classes = train_classes
  counts = np.bincount(train.labels, minlength=num_classes)
  missing = np.flatnonzero(counts == 0).tolist()
  if missing:
    raise DatasetError(f"Classes {missing[:10]}{' ...' if len(missing) > 10 else ''} of 0.."
                       f"{num_classes - 1} have no training images (empty classes); labels must "
                       "be 0..C-1 with every class present.")
  rng = np.random.default_rng(seed)
  fraction = data_config.get("val_fraction", 0.0)
  if fraction > 0:
    target_val, target_train = _by_fraction(train, fraction,
                                            data_config.get("val_min_per_class", 1), rng)
  else:
    target_val, target_train = _per_class(
        train, [data_config.target_val_per_class, data_config.target_train_per_class], rng)
  test = _test_subset(test, data_config, seed)
  mean, std = image_statistics(target_train.images)
  return _check(TransferData(None, target_train, target_val, test, 0, num_classes, mean, std))


def from_arrays(config, train_images, train_labels, test_images, test_labels) -> TransferData:
  """The target task from numpy arrays (a notebook's data): images ``[N, H, W(, C)]`` uint8 or
  floats in [0, 1], integer labels; split and normalised as ``load_transfer_data`` would."""
  d = config.data
  splits = {"train": split_from_arrays(train_images, train_labels, d.stored_size, "train arrays"),
            "test": split_from_arrays(test_images, test_labels, d.stored_size, "test arrays")}
  return for_checkpoint(with_ood(target_split(splits, d, config.seed), config), config)


def for_checkpoint(data: TransferData, config) -> TransferData:
  """With ``pretrain.checkpoint`` set: the checkpoint's input statistics and RGB images."""
  if not config.pretrain.checkpoint:
    return data
  mean = np.asarray(config.pretrain.input_mean, np.float32)
  std = np.asarray(config.pretrain.input_std, np.float32)
  channels = data.image_shape[-1]
  if channels == 1 and len(mean) == 3:  # grey images into a network trained on colour
    rgb = lambda s: s if s is None else Split(disk.repeat_channels(s.images, 3), s.labels)
    data = dataclasses.replace(data, source_train=rgb(data.source_train),
                               target_train=rgb(data.target_train),
                               target_val=rgb(data.target_val), target_test=rgb(data.target_test),
                               ood=rgb(data.ood))
  elif channels != len(mean):
    raise ValueError(f"Images have {channels} channels but pretrain.input_mean has {len(mean)} "
                     "values; give one mean and std per channel the checkpoint expects.")
  return dataclasses.replace(data, mean=mean, std=std)


def load_transfer_data(config) -> TransferData:
  """The data ``config`` names (``data.target``), ready for ``pretrain`` and ``finetune``."""
  d = config.data
  target = d.get("target", "split") or "split"
  if target == "split":
    data = transfer_split(load_dataset(d), d, config.seed,
                          with_source=not config.pretrain.checkpoint)
  else:
    data = target_split(load_dataset(d, target), d, config.seed)
  return for_checkpoint(with_ood(data, config), config)


def _digests(images) -> set[bytes]:
  return {hashlib.sha1(im.tobytes()).digest() for chunk in disk.chunks(images) for im in chunk}


def with_ood(data: TransferData, config) -> TransferData:
  """The OOD set ``eval.ood`` names: 'auto' keeps the natural one (source classes' test images,
  when the data has them), 'none' drops it, a source spec (``tfds:svhn_cropped``,
  ``folder:PATH``, ``npz:PATH``) reads that dataset's test split at the target's image size.
  An OOD set that shares any image with the in-distribution test set is refused."""
  spec = config.eval.get("ood", "auto") or "auto"
  if spec == "none":
    return dataclasses.replace(data, ood=None, ood_name="")
  if spec != "auto":
    h, w, c = data.image_shape
    if h != w:
      raise ValueError(f"eval.ood={spec!r}: the target's images are {h}x{w}; an OOD set is "
                       "resized to a square size only.")
    test = load_dataset(config.data, spec)["test"]
    images = stack_images(list(test.images), h if test.images.shape[1:3] != (h, w) else 0, spec)
    if images.shape[-1] != c:
      if images.shape[-1] == 1:
        images = np.repeat(images, c, axis=-1)
      else:
        raise ValueError(f"eval.ood={spec!r} has {images.shape[-1]}-channel images; the target's "
                         f"have {c}.")
    data = dataclasses.replace(data, ood=Split(images, test.labels), ood_name=spec)
  if data.ood is not None:
    shared = _digests(data.ood.images) & _digests(data.target_test.images)
    if shared:
      raise DatasetError(
          f"The OOD set ({data.ood_name}) shares {len(shared)} image(s) with the "
          "in-distribution test set, which would make OOD AUROC meaningless; name a disjoint "
          "dataset with eval.ood, or eval.ood='none'.")
  return data
