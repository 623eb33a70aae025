"""Nothing lost: a SIGTERM saves and resumes exactly, damaged checkpoints fall back, stops during
evaluation end it at once. SIGKILL at random points, on every method: ``test_resume_methods``."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from conftest import REPO, synthetic_transfer, tiny_config
from starsse_jax import build, checkpoint, members, models, resume

ARGS = ["--config=configs/tiny.py", "--config.model.width=4", "--config.num_members=3",
        "--config.data.target_train_per_class=10", "--config.data.target_val_per_class=4",
        "--config.checkpoint_every_steps=2", "--config.log_every_steps=2",
        "--config.finetune.epochs=4",
        # Resuming is about training; evaluation adds only seconds per run, and there are six runs.
        "--config.eval.soups=False", "--config.eval.ood=none"]


def _command(workdir):
  return [sys.executable, "-m", "starsse_jax.main", f"--workdir={workdir}", *ARGS]


def _run(workdir):
  run = subprocess.run(_command(workdir), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir)
  return workdir


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resumes(reference, tmp_path):
  log_path = tmp_path / "run.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(_command(tmp_path), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while "'star_branches': members" not in log_path.read_text():
      assert proc.poll() is None, log_path.read_text()[-3000:]
      assert time.time() < deadline
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
  text = log_path.read_text()
  assert "Received SIGTERM" in text and "progress saved. Rerun the same command to resume." in text
  again = _run(tmp_path)
  assert "Resuming from" in again.stderr
  assert (tmp_path / "results.json").read_text() == (reference / "results.json").read_text()


def _template(width):
  config = tiny_config()
  config.model.width = width
  data = synthetic_transfer()
  model = models.build_model(config.model, 3)
  trainer = build.make_trainer(config, model, data, config.finetune)
  v = trainer.init_variables(0, data.image_shape)
  return {**v, "opt_state": trainer.tx.init(v["params"])}


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  template = _template(4)
  stacked = members.stack([template, template])
  ck = resume.RunCheckpointer(str(tmp_path / "ck"), template)
  ck.save(resume.Progress(0, 2, None, stacked, [[{"step": 2}]]))
  changed = jax.tree.map(lambda x: x + 1, stacked)
  ck.save(resume.Progress(0, 4, None, changed, [[{"step": 4}]]))
  latest = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert latest.step == 4
  # Truncate every data file of the latest checkpoint.
  for path in glob.glob(str(tmp_path / "ck" / str(4) / "**" / "*"), recursive=True):
    if os.path.isfile(path) and "metadata" not in os.path.basename(path):
      open(path, "w").close()
  progress = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert progress.step == 2 and progress.histories == [[{"step": 2}]]
  jax.tree.map(np.testing.assert_array_equal, progress.states, stacked)


def test_restore_into_a_different_model_names_the_leaf(tmp_path):
  small = _template(4)
  resume.RunCheckpointer(str(tmp_path / "ck"), small).save(
      resume.Progress(1, 0, members.stack([small]), None, [[]]))
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r"float32\[.*4\] in the checkpoint"):
    resume.RunCheckpointer(str(tmp_path / "ck"), _template(6)).restore()


def test_fingerprint_ignores_logging_but_not_training():
  base = tiny_config().to_dict()
  same = dict(base, log_every_steps=7, checkpoint_every_steps=3)
  assert resume.fingerprint(base) == resume.fingerprint(same)
  other = tiny_config()
  other.finetune.lr = 0.5
  assert resume.fingerprint(base) != resume.fingerprint(other.to_dict())


def test_a_stop_during_immediate_work_raises_at_once():
  """Evaluation saves nothing and is redone on a rerun: a signal ends it without waiting for a
  training step; outside ``immediate`` the signal only sets the flag."""
  with resume.StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM"  # deferred: training checks it
    with pytest.raises(resume.Interrupted, match="Stopped before evaluating"):
      with stop.immediate("evaluating"):
        pytest.fail("entered although a stop was already requested")
  with resume.StopRequest() as stop:
    with pytest.raises(resume.Interrupted, match="Received SIGTERM while evaluating"):
      with stop.immediate("evaluating"):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes of this loop
          time.sleep(0.001)
        pytest.fail("the signal did not interrupt the work")


@pytest.mark.slow  # trains a reduced sweep seed
def test_sweep_stopped_after_training_a_seed_does_not_evaluate_it(tmp_path, monkeypatch):
  from starsse_jax import sweep  # pylint: disable=g-import-not-at-top
  from test_sweep import _tiny_sweep_config  # pylint: disable=g-import-not-at-top
  config = _tiny_sweep_config()
  stop = resume.StopRequest()
  train_seed = sweep.train_seed

  def train_then_stop(*args, **kwargs):
    out = train_seed(*args, **kwargs)
    stop.requested = True  # SIGTERM lands while the seed's last step runs
    return out

  monkeypatch.setattr(sweep, "train_seed", train_then_stop)
  monkeypatch.setattr(sweep, "evaluate_seed", lambda *a, **k: pytest.fail("evaluated"))
  with pytest.raises(resume.Interrupted, match="Stopped before evaluating seed 0"):
    sweep.run_sweep(config, str(tmp_path), data=synthetic_transfer(), stop=stop)


def _bytes(directory):
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory)
             for f in files)


def test_progress_saves_do_not_grow_with_finished_members(tmp_path, monkeypatch):
  """Finished members are written once, without optimizer state; a progress save holds only the
  members still training, so its size does not depend on how many have finished."""
  template = _template(32)  # members large enough that orbax's own files are small beside them
  active = members.stack([template, template])
  written = []
  save = checkpoint.save
  monkeypatch.setattr(checkpoint, "save", lambda d, *a: (written.append(d), save(d, *a))[1])
  with resume.RunCheckpointer(str(tmp_path / "ck"), template) as ck:
    ck.save(resume.Progress(1, 2, members.stack([template]), active, [[], []], [0], [1, 2]),
            block=False)
    ck.wait()
    assert len(written) == 1
    many = members.stack([template] * 6)
    ck.save(resume.Progress(2, 2, many, active, [[], [], []], [0, 1, 2, 3, 4, 5], [6, 7]))
  assert len(written) == 6  # member 0 was not written again
  few = _bytes(tmp_path / "ck" / str(10 ** 9 + 2))
  more = _bytes(tmp_path / "ck" / str(2 * 10 ** 9 + 2))
  one_member = sum(np.asarray(x).nbytes for x in jax.tree.leaves(
      {"params": template["params"], "batch_stats": template["batch_stats"]}))
  assert abs(more - few) < one_member / 4, (few, more, one_member)
  assert not glob.glob(str(tmp_path / "ck" / "*" / "**" / "opt_state*"), recursive=True)
  progress = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert progress.ensemble_ids == [0, 1, 2, 3, 4, 5] and progress.alive == [6, 7]
  jax.tree.map(np.testing.assert_array_equal, progress.ensemble,
               {"params": many["params"], "batch_stats": many["batch_stats"]})
  jax.tree.map(np.testing.assert_array_equal, progress.states, active)


def test_a_missing_member_file_falls_back_to_the_previous_progress(tmp_path):
  template = _template(4)
  active = members.stack([template])
  with resume.RunCheckpointer(str(tmp_path / "ck"), template) as ck:
    ck.save(resume.Progress(0, 2, None, active, [[]], [], [0]))
    ck.save(resume.Progress(1, 0, active, None, [[]], [0]))
  shutil.rmtree(tmp_path / "ck" / "members" / "00000")
  progress = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert (progress.phase, progress.step) == (0, 2)


def test_a_background_save_keeps_the_history_as_it_was_when_saved(tmp_path, monkeypatch):
  """The loop appends to its history while the writer runs; the progress must hold the rows of
  the saved step only (a resumed run otherwise logged rows twice)."""
  template = _template(4)
  release = threading.Event()
  save_step = checkpoint.save_step

  def held(*args, **kwargs):  # the writer starts only once the loop has moved on
    release.wait(timeout=60)
    return save_step(*args, **kwargs)

  monkeypatch.setattr(checkpoint, "save_step", held)
  history = [{"step": 2}]
  with resume.RunCheckpointer(str(tmp_path / "ck"), template) as ck:
    ck.save(resume.Progress(0, 2, None, members.stack([template]), [history], [], [0]),
            block=False)
    history.append({"step": 4})
    release.set()
  progress = resume.RunCheckpointer(str(tmp_path / "ck"), template).restore()
  assert progress.step == 2 and progress.histories == [[{"step": 2}]]
