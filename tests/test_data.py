import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import FASHION_DIR, tiny_config
from starsse_jax import augment, data


def _write_idx(path, array):
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(directory, n_train=60, n_test=20, seed=0):
  r = np.random.default_rng(seed)
  for split, n in (("train", n_train), ("test", n_test)):
    images_file, labels_file = data.FASHION_MNIST_FILES[split]
    _write_idx(os.path.join(directory, images_file), r.integers(0, 256, (n, 6, 6)))
    _write_idx(os.path.join(directory, labels_file), np.arange(n) % 10)


def test_read_idx_round_trip(tmp_path):
  array = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
  _write_idx(tmp_path / "x.gz", array)
  np.testing.assert_array_equal(data.read_idx(str(tmp_path / "x.gz")), array)


def test_read_idx_reports_truncation(tmp_path):
  _write_idx(tmp_path / "x.gz", np.zeros((5, 4), np.uint8))
  raw = gzip.open(tmp_path / "x.gz").read()
  with gzip.open(tmp_path / "y.gz", "wb") as f:
    f.write(raw[:-3])
  with pytest.raises(ValueError, match="truncated or corrupt"):
    data.read_idx(str(tmp_path / "y.gz"))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data.load_fashion_mnist(str(tmp_path))


def test_real_fashion_mnist_and_transfer_split():
  splits = data.load_fashion_mnist(FASHION_DIR)
  assert splits["train"].images.shape == (60000, 28, 28, 1)
  assert splits["test"].images.shape == (10000, 28, 28, 1)
  assert splits["train"].images.dtype == np.uint8
  assert np.bincount(splits["train"].labels).tolist() == [6000] * 10
  config = tiny_config()
  config.data.target_train_per_class, config.data.target_val_per_class = 200, 100
  split = data.transfer_split(splits, config.data, seed=0)
  assert len(split.source_train) == 30000 and split.num_source_classes == 5
  assert np.bincount(split.target_train.labels).tolist() == [200] * 5
  assert np.bincount(split.target_val.labels).tolist() == [100] * 5
  assert len(split.target_test) == 5000
  # The target train and validation images are disjoint.
  train = {img.tobytes() for img in split.target_train.images}
  assert not any(img.tobytes() in train for img in split.target_val.images)
  # Target labels are remapped 5..9 -> 0..4; source keeps 0..4.
  assert split.target_test.labels.max() == 4 and split.source_train.labels.max() == 4
  assert 0.2 < float(split.mean[0]) < 0.4  # Fashion-MNIST's mean pixel is about 0.286
  # A test subset: balanced, drawn from the full test split, the same for every call.
  config.data.target_test_per_class = 40
  subset = data.transfer_split(splits, config.data, seed=0).target_test
  assert np.bincount(subset.labels).tolist() == [40] * 5
  full = {img.tobytes() for img in split.target_test.images}
  assert all(img.tobytes() in full for img in subset.images)
  again = data.transfer_split(splits, config.data, seed=0).target_test
  np.testing.assert_array_equal(subset.images, again.images)


def test_transfer_split_is_seeded_and_checks_classes(tmp_path):
  _fake_fashion(tmp_path)
  config = tiny_config()
  config.data.fashion_mnist_dir = str(tmp_path)
  config.data.target_train_per_class, config.data.target_val_per_class = 3, 2
  a = data.load_transfer_data(config)
  b = data.load_transfer_data(config)
  np.testing.assert_array_equal(a.target_train.images, b.target_train.images)
  config.data.target_train_per_class = 6
  with pytest.raises(ValueError, match=r"Class .* has 6 training image\(s\) but the config asks for 8 per class"):
    data.load_transfer_data(config)
  config.data.target_train_per_class = 3
  config.data.target_classes = (4, 5)
  with pytest.raises(ValueError, match="overlap"):
    data.load_transfer_data(config)
  config.data.target_classes = (5, 12)
  with pytest.raises(ValueError, match=r"Classes \[12\] do not exist"):
    data.load_transfer_data(config)


def test_check_split_rejects_bad_images_and_labels():
  good = data.Split(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1], np.int32))
  data.check_split(good, 2, "x")
  with pytest.raises(ValueError, match="images must be uint8"):
    data.check_split(data.Split(good.images.astype(np.float32), good.labels), 2, "x")
  with pytest.raises(ValueError, match="images must be uint8"):
    data.check_split(data.Split(good.images[..., 0], good.labels), 2, "x")
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    data.check_split(data.Split(good.images, np.array([0, 2], np.int32)), 2, "x")


