"""The paper's configuration end to end on data shaped like CIFAR-100, from a converted ResNet-50.

  python experiments/paper_mock.py --workdir=/tmp/mock [--epochs=1] [--method=starsse]
  python experiments/paper_mock.py --workdir=/tmp/mock --config=paper/swin_cifar100  # Swin-T

1. Writes a random-init ResNet-50 as a PyTorch checkpoint: torchvision's own when torch and
   torchvision import (then the converted network's logits are compared with torchvision's, and
   timm's ``resnet50`` too when timm imports), else this library's initialisation exported.
2. Writes an .npz shaped like CIFAR-100 (50,000 + 10,000 images of 32 x 32 x 3, 100 classes; each
   class a fixed random colour pattern plus noise, so that accuracy can rise).
3. Runs ``configs/paper/supervised_cifar100.py`` on it (``data.target=npz:...``), with
   ``--epochs`` instead of 25 (``--placement=host --stored-size=256``: images kept on the host
   at SUN-397's stored size, each step's batch sent), and prints the data and import times and, per phase, seconds,
   seconds per epoch and member-img/s (the first step, compilation mostly, left out).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_mock_cifar100(path: str, n_train=50_000, n_test=10_000, seed=0) -> None:
  rng = np.random.default_rng(seed)
  patterns = rng.integers(0, 256, (100, 32, 32, 3))

  def split(n):
    labels = rng.permutation(np.arange(n) % 100)  # every class present, even for small n
    noise = rng.integers(-80, 80, (n, 32, 32, 3))
    return np.clip(patterns[labels] * 0.5 + 64 + noise, 0, 255).astype(np.uint8), labels

  x_train, y_train = split(n_train)
  x_test, y_test = split(n_test)
  np.savez(path, train_images=x_train, train_labels=y_train, test_images=x_test,
           test_labels=y_test)


def write_resnet50(path: str) -> str:
  """A random-init ResNet-50 checkpoint; returns what made it and the logit checks done."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    import jax  # pylint: disable=g-import-not-at-top
    from starsse_jax import configlib, models, weights  # pylint: disable=g-import-not-at-top
    config = configlib.base_config()
    config.model.name = "resnet50"
    variables = models.build_model(config.model, 1000).init(
        jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32), train=False)
    weights.export(jax.tree.map(np.asarray, dict(variables)), path.replace(".pth", ".npz"))
    return "this library's init (torch not importable)"
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from starsse_jax import configlib, models, weights  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  reference = torchvision.models.resnet50().eval()
  torch.save(reference.state_dict(), path)
  config = configlib.base_config()
  config.model.name = "resnet50"
  model = models.build_model(config.model, 1000)
  x = torch.randn(4, 3, 224, 224)
  notes = [f"torchvision {torchvision.__version__} (torch {torch.__version__})"]
  candidates = [("torchvision", reference, path)]
  try:
    import timm  # pylint: disable=g-import-not-at-top
    from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
    timm_model = timm.create_model("resnet50", pretrained=False).eval()
    timm_path = path.replace(".pth", "_timm.safetensors")
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, timm_path)
    candidates.append((f"timm {timm.__version__}", timm_model, timm_path))
  except ImportError:
    pass
  for what, net, file in candidates:
    with torch.no_grad():
      expected = net(x).numpy()
    variables = weights.load(file, model)
    got = np.asarray(model.apply(variables, jnp.asarray(x.permute(0, 2, 3, 1).numpy()),
                                 train=False))
    notes.append(f"{what} logits max abs diff {np.abs(got - expected).max():.2e} "
                 f"(max |logit| {np.abs(expected).max():.2f})")
  return "; ".join(notes)


def write_swin_tiny(path: str) -> str:
  """timm's random-init Swin-T saved as a state_dict (timm >= 0.9 layout)."""
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
  torch.save(model.state_dict(), path)
  return f"timm {timm.__version__} swin_tiny_patch4_window7_224 (torch {torch.__version__})"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="paper/supervised_cifar100",
                      help="paper/supervised_cifar100 (a ResNet-50) or paper/swin_cifar100 (a "
                           "random-init Swin-T written by timm, which must import)")
  parser.add_argument("--epochs", type=float, default=1.0)
  parser.add_argument("--method", default="starsse")
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--n-train", type=int, default=50_000)
  parser.add_argument("--placement", default="auto", help="data.placement: auto, device, host")
  parser.add_argument("--n-test", type=int, default=10_000)
  parser.add_argument("--memory-limit-mb", type=float, default=0,
                      help="execution.memory_limit_mb (0: what the device has)")
  parser.add_argument("--batch", type=int, default=0, help="0: the paper's 256")
  parser.add_argument("--image-size", type=int, default=0, help="0: the paper's 224")
  parser.add_argument("--stored-size", type=int, default=0,
                      help="data.stored_size: e.g. 256 to measure SUN-397-sized host batches")
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  ckpt = os.path.join(args.workdir, "resnet50.pth")
  npz = os.path.join(args.workdir, "cifar100_mock.npz")
  t = time.perf_counter()
  swin = "swin" in args.config
  if swin:
    ckpt = os.path.join(args.workdir, "swin_tiny.pth")
    made = write_swin_tiny(ckpt)
  else:
    made = write_resnet50(ckpt)
  if not os.path.exists(ckpt):
    ckpt = ckpt.replace(".pth", ".npz")
  print(f"checkpoint: {made} ({time.perf_counter() - t:.1f} s)", flush=True)
  t = time.perf_counter()
  write_mock_cifar100(npz, n_train=args.n_train, n_test=args.n_test)
  print(f"mock data written ({time.perf_counter() - t:.1f} s)", flush=True)

  from starsse_jax import api, configs, report  # pylint: disable=g-import-not-at-top
  report.quiet_cli_logging()
  config = configs.load(f"{args.config}:{args.method}")
  config.pretrain.checkpoint = ckpt
  config.data.target = f"npz:{npz}"
  # A warm-up (the Swin recipe's 10 of 102 epochs) keeps its share of the shortened run.
  config.finetune.warmup_epochs *= args.epochs / config.finetune.epochs
  config.finetune.epochs = args.epochs
  config.num_members = args.members
  config.data.placement = args.placement
  config.data.stored_size = args.stored_size
  config.eval.soups = False  # soups' BatchNorm passes are not what this measures
  config.finetune.batch_size = args.batch or config.finetune.batch_size
  config.data.image_size = args.image_size or config.data.image_size
  config.execution.memory_limit_mb = args.memory_limit_mb
  results = api.run(config, os.path.join(args.workdir, "run"))
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  if stats.get("peak_bytes_in_use"):
    print(f"device memory: peak {stats['peak_bytes_in_use'] / 2**30:.1f} GiB in use of "
          f"{stats.get('bytes_limit', 0) / 2**30:.1f} GiB", flush=True)
  timing = results["timing"]
  steps_per_epoch = ((args.n_train - 100 * config.data.target_val_per_class)
                     // config.finetune.batch_size)
  for phase in timing["phases"]:
    phase["s_per_epoch_per_member_group"] = round(
        (phase["seconds"] - phase["first_step_s"]) / max(1, round(args.epochs * steps_per_epoch) - 1)
        * steps_per_epoch, 1)
  print(json.dumps(timing, indent=1))
  print(report.table(results))


if __name__ == "__main__":
  main()
