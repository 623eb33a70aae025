"""The command line, end to end, on the real Fashion-MNIST files with the tiny config."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

TINY = ["--config=configs/tiny.py", "--config.model.width=4",
        "--config.data.target_train_per_class=10", "--config.data.target_val_per_class=4"]


def _main(*args, workdir):
  return subprocess.run([sys.executable, "-m", "starsse_jax.main", f"--workdir={workdir}", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def _main_listing_imports(*args, workdir, listing):
  """``_main``, writing the names of every module the process imported to ``listing`` at exit."""
  code = ("import atexit, json, runpy, sys\n"
          f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(sorted("
          "sys.modules))))\n"
          f"sys.argv = ['starsse_jax.main', '--workdir={workdir}', *{list(args)!r}]\n"
          "runpy.run_module('starsse_jax.main', run_name='__main__', alter_sys=True)\n")
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_starsse_end_to_end_then_reuse_pretrained(tmp_path):
  listing = tmp_path.parent / f"{tmp_path.name}-modules.json"
  run = _main_listing_imports(*TINY, workdir=tmp_path, listing=listing)
  assert run.returncode == 0, run.stderr[-3000:]
  # No TensorFlow at run time (start-up seconds, accelerator memory): not even through a writer.
  imported = json.loads(listing.read_text())
  assert "jax" in imported and not [m for m in imported if m.split(".")[0] == "tensorflow"]
  # The TensorBoard events (tensorboardX) hold the training scalars: read by TensorBoard itself.
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert "loss/member_0" in events.Tags()["scalars"]
  assert all(e.value > 0 for e in events.Scalars("loss/member_0"))
  assert "| ensemble of 3 (starsse) |" in run.stdout
  assert "| greedy soup" in run.stdout and "| uniform soup (3 members) |" in run.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["member_names"] == ["finetune[0]", "star_branches[0]", "star_branches[1]"]
  assert [p["name"] for p in results["phases"]] == ["finetune", "star_branches"]
  assert all(0 <= m["accuracy"] <= 1 for m in results["test"]["members"])
  assert "| cal. nll | ood auroc |" in run.stdout and "OOD set: fashion_mnist test images" in run.stdout
  assert results["uncertainty"]["ensemble"]["calibrated"]["temperature"] > 0
  for name in ("learning_rates.png", "ensemble_size.png", "reliability.png", "risk_coverage.png"):
    assert (tmp_path / name).stat().st_size > 1000
  page = (tmp_path / "report.html").read_text()  # one page: command, tables, plots, config
  assert "python -m starsse_jax.main --workdir=" in page and "--config=configs/tiny.py" in page
  assert page.count("data:image/png;base64,") == 4 and "<td>ensemble of 3 (starsse)</td>" in page
  assert (tmp_path / "pretrained").is_dir()

  # Second method in the same workdir reuses the pre-trained checkpoint.
  again = _main(*TINY, "--config.method=sse", workdir=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Reusing 1 pre-trained checkpoint(s)" in again.stderr
  assert "| ensemble of 3 (sse) |" in again.stdout

  # A config whose model differs from the cached checkpoint is refused before training.
  wrong = _main(*TINY[:-3], "--config.model.width=6", *TINY[2:], workdir=tmp_path)
  assert wrong.returncode != 0
  assert "CheckpointMismatchError" in wrong.stderr and "is float32[" in wrong.stderr
  assert "Phase 1/" not in wrong.stderr


@pytest.mark.parametrize("override,message", [
    ("--config.method=bagging", "method='bagging' is unknown"),
    ("--config.num_members=0", "needs at least 1 member"),
    ("--config.finetune.cycle_ratio=0", "finetune.cycle_ratio=0"),
    ("--config.data.fashion_mnist_dir=/nonexistent", "apt-get install dataset-fashion-mnist"),
    ("--config.finetune.batch_size=5000", "finetune.batch_size=5000 is larger than the 50"),
    ("--config.finetune.learning_rate=0.1", "learning_rate"),
    ("--config.data.source_classes=(0,1,5)", "overlap"),
])
def test_bad_input_fails_before_training(tmp_path, override, message):
  run = _main(*TINY, override, workdir=tmp_path)
  assert run.returncode != 0
  assert message in run.stderr, run.stderr[-2000:]
  assert "Pre-training" not in run.stderr


def test_unwritable_workdir_is_reported_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  run = _main(*TINY, workdir=blocker / "sub")
  assert run.returncode != 0
  assert "is not writable" in run.stderr and "--workdir" in run.stderr


def test_diverging_run_stops_naming_the_member(tmp_path):
  run = _main(*TINY, "--config.finetune.lr=1e30", workdir=tmp_path)
  assert run.returncode != 0
  assert "NonFiniteLossError" in run.stderr
  assert "for member 0 in phase 'finetune' at step" in run.stderr, run.stderr[-2000:]
  assert "lower lr" in run.stderr
