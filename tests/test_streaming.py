"""Data above ``data.host_memory_mb`` stays on disk (memory-mapped .npy) and trains as in memory."""
import gzip
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import FASHION_DIR, tiny_config
from starsse_jax import api, configlib, data, sources
from starsse_jax.sources import disk, fashion_mnist, image_folder, tfds_source


def _disk_array(tmp_path, array):
  path = str(tmp_path / "a.npy")
  disk.write(path, array.shape, lambda a, b: array[a:b])
  return disk.open_images(path, array.shape, "test images")


def test_disk_images_index_like_the_array_they_hold(tmp_path):
  rng = np.random.default_rng(0)
  array = rng.integers(0, 256, (50, 3, 2, 1), dtype=np.uint8)
  images = _disk_array(tmp_path, array)
  assert images.shape == array.shape and images.nbytes == array.nbytes and len(images) == 50
  idx = rng.permutation(50)[:7]
  mask = array[:, 0, 0, 0] > 128
  np.testing.assert_array_equal(images[idx], array[idx])
  np.testing.assert_array_equal(images[10:20], array[10:20])
  np.testing.assert_array_equal(images[mask], array[mask])
  np.testing.assert_array_equal(images[3], array[3])
  view = images.take(idx).take(np.array([6, 0, 2]))  # views of views: nothing read yet
  np.testing.assert_array_equal(view[:], array[idx][[6, 0, 2]])
  rgb = images.take(mask).repeat_channels(3)
  np.testing.assert_array_equal(rgb[1:4], np.repeat(array[mask], 3, axis=-1)[1:4])
  np.testing.assert_array_equal(np.concatenate(list(disk.chunks(images, 16))), array)
  assert data.image_statistics(images)[0] == data.image_statistics(array)[0]
  with pytest.raises(disk.InMemoryRequired, match="raise data.host_memory_mb"):
    np.asarray(images)


def test_a_truncated_or_stale_cache_file_is_written_again(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(6, 2, 2, 1)
  path = str(tmp_path / "a.npy")
  disk.write(path, array.shape, lambda a, b: array[a:b])
  assert disk.open_images(path, (7, 2, 2, 1), "x") is None  # written for another size
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 5)
  assert disk.open_images(path, array.shape, "x") is None  # truncated
  # A failure while writing leaves nothing under the final name.
  with pytest.raises(RuntimeError):
    disk.write(str(tmp_path / "b.npy"), array.shape,
               lambda a, b: (_ for _ in ()).throw(RuntimeError("disk gone")))
  assert os.listdir(tmp_path) == ["a.npy"]


@pytest.mark.slow
def test_a_dataset_above_the_memory_cap_trains_exactly_as_in_memory(tmp_path, monkeypatch):
  """The embedded Fashion-MNIST (47 MB of training images) under a 1 MB cap: decompressed once
  into the cache, split, pre-trained on, fine-tuned on and evaluated a batch at a time; every
  parameter and every reported number equals the in-memory run's."""
  largest = []
  read = disk.DiskImages.__getitem__

  def recording(self, key):
    out = read(self, key)
    largest.append(len(out) if out.ndim == 4 else 1)
    return out

  results = {}
  for cap in (0, 1):
    config = tiny_config("starsse", members=3)
    config.pretrain.epochs = 0.05  # 94 steps over the 30,000 source images
    config.data.host_memory_mb = cap
    config.data.cache_dir = str(tmp_path / "cache")
    if cap:
      monkeypatch.setattr(disk.DiskImages, "__getitem__", recording)
      d = data.load_transfer_data(config)
      assert all(isinstance(s.images, disk.DiskImages) for s in (
          d.source_train, d.target_train, d.target_test, d.ood))
      assert sorted(os.listdir(tmp_path / "cache")) == sorted(
          f for f in os.listdir(tmp_path / "cache") if f.startswith("idx-"))
    api.run(config, str(tmp_path / f"run{cap}"))
    with open(tmp_path / f"run{cap}" / "results.json") as f:
      results[cap] = json.load(f)
  for r in results.values():
    r.pop("timing", None)
    r.pop("config", None)
  assert results[1] == results[0]
  # Never more than a chunk of rows at a time, of the 60,000 training images.
  assert largest and max(largest) <= disk.CHUNK_ROWS


def test_streamed_sources_read_what_the_in_memory_sources_read(tmp_path):
  from test_sources import _write_folder  # pylint: disable=g-import-not-at-top
  _write_folder(tmp_path / "pets", [(20, 30), (24, 24)], per_class=5)
  whole = image_folder.read(str(tmp_path / "pets"), 16, cache_dir=str(tmp_path / "c1"))
  streamed = image_folder.read(str(tmp_path / "pets"), 16, cache_dir=str(tmp_path / "c2"),
                               host_memory_mb=1e-4)
  again = image_folder.read(str(tmp_path / "pets"), 16, cache_dir=str(tmp_path / "c2"),
                            host_memory_mb=1e-4)  # from the cache
  for s in ("train", "test"):
    assert isinstance(streamed[s].images, disk.DiskImages)
    np.testing.assert_array_equal(streamed[s].images[:], whole[s].images)
    np.testing.assert_array_equal(again[s].images[:], whole[s].images)
    np.testing.assert_array_equal(streamed[s].labels, whole[s].labels)
  with tfds.testing.mock_data(num_examples=30):
    whole = tfds_source.read("cifar10")
    streamed = tfds_source.read("cifar10", host_memory_mb=1e-3, cache_dir=str(tmp_path / "c3"))
  assert isinstance(streamed["train"].images, disk.DiskImages)
  np.testing.assert_array_equal(streamed["train"].images[:], whole["train"].images)
  np.testing.assert_array_equal(streamed["train"].labels, whole["train"].labels)


def test_streaming_errors_name_the_cause(tmp_path):
  # A source that reads into memory refuses data above the cap instead of ignoring it.
  path = tmp_path / "arrays.npz"
  np.savez(path, x_train=np.zeros((40, 8, 8), np.uint8), y_train=np.arange(40) % 2,
           x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  with pytest.raises(sources.DatasetError, match="reads into memory.*stream from disk"):
    sources.read(f"npz:{path}", host_memory_mb=1e-3)
  # A truncated IDX file is named while it is streamed, and nothing is left in the cache.
  for name in fashion_mnist.FILES["train"] + fashion_mnist.FILES["test"]:
    os.symlink(os.path.join(FASHION_DIR, name), tmp_path / name)
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in fashion_mnist.FILES["train"] + fashion_mnist.FILES["test"]:
    os.symlink(tmp_path / name, bad / name)
  os.remove(bad / "train-images-idx3-ubyte.gz")
  with gzip.open(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")) as f:
    head = f.read(16 + 28 * 28 * 100)
  with gzip.open(bad / "train-images-idx3-ubyte.gz", "wb") as f:
    f.write(head)
  with pytest.raises(sources.DatasetError, match="truncated or corrupt"):
    fashion_mnist.read(str(bad), host_memory_mb=1, cache_dir=str(tmp_path / "cache"))
  assert not any(f.endswith(".npy") and "tmp" in f for f in os.listdir(tmp_path / "cache"))
  # Streaming and placing every image on the device contradict each other.
  config = tiny_config()
  config.data.host_memory_mb, config.data.placement = 100, "device"
  with pytest.raises(ValueError, match="host_memory_mb.*placement='device'"):
    configlib.validate(config)
