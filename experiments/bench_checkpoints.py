"""Bytes written per progress save, measured for one sweep seed and projected for a larger sweep.

  python experiments/bench_checkpoints.py [--config=sweep] [--project=sweep_cifar100_resnet50] \
      [--repo=BEFORE --repo=AFTER]

Measured: one seed of ``--config``'s sweep plan (every phase, every member, the model and image
size of the config) is trained on the embedded data with the steps cut to a few per phase and a
progress save every ``--every`` steps; the parameter shapes, and so the bytes of each save, are
those of the full sweep. After each save (and its background write) the files created or changed
under the run's checkpoint directory are summed. ``--repo`` runs another checkout's code, so the
layouts before and after a change are measured in one run on one machine.

Projected: for ``--project`` (default the CIFAR-100 ResNet-50 sweep, not run here) the bytes of
every save of one seed follow from its plan, its ``checkpoint_every_steps`` and the size of one
member's weights, BatchNorm statistics and optimizer state (``jax.eval_shape``, no compute), for
both layouts: *every member each save* (each save rewrites every finished member with its
optimizer state) and *finished members once* (a save holds the members still training; each
finished member is written once without optimizer state).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(directory: str) -> dict[str, tuple[int, int]]:
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      try:
        st = os.stat(path)
      except FileNotFoundError:  # removed by the checkpoint manager meanwhile
        continue
      out[path] = (st.st_size, st.st_mtime_ns)
  return out


def measure(config_name: str, every: int, members_: int = 0, width: int = 0) -> list[dict]:
  """Trains one shortened sweep seed with every save measured (run in the checkout under test)."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from starsse_jax import build, configs, data as data_lib, members, models, resume, sweep  # pylint: disable=g-import-not-at-top
  config = configs.load(config_name)
  with config.unlocked():
    config.data.target_train_per_class = 10  # a few steps per phase; shapes are unchanged
    config.finetune.batch_size = 25
    config.finetune.epochs = 4.0
    config.checkpoint_every_steps = every
    config.log_every_steps = 1000
    if members_:
      config.num_members = members_
      config.pretrain.num_checkpoints = members_
    if width:
      config.model.width = width
  data = data_lib.load_transfer_data(config)
  model = models.build_model(config.model, data.num_target_classes)
  trainer = build.make_trainer(config, model, data, config.finetune)
  # Random-init source networks: the bytes of a save depend on shapes only.
  pretrained = members.stack([trainer.init_variables(s, data.image_shape)
                              for s in range(config.pretrain.num_checkpoints)])
  saves = []
  original = resume.RunCheckpointer.save

  def measured_save(self, progress, *args, **kwargs):
    before = _files(self.directory)
    start = time.perf_counter()
    original(self, progress, *args, **kwargs)
    blocking = time.perf_counter() - start
    if hasattr(self, "wait"):  # let a background write finish before counting its files
      self.wait()
    after = _files(self.directory)
    changed = sum(size for path, (size, mtime) in after.items() if before.get(path) != (size,
                                                                                        mtime))
    saves.append({"phase": progress.phase, "step": progress.step, "bytes": changed,
                  "finished": 0 if progress.ensemble is None else
                  members.num_members(progress.ensemble), "blocking_s": blocking})

  resume.RunCheckpointer.save = measured_save
  with tempfile.TemporaryDirectory() as workdir:
    sweep.train_seed(config, data, pretrained, 0, workdir)
  return saves


def _run_measure(repo: str, config_name: str, every: int, members_: int, width: int) -> list[dict]:
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu")
  code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
          f"import bench_checkpoints as b; print('RESULT', json.dumps(b.measure({config_name!r}, "
          f"{every}, {members_}, {width})))")
  run = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                       text=True, check=False)
  if run.returncode:
    raise RuntimeError(f"{repo}: {run.stderr[-3000:]}")
  line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def project(config_name: str) -> dict:
  """Bytes per save and per seed of ``config_name``'s sweep under both layouts (no training)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from starsse_jax import configs, methods, models, optimizers  # pylint: disable=g-import-not-at-top
  config = configs.load(config_name)
  d, ft = config.data, config.finetune
  classes = len(d.target_classes)
  size = d.image_size or 32
  model = models.build_model(config.model, classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False))
  tx = optimizers.make(optimizers.OptimizerConfig.from_config(ft))
  opt = jax.eval_shape(tx.init, shapes["params"])
  nbytes = lambda tree: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))
  variables, opt_bytes = nbytes(shapes), nbytes(opt)
  steps_per_epoch = classes * d.target_train_per_class // ft.batch_size
  budget = methods.Budget(num_members=config.num_members, steps_per_epoch=steps_per_epoch,
                          epochs=ft.epochs, lr=ft.lr)
  plan = methods.sweep_plan(budget, tuple(config.sweep.lr_ratios),
                            tuple(config.sweep.cycle_ratios)).phases
  every = config.checkpoint_every_steps
  old, new, finished = [], [], 0
  for phase in plan:
    active = phase.num_members * (variables + opt_bytes)
    saves = list(range(every, phase.num_steps, every)) if every else []
    for _ in saves:  # in-phase saves
      old.append(finished * (variables + opt_bytes) + active)
      new.append(active)
    finished += phase.num_members
    old.append(finished * (variables + opt_bytes))  # the phase-boundary save
    new.append(phase.num_members * variables)  # its members, written once
  return {"config": config_name, "members": finished, "saves": len(old),
          "member_variables_bytes": variables, "member_optimizer_bytes": opt_bytes,
          "old_max": max(old), "old_total": sum(old), "new_max": max(new), "new_total": sum(new)}


def _gb(n: float) -> str:
  return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="sweep")
  parser.add_argument("--every", type=int, default=2, help="progress save every N steps")
  parser.add_argument("--project", default="sweep_cifar100_resnet50")
  parser.add_argument("--members", type=int, default=0, help="K (0: the config's)")
  parser.add_argument("--width", type=int, default=0, help="network width (0: the config's)")
  parser.add_argument("--repo", action="append", default=None,
                      help="checkouts to measure (default: this one)")
  args = parser.parse_args()
  print(f"## Measured: one seed of --config={args.config}, a save every {args.every} steps\n")
  print("| checkout | saves | finished members at the last save | bytes per save: first / "
        "largest / last | total | training blocked per save, median s: in a phase / at its end |"
        "\n|---|---|---|---|---|---|")
  for repo in args.repo or [REPO]:
    saves = _run_measure(os.path.abspath(repo), args.config, args.every, args.members,
                         args.width)
    sizes = [s["bytes"] for s in saves]
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
    inside = median([s["blocking_s"] for s in saves if s["step"]])
    boundary = median([s["blocking_s"] for s in saves if not s["step"]])
    print(f"| {repo} | {len(saves)} | {saves[-1]['finished']} | {_gb(sizes[0])} / "
          f"{_gb(max(sizes))} / {_gb(sizes[-1])} | {_gb(sum(sizes))} | {inside:.3f} / "
          f"{boundary:.3f} |",
          flush=True)
  p = project(args.project)
  print(f"\n## Projected: one seed of --config={p['config']} ({p['members']} members, "
        f"{p['saves']} saves; per member {_gb(p['member_variables_bytes'])} of weights and "
        f"statistics, {_gb(p['member_optimizer_bytes'])} of optimizer state)\n")
  print("| layout | largest save | total per seed |\n|---|---|---|")
  print(f"| every member each save | {_gb(p['old_max'])} | {_gb(p['old_total'])} |")
  print(f"| finished members once | {_gb(p['new_max'])} | {_gb(p['new_total'])} |")


if __name__ == "__main__":
  main()
