"""A fuzz list of bad inputs through the command line: files, data and config values.

Each must exit with status 2 and one line on stderr that names the input and the fix, with no
traceback; leave the existing checkpoints of the workdir untouched; and write no results.json.
``STARSSE_JAX_TRACEBACK=1`` shows the traceback instead.
"""
import concurrent.futures
import contextlib
import gzip
import hashlib
import os
import struct
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import torch_format as tf
from conftest import FASHION_DIR, REPO
from starsse_jax import checkpoint, models, weights

TINY = ["--config=configs/tiny.py", "--config.model.width=4",
        "--config.data.target_train_per_class=10", "--config.data.target_val_per_class=4"]


def _npz(path, **override):
  rng = np.random.default_rng(0)
  arrays = {"train_images": rng.integers(0, 256, (40, 8, 8), np.uint8),
            "train_labels": np.arange(40) % 4,
            "test_images": rng.integers(0, 256, (12, 8, 8), np.uint8),
            "test_labels": np.arange(12) % 4}
  arrays.update(override)
  np.savez(path, **arrays)
  return f"npz:{path}"


def _folder(root, bad_name=None, bad_bytes=b""):
  for split in ("train", "test"):
    for c in ("cat", "dog"):
      os.makedirs(os.path.join(root, split, c))
      for i in range(8):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(
            os.path.join(root, split, c, f"{i}.png"))
  if bad_name:
    with open(os.path.join(root, "train", "dog", bad_name), "wb") as f:
      f.write(bad_bytes)
  return f"folder:{root}"


def _resnet_file(path, width):
  model = models.build_model(ml_collections.ConfigDict(dict(
      name="resnet_small", stage_sizes=(1,), width=width, dtype="float32", bn_momentum=0.9,
      stem="cifar", dropout_rate=0.0, block_dropout_rate=0.0)), 5)
  variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), np.zeros((1, 8, 8, 1)),
                                                  train=False))
  weights.export(variables, path)
  return path


