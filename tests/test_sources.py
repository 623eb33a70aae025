"""Target data from any source: TFDS (all classes), image folders, .npz, arrays; host or device."""
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import FASHION_DIR, synthetic_transfer, tiny_config
from starsse_jax import memory, build, api, data, sources, train
from starsse_jax.sources import image_folder, tfds_source


def _whole(config, target):
  config.data.target = target
  config.pretrain.checkpoint = "unused.safetensors"  # the normalisation of an imported network
  return config


def test_tfds_target_uses_all_classes_and_reads_in_chunks():
  config = _whole(tiny_config(), "tfds:cifar10")
  config.data.val_fraction = 0.0  # the per-class counts
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 3
  with tfds.testing.mock_data(num_examples=200):
    d = data.load_transfer_data(config)
  assert d.source_train is None and d.num_target_classes == 10
  assert np.bincount(d.target_val.labels, minlength=10).tolist() == [3] * 10
  assert len(d.target_train) + len(d.target_val) == 200 and len(d.target_test) == 200
  np.testing.assert_allclose(d.mean, [0.485, 0.456, 0.406])  # ImageNet's, not the data's

  class Source:  # a random-access source that records how it is read
    def __init__(self, n):
      self.n, self.calls = n, []

    def __len__(self):
      return self.n

    def __getitems__(self, keys):
      self.calls.append(len(keys))
      return [{"k": k} for k in keys]

  src = Source(2500)
  assert [ex["k"] for ex in tfds_source.examples(src, chunk=1000)] == list(range(2500))
  assert src.calls == [1000, 1000, 500]
  assert list(tfds_source.examples(Source(0))) == []  # no empty read


def _write_folder(root, sizes, classes=("cat", "dog"), per_class=4, splits=("train", "test")):
  rng = np.random.default_rng(0)
  for split in splits:
    for c, name in enumerate(classes):
      os.makedirs(root / split / name, exist_ok=True)
      for i in range(per_class):
        h, w = sizes[(c + i) % len(sizes)]
        pixels = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_image_folder_is_decoded_once_at_a_fixed_size(tmp_path):
  _write_folder(tmp_path / "pets", [(20, 30), (24, 24)])
  cache = str(tmp_path / "cache")
  with pytest.raises(sources.DatasetError, match="different sizes.*data.stored_size"):
    image_folder.read(str(tmp_path / "pets"), 0, cache_dir=cache)
  splits = image_folder.read(str(tmp_path / "pets"), 16, cache_dir=cache)
  assert splits["train"].images.shape == (8, 16, 16, 3)
  assert splits["train"].labels.tolist() == [0] * 4 + [1] * 4
  assert len(os.listdir(cache)) == 1
  again = image_folder.read(str(tmp_path / "pets"), 16, cache_dir=cache)  # from the cache
  np.testing.assert_array_equal(again["test"].images, splits["test"].images)
  # Centre crop of the shorter-side resize: a 20x30 image keeps its middle columns.
  img = np.zeros((20, 30, 3), np.uint8)
  img[:, 12:18] = 255
  out = sources.common.fit_size(img, 10)
  assert out.shape == (10, 10, 3) and out[:, 5].min() > 200 and out[:, 0].max() < 50


def test_image_folder_errors_name_the_files(tmp_path):
  _write_folder(tmp_path / "pets", [(8, 8)])
  (tmp_path / "pets" / "train" / "dog" / "broken.jpg").write_bytes(b"not an image")
  with pytest.raises(sources.DatasetError, match=r"1 image file\(s\) cannot be decoded.*broken\.jpg \(not a readable image"):
    image_folder.read(str(tmp_path / "pets"), 0, cache_dir=str(tmp_path / "c"))
  _write_folder(tmp_path / "half", [(8, 8)], splits=("train",))
  with pytest.raises(sources.DatasetNotFoundError, match="test/CLASS/"):
    image_folder.read(str(tmp_path / "half"), 0)


