"""A run over two processes (4 forced CPU devices each, gloo collectives), each reading only the
training rows its devices need, trains like one process with 8 devices and evaluates exactly as
it; a run whose processes are killed resumes exactly when all are restarted."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, progress_lines

pytestmark = pytest.mark.slow  # minutes: `pytest -m "not slow"` leaves it out
TESTS = os.path.join(REPO, "tests")
CLI = ["--config=configs/tiny.py", "--config.model.width=4", "--config.num_members=4",
       "--config.data.target_train_per_class=16", "--config.data.target_val_per_class=4",
       "--config.finetune.batch_size=8", "--config.checkpoint_every_steps=4",
       "--config.log_every_steps=2", "--config.finetune.epochs=2", "--config.eval.soups=False",
       "--config.eval.ood=none"]


def _env(devices):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _joining(port, process_id, num_processes=2):
  return ["--config.execution.distributed=True",
          f"--config.execution.coordinator_address=127.0.0.1:{port}",
          f"--config.execution.num_processes={num_processes}",
          f"--config.execution.process_id={process_id}",
          "--config.execution.initialization_timeout_s=60"]


class Processes:
  """Started together, always stopped: a test that fails leaves no process behind."""

  def __init__(self, commands, cwd, env, logs):
    self.logs = logs
    self.procs = []
    for command, log in zip(commands, logs):
      with open(log, "w") as f:
        self.procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=f,
                                           stderr=subprocess.STDOUT))

  def wait(self, timeout):
    deadline = time.time() + timeout
    for p in self.procs:
      p.wait(timeout=max(deadline - time.time(), 1))
    return [p.returncode for p in self.procs]

  def text(self, i):
    with open(self.logs[i]) as f:
      return f.read()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
      p.wait()


def _check(tmp_path, name, *joining):
  out = tmp_path / f"{name}.npz"
  return [sys.executable, os.path.join(TESTS, "multiprocess_check.py"), str(out), *joining], out


def test_two_processes_train_like_one_with_eight_devices(tmp_path):
  command, single = _check(tmp_path, "single")
  run = subprocess.run(command, cwd=TESTS, env=_env(8), capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  port = _free_port()
  commands = [_check(tmp_path, "multi", f"127.0.0.1:{port}", "2", str(i))[0] for i in range(2)]
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  with Processes(commands, TESTS, _env(4), logs) as procs:
    codes = procs.wait(600)
    assert codes == [0, 0], procs.text(0)[-3000:] + procs.text(1)[-3000:]
    assert "process 0 of 2 done" in procs.text(0) and "process 1 of 2 done" in procs.text(1)
    # Each process read only the rows its own devices train on: half of every step's batch.
    for i in range(2):
      read, needed = map(int, re.search(r"read (\d+) of (\d+) training rows",
                                        procs.text(i)).groups())
      assert read == needed // 2, procs.text(i)[-2000:]
  a, b = np.load(single), np.load(tmp_path / "multi.npz")
  assert sorted(a.files) == sorted(b.files) and any(f.startswith("k4_") for f in a.files)
  # K=8: one member per device, 4 per process. K=4: 4 members x 2 data shards, the data axis
  # within a process and the members axis across both (BatchNorm statistics synchronised).
  for key in a.files:
    np.testing.assert_allclose(b[key], a[key], atol=1e-4, err_msg=key)
  # Evaluation split across the processes equals one process computing it all.
  assert a["eval_probs"].shape[1] == 40 and any(f.startswith("eval_stats_") for f in a.files)
  for key in (f for f in a.files if f.startswith("eval_")):
    np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-6, err_msg=key)
  np.testing.assert_array_equal(b["eval_metrics"], a["eval_metrics"])


def _cli(workdir, *extra):
  return [sys.executable, "-m", "starsse_jax.main", f"--workdir={workdir}", *CLI, *extra]


def _results(workdir):
  """results.json without the config, which names each launch's own coordinator port."""
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  results.pop("config")
  return results


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  """The run in one process with 8 devices; its pre-trained checkpoint serves the others."""
  workdir = tmp_path_factory.mktemp("single")
  run = subprocess.run(_cli(workdir), cwd=REPO, env=_env(8), capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir


def _two_processes(workdir, single, logs, kill_after=None):
  """Runs the command line as two processes; with ``kill_after``, kills both (one, then the
  other) once process 0 has logged that many progress lines. Returns the processes' logs."""
  pre = f"--config.pretrain.checkpoint_dir={single / 'pretrained'}"
  port = _free_port()
  with Processes([_cli(workdir, pre, *_joining(port, i)) for i in range(2)], REPO, _env(4),
                 logs) as procs:
    if kill_after is not None:
      deadline = time.time() + 300
      while progress_lines(procs.text(0)) < kill_after:
        assert time.time() < deadline and procs.procs[0].poll() is None, procs.text(0)[-3000:]
        time.sleep(0.1)
      procs.procs[1].send_signal(signal.SIGKILL)
      procs.procs[0].send_signal(signal.SIGKILL)
      procs.wait(60)
    else:
      codes = procs.wait(600)
      assert codes == [0, 0], procs.text(0)[-3000:] + procs.text(1)[-3000:]
    return [procs.text(0), procs.text(1)]


@pytest.fixture(scope="module")
def together(tmp_path_factory, single):
  workdir = tmp_path_factory.mktemp("together")
  logs = _two_processes(workdir, single, [workdir / f"p{i}.log" for i in range(2)])
  return workdir, logs


def test_two_process_run_matches_one_process(single, together):
  """Only process 0 writes results.json; its numbers match the one-process 8-device run's."""
  workdir, logs = together
  assert "process 0 writes" in logs[1] and "Test metrics" in logs[0]
  ours, theirs = _results(workdir), _results(single)
  for split in ("test", "val"):
    for a, b in zip(ours[split]["members"] + [ours[split]["ensemble"]],
                    theirs[split]["members"] + [theirs[split]["ensemble"]]):
      assert abs(a["accuracy"] - b["accuracy"]) <= 2e-3 and abs(a["nll"] - b["nll"]) <= 2e-3


def test_killed_processes_resume_exactly(tmp_path, single, together):
  """Both processes killed mid-run (one, then the other) and both restarted: the run resumes
  from its checkpoints and ends with the uninterrupted two-process run's results."""
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  _two_processes(tmp_path, single, logs, kill_after=8)
  assert not (tmp_path / "results.json").exists()
  again = _two_processes(tmp_path, single, [tmp_path / f"again{i}.log" for i in range(2)])
  assert "Resuming from" in again[0] and "Resuming from" in again[1]
  assert _results(tmp_path) == _results(together[0])


def test_process_that_cannot_join_stops_with_a_message(tmp_path):
  """A process whose coordinator never appears (here: the other process was not started) stops
  after the timeout with one message naming the settings to check."""
  run = subprocess.run(
      _cli(tmp_path, *_joining(_free_port(), 1)[:-1],
           "--config.execution.initialization_timeout_s=5"),
      cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  assert "could not join a run of 2 processes" in run.stderr
  assert "execution.coordinator_address" in run.stderr


def test_too_few_processes_stop_with_a_message(tmp_path):
  """Two processes started for a run declared as three: both stop after the timeout with the
  message, instead of waiting for the third for ever."""
  port = _free_port()
  commands = [_cli(tmp_path, *_joining(port, i, num_processes=3)[:-1],
                   "--config.execution.initialization_timeout_s=5") for i in range(2)]
  with Processes(commands, REPO, _env(4), [tmp_path / f"p{i}.log" for i in range(2)]) as procs:
    assert procs.wait(120) == [2, 2]
    for i in range(2):
      assert "could not join a run of 3 processes" in procs.text(i)