def _cases(d):
  """[(name, command-line arguments, text the error line must contain)]."""
  png = open(os.path.join(REPO, "tests", "test_bad_inputs.py"), "rb").read()[:40]  # not a PNG
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(os.path.join(d, "whole.png"))
  truncated_png = open(os.path.join(d, "whole.png"), "rb").read()[:60]
  big_png = open(os.path.join(d, "whole.png"), "rb").read()  # 64x64 among 8x8 images
  fmnist = os.path.join(d, "fmnist_truncated")
  os.makedirs(fmnist)
  for name in os.listdir(FASHION_DIR):
    os.symlink(os.path.join(FASHION_DIR, name), os.path.join(fmnist, name))
  os.unlink(os.path.join(fmnist, "train-labels-idx1-ubyte.gz"))
  with gzip.open(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz")) as f:
    labels = f.read()
  with gzip.open(os.path.join(fmnist, "train-labels-idx1-ubyte.gz"), "wb") as f:
    f.write(labels[:5000])
  marker = os.path.join(d, "payload-ran")
  tf.write_legacy(os.path.join(d, "evil.pth"), {"state_dict": {
      "conv1.weight": tf.Tensor(np.ones((4, 1, 3, 3), np.float32))},
      "x": tf.Payload("os", "system", f"touch {marker}")})
  tf.write_legacy(os.path.join(d, "evil_top.pth"), tf.Payload("os", "system", f"touch {marker}"))
  with open(os.path.join(d, "lying.safetensors"), "wb") as f:
    header = (b'{"conv1.weight":{"dtype":"F32","shape":[100000,100000,7,7],'
              b'"data_offsets":[0,16]}}')
    f.write(struct.pack("<Q", len(header)) + header + b"\0" * 16)
  np.savez(os.path.join(d, "objects.npz"), w=np.array([None], dtype=object))
  wrong = _resnet_file(os.path.join(d, "width8.safetensors"), 8)
  raw = open(_resnet_file(os.path.join(d, "width4.safetensors"), 4), "rb").read()
  open(os.path.join(d, "cut.safetensors"), "wb").write(raw[:len(raw) // 2])
  open(os.path.join(d, "a_file"), "w").close()
  np.savez(os.path.join(d, "keys.npz"), x=np.zeros(3))
  weights_file = os.path.join(d, "width4.safetensors")
  whole = lambda target: [f"--config.data.target={target}", "--config.data.target_train_per_class=0",
                          f"--config.pretrain.checkpoint={weights_file}"]
  ckpt = lambda path: [f"--config.pretrain.checkpoint={path}", "--config.data.target=fashion_mnist",
                       "--config.data.target_train_per_class=0"]
  p = lambda name: os.path.join(d, name)
  return [
      # Config values and flags.
      ("unknown method", ["--config.method=bagging"], "method='bagging' is unknown; choose one of"),
      ("no members", ["--config.num_members=0"], "num_members=0; an ensemble needs at least 1"),
      ("zero cycle", ["--config.finetune.cycle_ratio=0"], "finetune.cycle_ratio=0.0 must be positive"),
      ("negative lr", ["--config.finetune.lr=-1"], "finetune.lr=-1.0 must be positive"),
      ("momentum 1.5", ["--config.finetune.momentum=1.5"], "finetune.momentum=1.5 must lie in"),
      ("unknown model", ["--config.model.name=resnet7"], "model.name='resnet7' is unknown"),
      ("bad dtype", ["--config.model.dtype=float8"], "model.dtype='float8'; use 'float32'"),
      ("field typo", ["--config.finetune.lr_ration=3"],
       '--config.finetune.lr_ration=3: the config has no field \'lr_ration\'. Did you mean '
       '"lr_ratio"'),
      ("not a number", ["--config.finetune.lr=abc"], "could not convert string to float: 'abc'"),
      ("unknown flag", ["--workdri=x"], "Unknown command line flag 'workdri'. Did you mean"),
      ("missing config", ["--config=configs/nonexistent.py"], "configs/nonexistent.py"),
      ("stray argument", ["train"], "unexpected arguments ['train']"),
      ("overlapping classes", ["--config.data.source_classes=(0,1,5)"], "overlap"),
      ("absent class", ["--config.data.target_classes=(5,6,42)"],
       "Classes [42] do not exist in 'fashion_mnist'"),
      ("batch too large", ["--config.finetune.batch_size=5000"],
       "finetune.batch_size=5000 is larger than the 50"),
      ("too few per class", ["--config.data.target_train_per_class=6000"],
       "has 6000 training image(s) but the config asks for 6004 per class"),
      ("unknown source", whole("hub:resnet"), "data.target='hub:resnet': unknown source 'hub'"),
      ("eval baseline", ["--config.eval.baseline=global"], "eval.baseline='global'"),
      # Data.
      ("no fashion-mnist", ["--config.data.fashion_mnist_dir=/nonexistent"],
       "apt-get install dataset-fashion-mnist"),
      ("truncated fashion-mnist", [f"--config.data.fashion_mnist_dir={fmnist}"],
       "train-labels-idx1-ubyte.gz: header says (60000,)"),
      ("tfds not prepared", whole("tfds:cifar100") + [f"--config.data.tfds_data_dir={d}"],
       f"TFDS dataset 'cifar100' is not prepared in data.tfds_data_dir='{d}'"),
      ("npz missing", whole(f"npz:{p('none.npz')}"), "No .npz file at"),
      ("npz negative labels", whole(_npz(p("neg.npz"), train_labels=np.arange(40) % 4 - 3)),
       "label(s) are negative (e.g. -3)"),
      ("npz float labels", whole(_npz(p("flt.npz"), train_labels=np.arange(40) % 4 + 0.5)),
       "labels have dtype float64; they must be integer class indices"),
      ("npz huge label", whole(_npz(p("big.npz"), train_labels=np.where(
          np.arange(40) == 3, 1 << 40, np.arange(40) % 4))), "label 1099511627776 is out of range"),
      ("npz NaN pixels", whole(_npz(p("nan.npz"), test_images=np.full((12, 8, 8), np.nan))),
       "pixel value(s) are NaN or Inf (the first in image 0)"),
      ("npz Inf pixels", whole(_npz(p("inf.npz"), train_images=np.where(
          np.arange(40)[:, None, None] == 5, np.inf, np.zeros((40, 8, 8))))),
       "pixel value(s) are NaN or Inf (the first in image 5)"),
      ("npz int16 pixels", whole(_npz(p("i16.npz"), train_images=np.full((40, 8, 8), 4000,
                                                                         np.int16))),
       "images have dtype int16 with values in [4000, 4000]"),
      ("npz complex pixels", whole(_npz(p("cpx.npz"), train_images=np.zeros((40, 8, 8),
                                                                            np.complex64))),
       "images have dtype complex64"),
      ("npz class counts differ", whole(_npz(p("cls.npz"), test_labels=np.arange(12) % 6)),
       "The training split has 4 classes (labels 0..3) but the test split 6"),
      ("npz empty class", whole(_npz(p("empty.npz"), train_labels=np.where(
          np.arange(40) % 4 == 2, 3, np.arange(40) % 4))), "Classes [2] of 0..3 have no training"),
      ("npz too few per class", whole(_npz(p("few.npz"))) + [
          "--config.data.val_fraction=0", "--config.data.target_val_per_class=30"],
       "Class 0 has 10 training image(s)"),
      ("npz object arrays", whole(f"npz:{p('objects.npz')}"), "holds Python objects"),
      ("npz lengths differ", whole(_npz(p("len.npz"), train_labels=np.arange(39) % 4)),
       "with one label each; got images (40, 8, 8) and labels (39,)"),
      ("npz missing arrays", whole(f"npz:{p('keys.npz')}"),
       "needs arrays ('train_images', 'train_labels')"),
      ("folder zero-byte", whole(_folder(p("f0"), "empty.png")), "empty.png (empty file)"),
      ("folder truncated", whole(_folder(p("f1"), "cut.png", truncated_png)), "cut.png ("),
      ("folder not an image", whole(_folder(p("f2"), "notes.png", png)),
       "notes.png (not a readable image"),
      ("folder stray file", whole(_folder(p("f3"), "labels.csv", b"a,b")),
       "file(s) that are not images"),
      ("folder without test", whole(f"folder:{p('f4_missing')}"), "needs subfolders train/CLASS/"),
      ("folder mixed sizes", whole(_folder(p("f5"), "big.png", big_png)),
       "images have different sizes"),
      # Weight files.
      ("weights missing", ckpt(p("none.pth")), "none.pth': no such file"),
      ("weights malicious", ckpt(p("evil.pth")), "evil.pth: no ResNet stem"),
      ("weights malicious top", ckpt(p("evil_top.pth")), "found no state_dict"),
      ("weights lying size", ckpt(p("lying.safetensors")),
       "'conv1.weight' declares shape [100000, 100000, 7, 7]"),
      ("weights object npz", ckpt(p("objects.npz")), "holds Python objects"),
      ("weights truncated", ckpt(p("cut.safetensors")), "truncated"),
      ("weights wrong width", ckpt(wrong) + ["--config.pretrain.input_mean=(0.5,)",
                                             "--config.pretrain.input_std=(0.5,)"],
       "conv1.weight has shape (8, 1, 3, 3) in the checkpoint but the model needs (4, 1, 3, 3)"),
      ("checkpoint_dir is a file", [f"--config.pretrain.checkpoint_dir={p('a_file')}"],
       "is a file. To fine-tune from pre-trained weights in a file"),
      # The workdir.
      ("workdir is a file", [f"--workdir={p('a_file')}"], "is a file, not a directory"),
  ], marker


def _tree_digest(directory):
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(directory)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(path.encode() + open(path, "rb").read())
  return digest.hexdigest()


def _existing_workdir(path):
  """A workdir holding real checkpoints of an earlier run (the tiny model's pre-trained one)."""
  model = models.build_model(ml_collections.ConfigDict(dict(
      name="resnet_small", stage_sizes=(1,), width=4, dtype="float32", bn_momentum=0.9,
      stem="", dropout_rate=0.0, block_dropout_rate=0.0)), 5)
  variables = jax.tree.map(lambda x: np.asarray(x)[None], model.init(
      jax.random.key(0), np.zeros((1, 28, 28, 1)), train=False))
  checkpoint.save(os.path.join(path, "pretrained"), 0, variables, {"created": "earlier"})
  checkpoint.save(os.path.join(path, "checkpoints", "starsse-0123456789ab"), 7, variables,
                  {"phase": 1})
  return path


def _run(args, workdir, env=None, **kwargs):
  command = [sys.executable, "-m", "starsse_jax.main", *TINY]
  if not any(a.startswith("--workdir") for a in args):
    command.append(f"--workdir={workdir}")
  return subprocess.run(command + args, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=env or dict(os.environ), **kwargs)


def _check(run, expected, label):
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2, (label, run.returncode, run.stderr[-3000:])
  assert "Traceback" not in run.stderr, (label, run.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), (label, run.stderr[-3000:])
  assert expected in lines[0], (label, lines[0])


@pytest.mark.slow  # about a minute: one command line per bad input
def test_fuzz_list_of_bad_inputs_through_the_command_line(tmp_path):
  cases, marker = _cases(str(tmp_path))
  assert len(cases) >= 30
  workdir = _existing_workdir(str(tmp_path / "workdir"))
  before = _tree_digest(workdir)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    runs = list(pool.map(lambda case: _run(case[1], workdir), cases))
  failures = []
  for (label, _, expected), run in zip(cases, runs):
    try:
      _check(run, expected, label)
    except AssertionError as e:
      failures.append(str(e)[:1500])
  assert not failures, "\n\n".join(failures)
  assert _tree_digest(workdir) == before  # the earlier run's checkpoints untouched
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert not os.path.exists(marker)  # no payload ran


@contextlib.contextmanager
def _read_only_directory(base):
  """A directory nobody can write: a read-only tmpfs where mounting is allowed, otherwise
  permissions 0555 (an unprivileged user) or the immutable flag (root ignores permissions)."""
  path = os.path.join(base, "ro")
  os.mkdir(path)
  undo = None
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", path],
                    capture_output=True).returncode == 0:
    undo = ["umount", path]
  elif os.geteuid() != 0:
    os.chmod(path, 0o555)
  elif subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0:
    undo = ["chattr", "-i", path]
  else:
    pytest.fail("cannot make a read-only directory here (no mount, no chattr)")
  try:
    yield path
  finally:
    if undo:
      subprocess.run(undo, check=True)


def test_read_only_workdir_is_one_line(tmp_path):
  with _read_only_directory(str(tmp_path)) as readonly:
    with pytest.raises(OSError):  # the directory really is read-only
      open(os.path.join(readonly, "probe"), "w").close()
    run = _run([f"--workdir={readonly}/run"], None)
    _check(run, f"Workdir '{readonly}/run' is not writable (", "read-only")
    assert os.listdir(readonly) == []


def test_traceback_on_request(tmp_path):
  run = _run(["--config.method=bagging"], str(tmp_path),
             dict(os.environ, STARSSE_JAX_TRACEBACK="1"))
  assert run.returncode != 0 and "Traceback" in run.stderr
  assert "method='bagging' is unknown" in run.stderr.strip().splitlines()[-1]