def test_npz_target_and_its_errors(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "arrays.npz"
  np.savez(path, x_train=rng.integers(0, 256, (40, 6, 6)).astype(np.uint8),
           y_train=np.arange(40) % 4, x_test=rng.random((12, 6, 6)).astype(np.float32),
           y_test=np.arange(12) % 4)
  config = _whole(tiny_config(), f"npz:{path}")
  config.data.val_fraction = 0.0  # the per-class counts
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 2
  d = data.load_transfer_data(config)
  assert d.image_shape == (6, 6, 3)  # grey images become RGB for an ImageNet network
  assert len(d.target_train) == 32 and d.target_test.images.dtype == np.uint8
  config.data.target_val_per_class = 10  # each class has 10 training images
  with pytest.raises(ValueError, match=r"Class \d has 10 training image\(s\) but the config asks for 10 per class"):
    data.load_transfer_data(config)
  path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(sources.DatasetError, match=r"arrays\.npz: not a readable \.npz.*truncated"):
    data.load_transfer_data(config)
  np.savez(path, images=np.zeros((2, 4, 4), np.uint8))
  with pytest.raises(sources.DatasetError, match=r"needs arrays \('train_images'"):
    data.load_transfer_data(config)


def test_truncated_fashion_mnist_names_the_file_and_the_fix(tmp_path):
  for name in os.listdir(FASHION_DIR):
    raw = open(os.path.join(FASHION_DIR, name), "rb").read()
    (tmp_path / name).write_bytes(raw if "t10k-labels" not in name else raw[:len(raw) // 2])
  config = tiny_config()
  config.data.fashion_mnist_dir = str(tmp_path)
  with pytest.raises(sources.DatasetError,
                     match=r"t10k-labels-idx1-ubyte\.gz: cannot be read \(EOFError.*--reinstall"):
    data.load_transfer_data(config)


def test_from_arrays_accepts_float_images_and_checks_them():
  config = tiny_config()
  config.data.target_train_per_class, config.data.target_val_per_class = 0, 2
  rng = np.random.default_rng(0)
  d = data.from_arrays(config, rng.random((30, 5, 5, 3)), np.arange(30) % 3,
                       rng.random((9, 5, 5, 3)), np.arange(9) % 3)
  assert d.target_train.images.dtype == np.uint8 and d.num_target_classes == 3
  with pytest.raises(sources.DatasetError, match="one label each"):
    data.from_arrays(config, np.zeros((3, 5, 5)), np.zeros(2, int), np.zeros((1, 5, 5)),
                     np.zeros(1, int))
  with pytest.raises(sources.DatasetError, match=r"Classes \[1\] of 0..2 have no training images"):
    data.from_arrays(config, np.zeros((4, 5, 5), np.uint8), np.array([0, 0, 2, 2]),
                     np.zeros((2, 5, 5), np.uint8), np.array([0, 2]))
  with pytest.raises(sources.DatasetError, match="training split has 3 classes .* test split 2"):
    data.from_arrays(config, np.zeros((4, 5, 5), np.uint8), np.array([0, 1, 2, 2]),
                     np.zeros((2, 5, 5), np.uint8), np.array([0, 1]))


def test_host_and_device_placement_train_identically():
  d = synthetic_transfer()
  config = tiny_config("local_de", members=2)
  lrs = np.full((7, 2), 0.05, np.float32)  # 7 steps of batch 8 over 24 images: 3 epochs
  params = {}
  for placement in ("device", "host"):
    config.data.placement = placement
    model = api.models.build_model(config.model, d.num_target_classes)
    trainer = build.make_trainer(config, model, d, config.finetune)
    start = api.members.stack([trainer.init_variables(s, d.image_shape) for s in (0, 1)])
    start["opt_state"] = jax.vmap(trainer.tx.init)(start["params"])
    result = train.run_phase(trainer, start, np.array([3, 4]), d.target_train, lrs, 8, "p")
    params[placement] = result.states["params"]
  jax.tree.map(np.testing.assert_array_equal, params["device"], params["host"])


def test_fits_on_device_on_cpu_is_always_true():
  assert memory.fits_on_device(10 ** 15)


def test_float_and_integer_images_say_which_range_was_assumed(caplog):
  caplog.set_level("INFO")
  labels = np.arange(4) % 2
  unit = sources.npz_arrays.from_arrays(np.full((4, 3, 3), 0.5), labels, where="unit")
  assert unit.images.dtype == np.uint8 and (unit.images == 128).all()
  assert "unit: float images in [0.5, 0.5]: assumed the range [0, 1]" in caplog.text
  wide = sources.npz_arrays.from_arrays(np.full((4, 3, 3), 200.0), labels, where="wide")
  assert (wide.images == 200).all()
  assert "wide: float64 images in [200, 200]: assumed the range [0, 255]" in caplog.text
  ints = sources.npz_arrays.from_arrays(np.full((4, 3, 3), 7, np.int64), labels, where="ints")
  assert (ints.images == 7).all() and "ints: int64 images in [7, 7]" in caplog.text
  with pytest.raises(sources.DatasetError, match="dtype bool"):
    sources.npz_arrays.from_arrays(np.zeros((4, 3, 3), bool), labels)
  with pytest.raises(sources.DatasetError, match="images have different sizes"):
    sources.npz_arrays.from_arrays([np.zeros((3, 3)), np.zeros((4, 4))], np.arange(2))
  mixed = sources.npz_arrays.from_arrays([np.zeros((3, 3)), np.zeros((4, 4))], np.arange(2),
                                         stored_size=2)
  assert mixed.images.shape == (2, 2, 2, 1)