def test_tfds_path_with_mock_data():
  config = tiny_config()
  config.data.name = "cifar10"
  config.data.target_train_per_class, config.data.target_val_per_class = 2, 1
  with tfds.testing.mock_data(num_examples=60):
    split = data.load_transfer_data(config)
  assert split.image_shape == (32, 32, 3)
  assert split.target_train.images.dtype == np.uint8
  assert np.bincount(split.target_train.labels, minlength=5).tolist() == [2] * 5


def test_missing_tfds_dataset_is_reported(tmp_path):
  config = tiny_config()
  config.data.name = "cifar100"
  config.data.tfds_data_dir = str(tmp_path)
  with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar100"):
    data.load_transfer_data(config)


def test_augment_crops_and_flips_within_the_padded_image():
  images = jnp.asarray(np.arange(2 * 5 * 5).reshape(2, 5, 5, 1), jnp.uint8)
  out = augment.augment(jax.random.key(0), images, padding=0, flip=True)
  for o, i in zip(np.asarray(out), np.asarray(images)):
    assert np.array_equal(o, i) or np.array_equal(o, i[:, ::-1])
  cropped = np.asarray(augment.augment(jax.random.key(1), images, padding=2, flip=False))
  assert cropped.shape == images.shape and cropped.dtype == np.uint8
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for k in range(2):  # each output is some 5x5 window of the padded image
    windows = [padded[k, a:a + 5, b:b + 5] for a in range(5) for b in range(5)]
    assert any(np.array_equal(cropped[k], w) for w in windows)


def test_random_resized_crop_boxes_fit_and_follow_scale():
  boxes = np.asarray(augment.random_resized_crop_params(jax.random.key(0), 2000, 32, 32))
  top, left, h, w = boxes.T
  assert np.all(top >= 0) and np.all(left >= 0)
  assert np.all(top + h <= 32 + 1e-4) and np.all(left + w <= 32 + 1e-4)
  area = h * w / 32 ** 2
  assert area.min() >= 0.08 * 0.99 and area.max() <= 1.0 + 1e-6
  assert 0.4 < np.median(area) < 0.6  # uniform area on [0.08, 1] (a little less where clipped)


def test_crop_and_resize_identity_and_upsampling():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (3, 8, 8, 2)), jnp.uint8)
  full = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 8.0, 8.0]), (3, 4))
  np.testing.assert_allclose(augment.crop_and_resize(images, full, 8), np.asarray(images, np.float32),
                             atol=1e-3)
  constant = jnp.full((2, 8, 8, 1), 77, jnp.uint8)
  big = augment.center_resize(constant, 224)
  assert big.shape == (2, 224, 224, 1)
  np.testing.assert_allclose(big, 77.0, atol=1e-3)
  # A box over the left half, upsampled 2x: the right edge of the output samples column ~3.75.
  ramp = jnp.broadcast_to(jnp.arange(8, dtype=jnp.float32)[None, None, :, None], (1, 8, 8, 1))
  left = augment.crop_and_resize(ramp, jnp.asarray([[0.0, 0.0, 8.0, 4.0]]), 8)
  assert float(left.max()) < 4.0 and float(left.min()) >= 0.0
  out = augment.augment(jax.random.key(1), images, padding=0, flip=True, image_size=16)
  assert out.shape == (3, 16, 16, 2) and out.dtype == jnp.float32


def test_bicubic_crops_follow_a_curve_that_bilinear_cuts():
  # A quadratic profile upsampled 4x from a box: Keys' cubic reproduces quadratics in the
  # interior, linear interpolation does not.
  x = np.arange(16, dtype=np.float32)
  image = jnp.asarray(np.broadcast_to((x ** 2)[None, :, None], (16, 16, 1))[None])
  box = jnp.asarray([[4.0, 4.0, 8.0, 8.0]])
  cubic = np.asarray(augment.crop_and_resize(image, box, 32, "bicubic"))[0, 16, 8:24, 0]
  linear = np.asarray(augment.crop_and_resize(image, box, 32, "bilinear"))[0, 16, 8:24, 0]
  centres = 4 + (np.arange(32)[8:24] + 0.5) * 8 / 32 - 0.5  # source coordinates of the samples
  truth = centres ** 2
  assert np.abs(cubic - truth).max() < 1e-3 < np.abs(linear - truth).max()
  full = jnp.asarray([[0.0, 0.0, 16.0, 16.0]])
  np.testing.assert_allclose(augment.crop_and_resize(image, full, 24, "bicubic"),
                             jax.image.resize(image, (1, 24, 24, 1), "bicubic"), rtol=1e-5,
                             atol=1e-3)
