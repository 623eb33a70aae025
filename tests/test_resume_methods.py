"""Nothing lost, on every method and on the sweep: SIGKILL at seeded random points twice, resume,
and the outputs equal an uninterrupted run's, byte for byte (on one machine).

Kills land after a seeded random number of progress lines (every 2 steps, each followed by a
save), so where a run dies depends on its progress, not on how busy the machine is; the sleep
after the line puts the kill anywhere in the next step or save.
"""
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from conftest import REPO, progress_lines
from starsse_jax import checkpoint

# A narrower network than the shipped source networks: it pre-trains its own (a few steps).
TINY = ["--config.pretrain.checkpoint=", "--config.model.stage_sizes=(1,)",
        "--config.model.width=4",
        "--config.data.target_train_per_class=10", "--config.data.target_val_per_class=4",
        "--config.pretrain.epochs=0.05", "--config.pretrain.batch_size=64",
        "--config.finetune.epochs=4", "--config.finetune.batch_size=25",
        "--config.checkpoint_every_steps=2", "--config.log_every_steps=2",
        "--config.eval.soups=False", "--config.eval.ood=none", "--config.eval.bn_batch_size=50"]
METHODS = {  # each method's own config, shrunk; what it needs to stay tiny
    "local_de": ["--config.num_members=3",
                 "--config.finetune.epochs=12"],  # one phase: as many lines as the others
    "global_de": ["--config.num_members=3", "--config.pretrain.num_checkpoints=3"],
    "sse": ["--config.num_members=3"],
    "starsse": ["--config.num_members=3"],  # with its Local DE baseline, as configs/starsse.py
    "fge": ["--config.num_members=3", "--config.finetune.fge_cycle_epochs=2"],
    "swa": ["--config.num_members=2", "--config.finetune.swa_epochs=2",
            "--config.finetune.swa_collect_every=0.5"],
    "mc_dropout": ["--config.num_members=2", "--config.eval.mc_samples=2",
                   "--config.finetune.epochs=12"],
}
SWEEP = ["--config.num_members=2", "--config.pretrain.num_checkpoints=2",
         "--config.sweep.lr_ratios=(2.0,)", "--config.sweep.cycle_ratios=(1.0,)",
         "--config.sweep.seeds=(0,1)", "--config.sweep.basin_cycle_ratio=1.0",
         "--config.eval.basin_points=3", "--config.data.target_test_per_class=20"]


# Pre-training is the same for the methods that need one checkpoint: made by the first run of
# the module, reused by the others (Global DE and the sweep pre-train their own, and are killed
# there too).
SHARED_PRETRAINED = os.path.join(tempfile.gettempdir(),
                                 f"starsse-jax-test-pretrained-{os.getpid()}")


def _command(kind, workdir):
  if kind == "sweep":
    return [sys.executable, "projects/starsse_paper/sweep.py", "--config=configs/sweep.py",
            f"--workdir={workdir}", *TINY, *SWEEP]
  shared = [] if kind == "global_de" else [f"--config.pretrain.checkpoint_dir={SHARED_PRETRAINED}"]
  return [sys.executable, "-m", "starsse_jax.main", f"--config=configs/{kind}.py",
          f"--workdir={workdir}", *TINY, *METHODS[kind], *shared]


@pytest.fixture(scope="module", autouse=True)
def _shared_pretrained():
  yield
  shutil.rmtree(SHARED_PRETRAINED, ignore_errors=True)


def _lines(kind, text):
  """Progress lines of ``text``; for the methods that share a pre-trained checkpoint, those of
  fine-tuning only (whichever test runs first also pre-trains)."""
  if kind not in ("global_de", "sweep"):
    text = "\n".join(line for line in text.splitlines() if "pretrain step" not in line)
  return progress_lines(text)


def _run(kind, workdir):
  run = subprocess.run(_command(kind, workdir), cwd=REPO, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def _outputs(kind, workdir):
  names = ("sweep.csv", "basin.csv", "summary.md") if kind == "sweep" else ("results.json",)
  return {name: open(os.path.join(workdir, name)).read() for name in names}


def kill_twice_then_finish(kind, workdir, total_lines, seed):
  """Two SIGKILLs at seeded random progress lines, then a run to the end; returns all logs."""
  rng = random.Random(seed)
  logs, kills = [], 0
  for attempt in range(2):
    log_path = os.path.join(workdir, f"attempt{attempt}.log")
    # Each attempt resumes where the last died: a kill within the first third of the lines a
    # whole run prints always lands before the end.
    target = rng.randint(1, max(1, total_lines // 3))
    with open(log_path, "w") as log:
      proc = subprocess.Popen(_command(kind, workdir), cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
      deadline = time.time() + 600
      while proc.poll() is None and _lines(kind, open(log_path).read()) < target:
        assert time.time() < deadline, open(log_path).read()[-3000:]
        time.sleep(0.05)
      if proc.poll() is None:
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        kills += 1
      proc.wait()
    logs.append(open(log_path).read())
  final = _run(kind, workdir)
  assert kills == 2, "the run finished before it could be killed twice"
  return "".join(logs) + final.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", [*METHODS, "sweep"])
def test_sigkill_twice_then_resume_is_exact(kind, tmp_path):
  reference = tmp_path / "reference"
  reference.mkdir()
  total = _lines(kind, _run(kind, reference).stderr)
  assert total >= 6, f"{kind}: too few progress lines to kill at ({total})"
  resumed = tmp_path / "resumed"
  resumed.mkdir()
  logs = kill_twice_then_finish(kind, str(resumed), total, seed=sorted([*METHODS, "sweep"]).index(
      kind))
  assert "Resuming from" in logs or "reusing" in logs.lower()
  assert _outputs(kind, resumed) == _outputs(kind, reference)
  if kind != "sweep":  # and the final ensemble itself, array by array
    ours, theirs = _ensemble(kind, resumed), _ensemble(kind, reference)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
      np.testing.assert_array_equal(ours[key], theirs[key])


def _ensemble(kind, workdir):
  """Every finished member's arrays, from the files each member is written to once."""
  (directory,) = glob.glob(os.path.join(workdir, "checkpoints", f"{kind}-*"))
  arrays = {}
  for path in sorted(glob.glob(os.path.join(directory, "members", "*"))):
    variables, _ = checkpoint.restore(path)
    for key, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
      arrays[os.path.basename(path) + jax.tree_util.keystr(key)] = np.asarray(leaf)
  assert arrays, f"no member files under {directory}"
  return arrays
